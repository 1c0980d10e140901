"""``medfocal cv``: k-fold cross-validation of one config, fold after fold, with a durable summary.

Each fold is ``medfocal fit --config CONFIG --data.init_args.fold=k --data.init_args.num_folds=K`` (the
datamodules split k-fold by seed, stratified for classification), its checkpoints in
``<out_dir>/fold_<k>/``. After a fold, its best checkpoint is validated again and the metrics are added
to ``<out_dir>/cv_summary.json`` and ``cv_summary.csv`` (written atomically after every fold, so an
interrupted run keeps what finished; a re-run skips folds already summarised whose checkpoint exists).
The JSON also holds the mean and standard deviation of every metric over the folds.

Segmentation folds also leave their **out-of-fold predictions**: the fold's best checkpoint predicts its
validation cases (``medfocal infer``'s code, masks in the input geometry) into ``<out_dir>/oof/``, each
case once over all folds, with its ground truth linked by the same name in ``<out_dir>/oof_labels/`` (and
its region mask, e.g. DRIVE's field of view, in ``<out_dir>/oof_roi/``). Post-processing is then chosen
on cases no checkpoint trained on, as nnU-Net does::

    medfocal evaluate -p cv/oof -g cv/oof_labels --cleanup     # [--roi cv/oof_roi]

Example::

    summary = run_cv("plan.yaml", folds=5, out_dir="cv")      # then: medfocal infer -c cv/fold_*/best*.ckpt
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OOF_DIR", "OOF_LABELS_DIR", "OOF_ROI_DIR", "predict_out_of_fold", "run_cv", "summarise_folds"]

SUMMARY_JSON = "cv_summary.json"
SUMMARY_CSV = "cv_summary.csv"
OOF_DIR, OOF_LABELS_DIR, OOF_ROI_DIR = "oof", "oof_labels", "oof_roi"


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


def _link(source: Path, target: Path) -> None:
    """``target`` names ``source``: a symbolic link, else (no permission, another file system) a copy."""
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        target.symlink_to(source.resolve())
    except OSError:
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copy2(source, tmp)
        os.replace(tmp, target)


def _same_reader(source: Path, name: str) -> bool:
    """Whether ``source`` read under ``name`` gives the same mask: photos are read by their content,
    NIfTI by its suffix (a ``.nii`` named ``.nii.gz`` would be read as gzip)."""
    from medfocal.io import NIFTI_SUFFIXES, is_photo

    if is_photo(source):
        return is_photo(name)
    return any(source.name.lower().endswith(s) and name.lower().endswith(s) for s in NIFTI_SUFFIXES)


def predict_out_of_fold(
    checkpoint: str | Path,
    records: Sequence[dict[str, Any]],
    out_dir: str | Path,
    fold: int,
    roi_key: str | None = None,
) -> dict[str, Any]:
    """Predict a fold's validation ``records`` (``splits.json`` rows) with its ``checkpoint``.

    The masks go to ``<out_dir>/fold_<k>/oof/`` (infer's own folder: report, resumable) and are linked
    into ``<out_dir>/oof/``; each case's label into ``oof_labels/`` and its ``roi_key`` region mask (the
    model's ``metric_mask_key``, e.g. DRIVE's ``fov``) into ``oof_roi/`` under the prediction's name, so
    ``medfocal evaluate`` pairs them. A label that ``evaluate`` could not read under that name (another
    format than the prediction's) is left out with a warning.

    Returns:
        ``{"cases": n, "failed": [case ids]}``.
    """
    from medfocal.inference import Predictor
    from medfocal.inference.cases import Case

    out = Path(out_dir)
    work = out / f"fold_{fold}" / OOF_DIR
    work.mkdir(parents=True, exist_ok=True)
    table = out / f"fold_{fold}" / "oof_cases.csv"
    cases = []
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "image"])
        for r in records:
            images = r["image"] if isinstance(r["image"], list) else [r["image"]]
            writer.writerow([r["case"], ";".join(str(i) for i in images)])
            cases.append(Case(str(r["case"]), [Path(i) for i in images]))
    predictor = Predictor.from_checkpoint(checkpoint)
    # a re-trained fold's new checkpoint redoes its cases (infer refuses another checkpoint's folder)
    result = predictor.predict_folder(table, work, overwrite=True, num_workers=0, progress=False)
    if result.interrupted:
        raise KeyboardInterrupt
    for case_id, message in result.failures:
        warnings.warn(f"fold {fold}, out-of-fold case {case_id}: {message}", stacklevel=2)
    failed = sorted({str(c) for c, _ in result.failures})
    for sub in (OOF_DIR, OOF_LABELS_DIR):
        (out / sub).mkdir(exist_ok=True)
    for case, record in zip(cases, records):
        mask = predictor.head.output_paths(case, work, None)[0]
        if not mask.is_file():
            continue
        _link(mask, out / OOF_DIR / mask.name)
        label = Path(record["label"]) if record.get("label") else None
        if label is None:
            continue
        if not _same_reader(label, mask.name):
            warnings.warn(
                f"{label}: not linked into {out / OOF_LABELS_DIR} (evaluate pairs it with {mask.name}, "
                "which it reads as another format); convert the label to the prediction's format",
                stacklevel=2,
            )
            continue
        _link(label, out / OOF_LABELS_DIR / mask.name)
        if roi_key and record.get(roi_key) and _same_reader(Path(record[roi_key]), mask.name):
            (out / OOF_ROI_DIR).mkdir(exist_ok=True)
            _link(Path(record[roi_key]), out / OOF_ROI_DIR / mask.name)
    return {"cases": len(cases), "failed": failed}


def _run_fold(
    config: str | Path,
    fold: int,
    folds: int,
    fold_dir: Path,
    extra: Sequence[str],
    oof: bool = True,
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
    record = {
        "fold": fold,
        "best_checkpoint": best,
        "monitor": getattr(callback, "monitor", None) or "",
        "best_score": float(score) if score is not None else None,
        "metrics": metrics,
    }
    from medfocal.tasks.segmentation import SegmentationModule

    # rank 0 only under DDP (one writer per file)
    if oof and best and isinstance(cli.model, SegmentationModule) and trainer.is_global_zero:
        val = [r for r in cli.datamodule.splits_record().get("val", []) if r.get("image")]
        roi_key = getattr(cli.model, "metric_mask_key", None)
        record["out_of_fold"] = predict_out_of_fold(best, val, fold_dir.parent, fold, roi_key)
    return record


def run_cv(
    config: str | Path,
    folds: int = 5,
    out_dir: str | Path = "cv",
    only: Sequence[int] | None = None,
    extra_args: Sequence[str] = (),
    resume: bool = True,
    oof: bool = True,
) -> dict[str, Any]:
    """Train ``config`` on each fold in turn and write the per-fold validation summary.

    Args:
        config: a LightningCLI YAML (e.g. from ``medfocal plan``).
        folds: number of folds K (>= 2).
        out_dir: where ``fold_<k>/`` and the summaries go.
        only: run only these folds (e.g. one per GPU process); default all.
        extra_args: more ``fit`` arguments (``--trainer.max_epochs=50``...).
        resume: skip folds already in the summary whose best checkpoint still exists.
        oof: (segmentation) predict each fold's validation cases with its best checkpoint into
            ``<out_dir>/oof/``, labels linked into ``oof_labels/`` and region masks into ``oof_roi/``.

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
        results[fold] = _run_fold(config, fold, folds, out / f"fold_{fold}", extra_args, oof)
        summary = _write_summary(out, [results[k] for k in sorted(results)])
    if not todo or all(k in finished for k in todo):
        summary = _write_summary(out, [results[k] for k in sorted(results)])
    return summary
