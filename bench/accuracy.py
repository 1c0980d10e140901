"""Accuracy and calibration of focal-family losses against cross-entropy / Dice+CE on real data.

MedMNIST (RetinaMNIST, BreastMNIST, AdrenalMNIST3D): trains through the real code paths
(``medfocal.data.ClassificationDataModule`` on the official ``.npz`` splits, ``medfocal.nets``
ResNet-18, ``medfocal.losses``, ``medfocal.tasks.ClassificationModule`` under a Lightning ``Trainer``),
selects the epoch on validation AUC, fits a temperature on validation
(``medfocal.tasks.calibration.TemperatureScaling``) and evaluates once on the test split.
DRIVE: 4-fold cross-validation, an inner validation set for selection and a temperature fitted inside
the field of view, metrics inside the field of view. BraTS 2013: train on ``train/``, predict
``validation/`` with ``medfocal.inference.Predictor`` and score on the native grid.

Results: ``<out>/accuracy.md`` (tables, mean ± std, published figures beside them, the findings of
``<out>/accuracy_notes.md``), ``<out>/accuracy_runs.jsonl`` (one line per run, appended, so interrupted
benchmarks resume with ``--resume``) and one PNG per dataset.

Usage::

    python bench/accuracy.py --resume                          # everything (hours on a 2-core CPU)
    python bench/accuracy.py --datasets retinamnist breastmnist --losses ce focal --seeds 1
    python bench/accuracy.py --datasets drive --seeds 1 --folds 0 1
    python bench/accuracy.py --smoke --out /tmp/acc            # one tiny epoch, < 60 s
    python bench/accuracy.py --report-only --work <work dir>   # rebuild accuracy.md / PNGs from the jsonl

Data: ``$MEDFOCAL_DATA`` or ``<repo>/../shared/data``; nothing is downloaded. CPU budget: one thread per
process (``torch.set_num_threads(1)``; run two processes side by side on 2 cores), reduced-width
networks, short schedules (see ``DATASETS``, ``DRIVE_EPOCHS``, ``BRATS_EPOCHS``). The reliability
diagrams need the raw test outputs kept in ``--work`` (default: a temp dir).

Files: ``accuracy.py`` (this command line), ``accuracy_medmnist.py``, ``accuracy_drive.py``,
``accuracy_brats.py`` (one per dataset), ``accuracy_report.py`` (tables, figures, ``accuracy.md``),
``accuracy_common.py`` (paths, trainer, records). Segmentation scores come from
``medfocal.inference.evaluate``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the accuracy_*.py modules beside this script

from accuracy_brats import BRATS_LOSSES, brats_scores, run_brats
from accuracy_common import RESULTS, _quiet, data_root, load_records
from accuracy_drive import DRIVE_FOLDS, SEG_LOSSES, _cv_mean_std, _HeldOutLayout, run_drive
from accuracy_medmnist import DATASETS, DEFAULT_LOSSES, LOSSES, SWEEPS, classification_metrics, run_one
from accuracy_report import sweep_table, write_report

__all__ = [  # what tests/bench/test_accuracy_smoke.py reaches through this script
    "DRIVE_FOLDS",
    "SWEEPS",
    "_HeldOutLayout",
    "_cv_mean_std",
    "brats_scores",
    "classification_metrics",
    "main",
    "sweep_table",
]  # fmt: skip


def _summary(r: dict[str, Any]) -> str:
    if r.get("dataset") == "brats":
        return (
            f"    dice WT {r['dice_whole tumour']:.3f} TC {r['dice_tumour core']:.3f} "
            f"ET {r['dice_enhancing']:.3f} hd95 WT {r['hd95_whole tumour']:.1f} mm "
            f"ECE {r['ece_brain']:.3f} fit {r['fit_seconds']:.0f}s"
        )
    if r.get("task") == "segmentation":
        return (
            f"    dice {r['dice_vessel']:.3f} auc {r['auroc']:.3f} sens {r['sensitivity']:.3f} "
            f"hd95 {r.get('hd95_px', float('nan')):.1f}px "
            f"ECE {r['ece_before']:.3f}->{r['ece_after']:.3f} T {r['temperature']:.2f} "
            f"fit {r['fit_seconds']:.0f}s"
        )
    return (
        f"    acc {r['accuracy']:.3f} auc {r['auroc']:.3f} bal {r['balanced_accuracy']:.3f} "
        f"rare {r['recall_rarest']:.3f} ECE {r['ece_before']:.3f}->{r['ece_after']:.3f} "
        f"T {r['temperature']:.2f} fit {r['fit_seconds']:.0f}s best epoch {r['best_epoch']}"
    )


def run_sweep(
    datasets: list[str], losses: list[str], seeds: range, root: Path, work: Path, out: Path, resume: bool
) -> None:
    """Every SWEEPS configuration of ``datasets`` x ``losses`` x ``seeds``, into accuracy_sweep.jsonl."""
    import dataclasses

    sweep_file = out / "accuracy_sweep.jsonl"
    done = (
        {(r["dataset"], r["config"], r["loss"], r["seed"]) for r in load_records(sweep_file)}
        if resume
        else set()
    )
    for seed in seeds:
        for dataset in (d for d in datasets if d in SWEEPS):
            for config, (_, changes) in SWEEPS[dataset].items():
                for loss_name in losses:
                    if (dataset, config, loss_name, seed) in done:
                        continue
                    when = time.strftime("%H:%M:%S")
                    print(f"[{when}] sweep {dataset} {config} {loss_name} seed {seed} ...", flush=True)
                    spec = dataclasses.replace(DATASETS[dataset], **changes)
                    record = run_one(dataset, loss_name, seed, root, work, spec=spec, tag=config)
                    record["config"] = config
                    with sweep_file.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    print(_summary(record), flush=True)


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    every = [*DATASETS, "drive", "brats"]
    parser.add_argument("--datasets", nargs="+", default=every, choices=every)
    parser.add_argument(
        "--losses", nargs="+", default=None, choices=list(LOSSES), help="default: all five; --sweep: ce"
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--folds", type=int, nargs="+", default=None, help="DRIVE outer folds (default all 4)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the per-dataset epochs")
    parser.add_argument(
        "--smoke", action="store_true", help="one tiny epoch on BreastMNIST with 'ce' (< 60 s)"
    )
    parser.add_argument("--data", default=None, help="data root (default $MEDFOCAL_DATA or ../shared/data)")
    parser.add_argument(
        "--out", default=None, help="results folder (default bench/results; smoke: a temp dir)"
    )
    parser.add_argument("--work", default=None, help="checkpoints and raw test outputs (default: a temp dir)")
    parser.add_argument("--resume", action="store_true", help="skip runs already in accuracy_runs.jsonl")
    parser.add_argument("--report-only", action="store_true", help="only rebuild accuracy.md and the PNGs")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="run the training configurations of SWEEPS (MedMNIST) instead of the table's runs",
    )
    parser.add_argument("--notes", default="", help="markdown paragraph added to the report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet()
    if args.smoke:
        args.datasets, args.losses, args.seeds = ["breastmnist"], ["ce"], 1
    out = (
        Path(args.out)
        if args.out
        else (Path(tempfile.mkdtemp(prefix="medfocal_smoke_")) if args.smoke else RESULTS)
    )
    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / "medfocal_bench_accuracy"
    root = data_root(args.data)
    runs_file = out / "accuracy_runs.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        if not root.is_dir():
            print(f"data folder {root} not found (set MEDFOCAL_DATA or --data)", file=sys.stderr)
            return 2
        done = (
            {(r["dataset"], r["loss"], r["seed"], r.get("fold")) for r in load_records(runs_file)}
            if args.resume
            else set()
        )
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        if args.sweep:
            run_sweep(args.datasets, args.losses or ["ce"], seeds, root, work, out, args.resume)
            seeds = range(0)  # the table's runs are not repeated
        args.losses = args.losses or list(DEFAULT_LOSSES)
        for seed in seeds:  # seed-major: every dataset/loss gets one seed before any gets a second
            for dataset in args.datasets:
                folds = [f for f in range(DRIVE_FOLDS) if args.folds is None or f in args.folds]
                for fold in folds if dataset == "drive" else [None]:
                    for loss_name in args.losses:
                        if (dataset, loss_name, seed, fold) in done:
                            continue
                        if dataset == "drive" and loss_name not in SEG_LOSSES:
                            continue
                        if dataset == "brats" and loss_name not in BRATS_LOSSES:
                            continue
                        where = f" fold {fold}" if fold is not None else ""
                        print(f"[{time.strftime('%H:%M:%S')}] {dataset}{where} {loss_name} seed {seed} ...",
                              flush=True)  # fmt: skip
                        if dataset == "drive":
                            record = run_drive(loss_name, seed, root, work, args.epochs, fold or 0)
                        elif dataset == "brats":
                            record = run_brats(loss_name, seed, root, work, args.epochs)
                        else:
                            record = run_one(dataset, loss_name, seed, root, work, args.epochs, args.smoke)
                        with runs_file.open("a") as handle:
                            handle.write(json.dumps(record) + "\n")
                        print(_summary(record), flush=True)
    records = load_records(runs_file, include_smoke=args.smoke)
    report = write_report(records, out, work, args.notes)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
