"""``medfocal cv``: k-fold cross-validation of one config, fold after fold, with a durable summary.

Each fold is ``medfocal fit --config CONFIG --data.init_args.fold=k --data.init_args.num_folds=K`` (the
datamodules split k-fold by seed, stratified for classification), its checkpoints in
``<out_dir>/fold_<k>/``. After a fold, its best checkpoint is validated again and the metrics are added
to ``<out_dir>/cv_summary.json`` and ``cv_summary.csv`` (written atomically after every fold, so an
interrupted run keeps what finished; a re-run skips folds already summarised whose checkpoint exists).
The JSON also holds the mean and standard deviation of every metric over the folds.

Example::

    summary = run_cv("plan.yaml", folds=5, out_dir="cv")      # then: medfocal infer -c cv/fold_*/best*.ckpt
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_cv", "summarise_folds"]

SUMMARY_JSON = "cv_summary.json"
SUMMARY_CSV = "cv_summary.csv"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as handle:
        handle.write(text)
    os.replace(tmp, path)


def summarise_folds(folds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"folds": [...], "mean": {metric: value}, "std": {metric: value}}`` over the folds' metrics."""
    names = sorted({k for f in folds for k in f.get("metrics", {})})
    mean, std = {}, {}
    for name in names:
        values = np.asarray([f["metrics"][name] for f in folds if name in f.get("metrics", {})], dtype=float)
        mean[name] = float(np.nanmean(values)) if values.size else float("nan")
        std[name] = float(np.nanstd(values)) if values.size else float("nan")
    return {"folds": list(folds), "mean": mean, "std": std}


def _write_summary(out_dir: Path, folds: list[dict[str, Any]]) -> dict[str, Any]:
    summary = summarise_folds(folds)
    _atomic_write(out_dir / SUMMARY_JSON, json.dumps(summary, indent=2))
    names = sorted({k for f in folds for k in f["metrics"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["fold", "best_checkpoint", "monitor", "best_score", *names])
    for f in folds:
        writer.writerow(
            [f["fold"], f["best_checkpoint"], f["monitor"], f["best_score"]]
            + [f["metrics"].get(n, "") for n in names]
        )
    writer.writerow(["mean", "", "", ""] + [summary["mean"][n] for n in names])
    writer.writerow(["std", "", "", ""] + [summary["std"][n] for n in names])
    _atomic_write(out_dir / SUMMARY_CSV, buffer.getvalue())
    return summary


def _done(out_dir: Path) -> dict[int, dict[str, Any]]:
    path = out_dir / SUMMARY_JSON
    if not path.is_file():
        return {}
    folds = json.loads(path.read_text()).get("folds", [])
    return {
        int(f["fold"]): f for f in folds if not f["best_checkpoint"] or Path(f["best_checkpoint"]).is_file()
    }


def _run_fold(
    config: str | Path, fold: int, folds: int, fold_dir: Path, extra: Sequence[str]
) -> dict[str, Any]:
    from medfocal.tasks.lightning_cli import MedfocalCLI

    args = [
        "fit",
        "--config",
        str(config),
        f"--data.init_args.fold={fold}",
        f"--data.init_args.num_folds={folds}",
        f"--checkpoint.dirpath={fold_dir}",
        f"--trainer.default_root_dir={fold_dir}",
        *extra,
    ]
    cli = MedfocalCLI(args=args)
    trainer = cli.trainer
    callback = trainer.checkpoint_callback
    best = str(callback.best_model_path) if callback is not None and callback.best_model_path else ""
    results = trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=best or None, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    score = callback.best_model_score if callback is not None else None
    return {
        "fold": fold,
        "best_checkpoint": best,
        "monitor": getattr(callback, "monitor", None) or "",
        "best_score": float(score) if score is not None else None,
        "metrics": metrics,
    }


def run_cv(
    config: str | Path,
    folds: int = 5,
    out_dir: str | Path = "cv",
    only: Sequence[int] | None = None,
    extra_args: Sequence[str] = (),
    resume: bool = True,
) -> dict[str, Any]:
    """Train ``config`` on each fold in turn and write the per-fold validation summary.

    Args:
        config: a LightningCLI YAML (e.g. from ``medfocal plan``).
        folds: number of folds K (>= 2).
        out_dir: where ``fold_<k>/`` and the summaries go.
        only: run only these folds (e.g. one per GPU process); default all.
        extra_args: more ``fit`` arguments (``--trainer.max_epochs=50``...).
        resume: skip folds already in the summary whose best checkpoint still exists.

    Returns:
        the summary dict (as written to ``cv_summary.json``).

    Raises:
        FileNotFoundError: no such config. ValueError: ``folds < 2`` or a fold outside ``0..K-1``.
    """
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"{config}: config not found")
    if folds < 2:
        raise ValueError(f"folds: expected at least 2, got {folds}")
    todo = list(range(folds)) if only is None else [int(k) for k in only]
    bad = [k for k in todo if not 0 <= k < folds]
    if bad:
        raise ValueError(f"folds {bad} outside 0..{folds - 1}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finished = _done(out) if resume else {}
    results = dict(finished)
    for fold in todo:
        if fold in finished:
            continue
        results[fold] = _run_fold(config, fold, folds, out / f"fold_{fold}", extra_args)
        summary = _write_summary(out, [results[k] for k in sorted(results)])
    if not todo or all(k in finished for k in todo):
        summary = _write_summary(out, [results[k] for k in sorted(results)])
    return summary
