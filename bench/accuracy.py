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
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfocal.data.layouts import Layout

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

# Published figures: MedMNIST v2 (Yang et al., Scientific Data 10, 41 (2023)), Table 4 (test ACC / AUC),
# ResNet-18 (28) for the 2D datasets and ResNet-18 + 3D for the 3D ones.
PUBLISHED = {
    "retinamnist": {"model": "ResNet-18 (28)", "acc": 0.524, "auc": 0.717},
    "breastmnist": {"model": "ResNet-18 (28)", "acc": 0.863, "auc": 0.901},
    "adrenalmnist3d": {"model": "ResNet-18 + 3D", "acc": 0.721, "auc": 0.827},
}
PUBLISHED_SOURCE = (
    "MedMNIST v2 benchmark table (Yang et al., *MedMNIST v2 - A large-scale lightweight benchmark for 2D "
    "and 3D biomedical image classification*, Scientific Data 10:41, 2023), test ACC/AUC"
)


@dataclass(frozen=True)
class DatasetSpec:
    """How one MedMNIST file is trained here (kept small for 2 shared CPU cores)."""

    file: str
    title: str
    class_names: tuple[str, ...]
    epochs: int
    net: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    lr: float = 1e-3
    kappa: bool = False
    monitor: str = "val/auroc"  # MedMNIST v2 selects the epoch by validation AUC
    augment: str = "affine"
    ema: float | None = None  # EMA of the weights (Lightning's EMAWeightAveraging) with this decay
    optimizer: str = "adamw"  # "adamw" (weight decay 1e-4) or "adam" (none, as MedMNIST v2)
    schedule: str = "cosine"  # "cosine" or "step" (x0.1 at 50% and 75% of the epochs, as MedMNIST v2)


DATASETS: dict[str, DatasetSpec] = {
    "retinamnist": DatasetSpec(
        "medmnist/retinamnist.npz",
        "RetinaMNIST (fundus, DR grade 0-4, 28x28 RGB)",
        ("grade_0", "grade_1", "grade_2", "grade_3", "grade_4"),
        epochs=25,
        net={"widen_factor": 0.25, "conv1_t_size": 3, "no_max_pool": True},
        kappa=True,
    ),
    "breastmnist": DatasetSpec(
        "medmnist/BreastMNIST.npz",
        "BreastMNIST (ultrasound, malignant vs normal/benign, 28x28 grey)",
        ("malignant", "normal_benign"),
        epochs=30,
        net={"widen_factor": 0.25, "conv1_t_size": 3, "no_max_pool": True},
    ),
    "adrenalmnist3d": DatasetSpec(
        "medmnist/adrenalmnist3d.npz",
        "AdrenalMNIST3D (adrenal shape, normal vs hyperplasia, 28^3)",
        ("normal", "hyperplasia"),
        epochs=12,
        net={"widen_factor": 0.25, "conv1_t_size": 3, "conv1_t_stride": 2},
        batch_size=32,
        augment="flips",
    ),
}

# Training configurations tried on a dataset with cross-entropy, chosen between on VALIDATION AUC only
# (`--sweep`; records in accuracy_sweep.jsonl). name -> (label, DatasetSpec fields replaced)
SWEEPS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "breastmnist": {
        "base": ("the table's setting (width 0.25, 30 epochs)", {}),
        "ep60": ("60 epochs", {"epochs": 60}),
        "ema": ("EMA of the weights (decay 0.98)", {"ema": 0.98}),
        "ep60_ema": ("60 epochs + EMA 0.98", {"epochs": 60, "ema": 0.98}),
        "w05": (
            "width 0.5 (4x the FLOPs)",
            {"net": {"widen_factor": 0.5, "conv1_t_size": 3, "no_max_pool": True}},
        ),
        "paper": (
            "MedMNIST v2 recipe: 100 epochs, Adam, lr x0.1 at epochs 50 and 75, batch 128, no augmentation",
            {"epochs": 100, "optimizer": "adam", "schedule": "step", "batch_size": 128, "augment": "none"},
        ),
    }
}

# name -> (label, loss registry name, loss kwargs, network head, extra callback)
LOSSES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "ce": ("cross-entropy (focal, gamma 0)", "focal", {"gamma": 0.0}, "linear"),
    "focal": ("focal (gamma 2, alpha auto)", "focal", {"gamma": 2.0, "alpha": "auto"}, "linear"),
    "preset": (
        "preset: focal (gamma 2, alpha auto) + focal head",
        "focal",
        {"gamma": 2.0, "alpha": "auto"},
        "focal",
    ),
    "automated": ("automated focal (Weber et al.)", "automated_focal", {}, "linear"),
    "flsd53": ("FLSD-53 (Mukhoti et al.)", "flsd53_focal", {}, "linear"),
    "adafocal": ("AdaFocal (Ghosh et al.)", "adafocal", {}, "linear"),
}
DEFAULT_LOSSES = ("ce", "focal", "preset", "automated", "flsd53")


def _augmentations() -> dict[str, Any]:
    from medfocal.data import Augmentation

    off = dict(noise_prob=0.0, contrast_prob=0.0, intensity_prob=0.0, colour_prob=0.0)
    return {
        "flips": Augmentation(flip_prob=0.5, rot90_prob=0.0, affine_prob=0.0, **off),
        "affine": Augmentation(flip_prob=0.5, rot90_prob=0.0, affine_prob=0.5, rotate_degrees=10.0, **off),
        "none": Augmentation(flip_prob=0.0, rot90_prob=0.0, affine_prob=0.0, **off),
        "default": Augmentation(),
    }


AUGMENT_TEXT = {
    "flips": "random flips",
    "affine": "random flips + affine (rotation ±10°, scale ±10%, p 0.5)",
    "default": "medfocal's default `Augmentation()`",
    "none": "none",
}


def data_root(explicit: str | None = None) -> Path:
    """``--data``, else ``$MEDFOCAL_DATA``, else ``<repo>/../shared/data``."""
    return Path(explicit or os.environ.get("MEDFOCAL_DATA") or REPO.parent / "shared" / "data")


# ----------------------------------------------------------------------------- metrics of one run
def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, class_counts: np.ndarray, kappa: bool
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro AUROC (one-vs-rest), macro F1, recall per class and of the
    rarest training class, quadratic-weighted kappa (ordinal labels), all with scikit-learn."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        cohen_kappa_score,
        f1_score,
        recall_score,
        roc_auc_score,
    )

    n_classes = probs.shape[1]
    pred = probs.argmax(1)
    if n_classes == 2:
        auc = roc_auc_score(labels, probs[:, 1])
    else:
        auc = roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=list(range(n_classes)))
    recall = recall_score(labels, pred, average=None, labels=list(range(n_classes)), zero_division=0)
    out = {
        "accuracy": accuracy_score(labels, pred),
        "balanced_accuracy": balanced_accuracy_score(labels, pred),
        "auroc": auc,
        "f1_macro": f1_score(labels, pred, average="macro", labels=list(range(n_classes)), zero_division=0),
        "recall_per_class": recall.tolist(),
        "rarest_class": int(np.argmin(class_counts)),
        "recall_rarest": float(recall[int(np.argmin(class_counts))]),
    }
    if kappa:
        out["kappa_quadratic"] = cohen_kappa_score(labels, pred, weights="quadratic")
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in out.items()}


# ----------------------------------------------------------------------------- one training run
def _quiet() -> None:
    import logging

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_one(
    dataset: str,
    loss_name: str,
    seed: int,
    root: Path,
    work: Path,
    epochs: int | None = None,
    smoke: bool = False,
    spec: DatasetSpec | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """Train, select on validation, temperature-scale, test once; returns the run's record.

    ``spec`` replaces ``DATASETS[dataset]`` (the sweep's configurations); ``tag`` names the run folder
    apart from the table's runs.
    """
    import pytorch_lightning as pl
    import torch
    from monai.data import set_track_meta

    from medfocal import losses
    from medfocal.data import ClassificationDataModule
    from medfocal.metrics import expected_calibration_error
    from medfocal.nets import create_model
    from medfocal.tasks import ClassificationModule
    from medfocal.tasks.calibration import AdaFocalCalibration, TemperatureScaling, collect_logits, nll

    _quiet()
    torch.set_num_threads(1)
    # plain tensors in batches (no MONAI metadata tracking needed here; also a little faster)
    set_track_meta(False)
    spec = spec or DATASETS[dataset]
    label, registry_name, loss_kwargs, head = LOSSES[loss_name]
    epochs = 1 if smoke else (epochs or spec.epochs)
    pl.seed_everything(seed, workers=True, verbose=False)

    npz = root / spec.file
    if not npz.is_file():
        raise FileNotFoundError(f"{npz}: MedMNIST file not found (set MEDFOCAL_DATA or --data)")
    augmentation = _augmentations()[spec.augment]
    dm = ClassificationDataModule(
        str(npz),
        class_names=list(spec.class_names),
        augmentation=augmentation,
        batch_size=spec.batch_size,
        val_batch_size=256,
        num_workers=0,
        seed=seed,
    )
    dm.setup("fit")
    net = create_model(
        "resnet18",
        spatial_dims=dm.spatial_dims,
        in_channels=dm.in_channels,
        out_channels=dm.num_classes,
        head=head,
        activation="softmax",
        **spec.net,
    )
    loss = losses.get(registry_name, activation="softmax", **loss_kwargs)
    module = ClassificationModule(
        net,
        loss,
        activation="softmax",
        monitor=spec.monitor,
        optimizer=_optimizer(spec),
        lr_scheduler=_schedule(spec, epochs),
    )
    run_dir = work / f"{dataset}_{loss_name}_s{seed}{'_' + tag if tag else ''}"
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=run_dir, filename="best", monitor=module.monitor, mode=module.monitor_mode, save_top_k=1
    )
    scaling = TemperatureScaling()
    callbacks: list[Any] = [scaling, checkpoint]
    if loss_name == "adafocal":
        callbacks.append(AdaFocalCalibration())
    if spec.ema:  # validated, checkpointed and tested with the averaged weights
        callbacks.append(pl.callbacks.EMAWeightAveraging(decay=spec.ema))
    trainer = _cpu_trainer(
        run_dir,
        epochs,
        callbacks,
        log_every_n_steps=5,
        limit_train_batches=2 if smoke else None,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    fit_seconds = time.perf_counter() - start

    # the module now holds the best weights and the fitted temperature (TemperatureScaling)
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    logits, labels = collect_logits(module, dm.test_dataloader())
    temperature = float(module.temperature)
    probs = torch.softmax(logits.double(), 1)
    probs_t = torch.softmax(logits.double() / temperature, 1)
    counts = dm.class_counts().numpy()
    record: dict[str, Any] = {
        "dataset": dataset,
        "loss": loss_name,
        "loss_label": label,
        "seed": seed,
        "epochs": epochs,
        "best_epoch": _best_epoch(checkpoint),
        "val_score": None if checkpoint.best_model_score is None else float(checkpoint.best_model_score),
        "fit_seconds": round(fit_seconds, 1),
        "n_train": len(dm.splits["train"]),
        "n_val": len(dm.splits["val"]),
        "n_test": int(labels.numel()),
        "net": {"name": "resnet18", "head": head, **spec.net},
        "augment": spec.augment,
        "optimizer": spec.optimizer,
        "schedule": spec.schedule,
        "batch_size": spec.batch_size,
        "ema": spec.ema,
        "temperature": temperature,
        "ece_before": float(expected_calibration_error(probs, labels)),
        "ece_after": float(expected_calibration_error(probs_t, labels)),
        "nll_before": nll(logits, labels, 1.0),
        "nll_after": nll(logits, labels, temperature),
        "val_calibration": scaling.results,
        "module_test_accuracy": float(tested.get("test/accuracy", float("nan"))),
        "smoke": smoke,
        "threads": torch.get_num_threads(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record.update(classification_metrics(probs.numpy(), labels.numpy(), counts, spec.kappa))
    gamma = getattr(loss, "gamma", None)
    if isinstance(gamma, (int, float)):
        record["final_gamma"] = float(gamma)
    np.savez_compressed(run_dir / "test_outputs.npz", logits=logits.numpy(), labels=labels.numpy())
    return record


def _optimizer(spec: DatasetSpec) -> Any:
    import torch

    if spec.optimizer == "adam":
        return functools.partial(torch.optim.Adam, lr=spec.lr)
    return functools.partial(torch.optim.AdamW, lr=spec.lr, weight_decay=1e-4)


def _schedule(spec: DatasetSpec, epochs: int) -> Any:
    import torch

    if spec.schedule == "step":
        milestones = [int(0.5 * epochs), int(0.75 * epochs)]
        return functools.partial(torch.optim.lr_scheduler.MultiStepLR, milestones=milestones, gamma=0.1)
    return functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs)


def _cpu_trainer(run_dir: Path, epochs: int, callbacks: list[Any], **kwargs: Any) -> Any:
    """A quiet single-device CPU ``Trainer`` logging to ``<run_dir>/logs`` (CSV)."""
    import pytorch_lightning as pl

    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=pl.loggers.CSVLogger(run_dir, name="logs"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def _best_epoch(checkpoint: Any) -> int | None:
    import torch

    path = checkpoint.best_model_path
    if not path or not Path(path).is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=False).get("epoch", -1))


# ----------------------------------------------------------------------------- report
def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {float(np.std(values, ddof=1)):.3f}"


def load_records(path: Path, include_smoke: bool = False) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if include_smoke or not r.get("smoke")]


def sweep_table(records: list[dict[str, Any]], dataset: str) -> str | None:
    """Mean over seeds per sweep configuration; the one with the best validation AUC is marked."""
    rows = [r for r in records if r["dataset"] == dataset and r.get("config")]
    configs = [c for c in SWEEPS.get(dataset, {}) if any(r["config"] == c for r in rows)]
    if not configs:
        return None
    val = {c: float(np.mean([r["val_score"] for r in rows if r["config"] == c])) for c in configs}
    chosen = max(val, key=val.get)
    header = ["configuration (cross-entropy)", "seeds", "val AUC (selection)", "test ACC", "test AUC",
              "train s/run", "epochs (best)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in configs:
        rs = sorted((r for r in rows if r["config"] == config), key=lambda r: r["seed"])
        label = SWEEPS[dataset][config][0] + (" **(chosen on validation)**" if config == chosen else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    ",".join(str(r["seed"]) for r in rs),
                    _mean_std([r["val_score"] for r in rs]),
                    _mean_std([r["accuracy"] for r in rs]),
                    _mean_std([r["auroc"] for r in rs]),
                    f"{np.mean([r['fit_seconds'] for r in rs]):.0f}",
                    f"{rs[0]['epochs']} ({'/'.join(str(r['best_epoch']) for r in rs)})",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def dataset_table(records: list[dict[str, Any]], dataset: str) -> str:
    spec = DATASETS[dataset]
    rows = [r for r in records if r["dataset"] == dataset]
    losses_present = [name for name in LOSSES if any(r["loss"] == name for r in rows)]
    names = spec.class_names
    header = ["loss", "seeds", "ACC", "bal. ACC", "AUC (macro)", "F1 (macro)"]
    rarest = rows[0]["rarest_class"] if rows else 0
    header.append(f"recall rarest ({names[rarest]})")
    if spec.kappa:
        header.append("QW kappa")
    header += ["ECE", "ECE after TS", "T", "train s/run", "epochs (best)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in losses_present:
        rs = sorted((r for r in rows if r["loss"] == name), key=lambda r: r["seed"])
        cells = [
            LOSSES[name][0],
            ",".join(str(r["seed"]) for r in rs),
            _mean_std([r["accuracy"] for r in rs]),
            _mean_std([r["balanced_accuracy"] for r in rs]),
            _mean_std([r["auroc"] for r in rs]),
            _mean_std([r["f1_macro"] for r in rs]),
            _mean_std([r["recall_rarest"] for r in rs]),
        ]
        if spec.kappa:
            cells.append(_mean_std([r.get("kappa_quadratic") for r in rs]))
        cells += [
            _mean_std([r["ece_before"] for r in rs]),
            _mean_std([r["ece_after"] for r in rs]),
            _mean_std([r["temperature"] for r in rs]),
            f"{np.mean([r['fit_seconds'] for r in rs]):.0f}",
            f"{rs[0]['epochs']} ({'/'.join(str(r['best_epoch']) for r in rs)})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    pub = PUBLISHED.get(dataset)
    if pub:
        cells = [f"published: MedMNIST v2 {pub['model']}", "–", f"{pub['acc']:.3f}", "–", f"{pub['auc']:.3f}"]
        cells += ["–"] * (len(header) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_table(records: list[dict[str, Any]], dataset: str) -> str:
    spec = DATASETS[dataset]
    rows = [r for r in records if r["dataset"] == dataset]
    header = ["loss", *[f"recall {n}" for n in spec.class_names]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in LOSSES:
        rs = [r for r in rows if r["loss"] == name]
        if not rs:
            continue
        per = np.array([r["recall_per_class"] for r in rs])
        lines.append(
            "| "
            + " | ".join([LOSSES[name][0], *[_mean_std(list(per[:, k])) for k in range(per.shape[1])]])
            + " |"
        )
    return "\n".join(lines)


def dataset_figure(records: list[dict[str, Any]], dataset: str, work: Path, out: Path) -> Path | None:
    """Reliability diagrams (test, before temperature scaling, first seed) + per-class recall bars."""
    import torch
    from matplotlib.figure import Figure

    from medfocal.metrics import reliability_diagram

    rows = [r for r in records if r["dataset"] == dataset]
    names = [n for n in LOSSES if any(r["loss"] == n for r in rows)]
    if not names:
        return None
    fig = Figure(figsize=(3.3 * (len(names) + 1), 3.6), layout="constrained")
    axes = fig.subplots(1, len(names) + 1)
    for ax, name in zip(axes, names):
        first = min((r for r in rows if r["loss"] == name), key=lambda r: r["seed"])
        raw = work / f"{dataset}_{name}_s{first['seed']}" / "test_outputs.npz"
        if raw.is_file():
            data = np.load(raw)
            probs = torch.softmax(torch.as_tensor(data["logits"]).double(), 1)
            reliability_diagram(
                probs, torch.as_tensor(data["labels"]), ax=ax, title=f"{name} (seed {first['seed']})"
            )
        else:
            ax.set_title(f"{name}: test outputs not kept")
            ax.axis("off")
    ax = axes[-1]
    spec = DATASETS[dataset]
    width = 0.8 / len(names)
    x = np.arange(len(spec.class_names))
    for i, name in enumerate(names):
        per = np.mean([r["recall_per_class"] for r in rows if r["loss"] == name], axis=0)
        ax.bar(x + i * width, per, width=width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, spec.class_names, rotation=30, fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test recall (mean over seeds)")
    ax.legend(fontsize="x-small")
    fig.suptitle(
        f"{spec.title}: test reliability (before temperature scaling) and per-class recall", fontsize="small"
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"accuracy_{dataset}.png"
    fig.savefig(path, dpi=90)
    return path


def write_report(records: list[dict[str, Any]], out: Path, work: Path, notes: str = "") -> Path:
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in records)]
    parts = [
        "# Accuracy and calibration on real data: focal-family losses vs cross-entropy / Dice+CE",
        "",
        "Generated by `python bench/accuracy.py` (raw records: `accuracy_runs.jsonl`; the findings below "
        "come from `accuracy_notes.md`). Every run goes through the package's own code paths: the "
        "datamodules (official splits), `medfocal.nets`, `medfocal.losses`, the task modules under a "
        "Lightning `Trainer`, `TemperatureScaling` and, for BraTS, `medfocal.inference.Predictor`.",
        "",
        "MedMNIST: the epoch is selected on validation AUC (as MedMNIST v2 does), a temperature is fitted on "
        "the validation split by the `TemperatureScaling` callback, and the test split is evaluated once. "
        "Metrics (scikit-learn on the test split): ACC, balanced ACC (mean recall), macro one-vs-rest AUROC, "
        "macro F1, recall of the rarest training class, quadratic-weighted kappa (RetinaMNIST, ordinal), "
        "top-label ECE (15 equal-width bins, `medfocal.metrics`) before and after temperature scaling, the "
        "fitted T, and the wall time of `trainer.fit` (CPU, 1 thread per run, two runs side by side on a "
        "2-core machine). Values are mean ± sample std over the listed seeds.",
        "",
        f"Published figures: {PUBLISHED_SOURCE}.",
        "",
    ]
    notes_file = out / "accuracy_notes.md"
    if not notes and notes_file.is_file():
        notes = notes_file.read_text().strip()
    if notes:
        parts += [notes, ""]
    for dataset in datasets:
        spec = DATASETS[dataset]
        example = next(r for r in records if r["dataset"] == dataset)
        parts += [
            f"## {spec.title}",
            "",
            f"train/val/test = {example['n_train']}/{example['n_val']}/{example['n_test']}; network "
            f"`resnet18` {json.dumps({k: v for k, v in example['net'].items() if k != 'name'})} "
            f"(MONAI ResNet-18 at reduced width for the CPU budget), AdamW lr {spec.lr}, cosine schedule, "
            f"batch {spec.batch_size}, augmentation: {AUGMENT_TEXT[spec.augment]}.",
            "",
            dataset_table(records, dataset),
            "",
            "Per-class test recall:",
            "",
            per_class_table(records, dataset),
            "",
        ]
        figure = dataset_figure(records, dataset, work, out)
        if figure is not None:
            parts += [f"![{dataset}]({figure.name})", ""]
        sweep = sweep_table(load_records(out / "accuracy_sweep.jsonl"), dataset)
        if sweep is not None:
            parts += [
                "Training configurations tried with cross-entropy (`--sweep`, records in "
                "`accuracy_sweep.jsonl`), compared on the validation AUC of the selected epoch only; "
                "the test columns are shown, not used to choose. Times were taken under varying load.",
                "",
                sweep,
                "",
            ]
    if any(r["dataset"] == "drive" and "fold" in r for r in records):
        example = next(r for r in records if r["dataset"] == "drive" and "fold" in r)
        parts += [
            "## DRIVE (retinal vessels, 2D binary segmentation, 584x565 RGB)",
            "",
            f"{DRIVE_FOLDS}-fold cross-validation over the 20 DRIVE training images: each outer fold "
            f"holds out 5 images for evaluation; of the other 15, {example['n_val']} are an inner "
            "validation set (epoch selection on `val/dice` every 5 epochs, and the temperature fit, inside "
            f'the field of view: `TemperatureScaling(mask_key="fov")`) and {example["n_train"]} train. '
            "Metrics on the held-out images inside the field of view, pixels pooled per fold (Dice/F1 and "
            "AUROC as in the DRIVE literature), HD95 per image in pixels (vessel map inside the FOV, "
            "MONAI). Cross-validated figure = mean over the folds of one seed; the table gives mean ± std "
            "of that over the seeds (one seed: mean ± std over the 4 folds). MONAI UNet "
            "(16-32-64-128, 1 residual unit), 96x96 patches (4 per image, 50% vessel-centred), AdamW lr "
            f"3e-3, cosine, {example['epochs']} epochs, sliding-window inference, threshold 0.5.",
            "",
            drive_table(records),
            "",
            f"Published: {DRIVE_PUBLISHED}.",
            "",
        ]
        figure = drive_figure(records, work, out)
        if figure is not None:
            parts += [f"![drive]({figure.name})", ""]
    if any(r["dataset"] == "brats" for r in records):
        example = next(r for r in records if r["dataset"] == "brats")
        parts += [
            "## BraTS 2013 (brain tumour MRI, Flair + T1c, 5 labels, 3D)",
            "",
            f"Trained on the {example['n_train']} cases of `train/`, scored once on the {example['n_eval']} "
            f"cases of `validation/` ({', '.join(example['eval_cases'])}); no model selection (the last of "
            f"{example['epochs']} epochs is kept) and no temperature scaling (there is no third set to fit "
            "it on). Resampled to 2 mm for the CPU budget and cropped to the non-zero (brain) box "
            "(`PreprocessingSpec(crop_foreground=True)`), MONAI UNet (16-32-64-128, 1 residual unit), "
            "48^3 patches centred on background for half of them and on each tumour label equally for the "
            "rest (`crop: label_classes`, ratios 4:1:1:1:1), flips, AdamW lr 3e-3, "
            "cosine. Inference with `medfocal.inference.Predictor` (sliding window, overlap 0.5), which "
            "returns the labels on the native 1 mm grid where they are scored: Dice per label and per "
            "composite region (whole tumour 1-4, tumour core 1+3+4, enhancing 4), HD95 in mm (MONAI), "
            "top-label voxel ECE inside the brain mask. Mean over the 2 cases, then mean ± std over seeds. "
            "The stroke preset's network (`DenseUNet`) convolves at full resolution (dense blocks and "
            "decoder blocks at 48^3), about 24x the CPU cost per step of this UNet, whose first "
            "convolution is strided; the preset's loss is therefore used with the UNet.",
            "",
            brats_table(records),
            "",
            "IoU (Jaccard) per label and region:",
            "",
            brats_iou_table(records),
            "",
            f"Published: {BRATS_PUBLISHED}.",
            "",
        ]
        figure = brats_figure(records, out)
        if figure is not None:
            parts += [f"![brats]({figure.name})", ""]
    path = out / "accuracy.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


# ----------------------------------------------------------------------------- DRIVE (segmentation)
DRIVE_PUBLISHED = (
    "U-Net on DRIVE as reported by Alom et al., *Recurrent residual convolutional neural network based on "
    "U-Net (R2U-Net) for medical image segmentation*, arXiv:1802.06955 (2018): F1 0.8142, sensitivity "
    "0.7537, accuracy 0.9531, AUROC 0.9755 (R2U-Net: F1 0.8171, AUROC 0.9784); trained on the 20 official "
    "training images and scored on the 20 official test images, where this benchmark cross-validates "
    "within the 20 training images (the test manual labels are not in the shared data)"
)
# name -> (label, loss registry name, loss kwargs)
SEG_LOSSES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ce": ("Dice + CE (nnU-Net default)", "dice_ce", {"include_background": False}),
    "focal": ("focal (gamma 2, alpha auto)", "focal", {"gamma": 2.0, "alpha": "auto"}),
    "preset": (
        "preset: Jaccard + focal (lesion_isic)",
        "jaccard_focal",
        {"gamma": 2.0, "include_background": False},
    ),
    "automated": ("automated focal (Weber et al.)", "automated_focal", {}),
    "flsd53": ("FLSD-53 (Mukhoti et al.)", "flsd53_focal", {}),
    "adafocal": ("AdaFocal (Ghosh et al.)", "adafocal", {}),
}
DRIVE_EPOCHS = 40


DRIVE_FOLDS = 4


def _seg_module(
    entry: tuple[str, str, dict[str, Any]], net: Any, roi: tuple[int, ...], sw_batch: int, epochs: int
) -> tuple[str, Any]:
    """``(label, SegmentationModule)`` for a loss table entry: AdamW lr 3e-3, cosine over ``epochs``."""
    import torch

    from medfocal import losses
    from medfocal.tasks import SegmentationModule

    label, registry_name, loss_kwargs = entry
    module = SegmentationModule(
        net,
        losses.get(registry_name, activation="softmax", **loss_kwargs),
        roi_size=roi,
        sw_batch_size=sw_batch,
        compute_hd95=False,
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=1e-4),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs),
    )
    return label, module


class _HeldOutLayout(Layout):
    """DRIVE's 20 training images with one outer cross-validation fold tagged ``split="test"``.

    The datamodule splits the other 15 into training and an inner validation set (epoch selection and
    the temperature fit); the 5 tagged images are evaluated once.
    """

    def __init__(self, base: Layout, fold: int, num_folds: int = DRIVE_FOLDS) -> None:
        from medfocal.data import split_indices

        self.base = base
        self._records = sorted(base.records(), key=lambda r: str(r.get("case", r["image"])))
        _, held_out = split_indices(len(self._records), seed=0, fold=fold, num_folds=num_folds)
        for index in held_out:
            self._records[index] = {**self._records[index], "split": "test"}

    def records(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._records]

    def describe(self) -> str:
        return f"{self.base.describe()} (outer fold held out)"


def run_drive(
    loss_name: str, seed: int, root: Path, work: Path, epochs: int | None = None, fold: int = 0
) -> dict[str, Any]:
    """DRIVE vessels, outer fold ``fold`` of 4: train on 12 images, select the epoch and fit the
    temperature (inside the field of view) on 3 inner-validation images, evaluate the 5 held-out ones
    once, inside their field of view (pixels pooled, as in the DRIVE literature)."""
    import pytorch_lightning as pl
    import torch
    from monai.metrics import compute_hausdorff_distance
    from sklearn.metrics import roc_auc_score

    from medfocal.data import PairedFoldersLayout, PreprocessingSpec, SegmentationDataModule
    from medfocal.metrics import calibration_bins
    from medfocal.nets import create_model
    from medfocal.tasks.calibration import AdaFocalCalibration, TemperatureScaling

    _quiet()
    torch.set_num_threads(1)
    epochs = epochs or DRIVE_EPOCHS
    pl.seed_everything(seed, workers=True, verbose=False)
    base = root / "drive" / "training"
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: DRIVE training folder not found")
    layout = PairedFoldersLayout(
        str(base / "images"),
        str(base / "1st_manual"),
        image_suffix="_training.tif",
        mask_suffix="_manual1.gif",
        fov_dir=str(base / "mask"),
        fov_suffix="_training_mask.gif",
    )
    dm = SegmentationDataModule(
        _HeldOutLayout(layout, fold),  # type: ignore[arg-type]
        preprocessing=PreprocessingSpec(modality="rgb", spatial_dims=2, label_threshold=127.0),
        class_names=["background", "vessel"],
        roi_size=[96, 96],
        val_fraction=0.2,  # 3 of the 15 non-held-out images
        seed=0,
        batch_size=4,
        num_samples=4,
        val_batch_size=1,
        num_workers=0,
    )
    dm.setup("fit")
    net = create_model(
        "unet", spatial_dims=2, in_channels=3, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
        num_res_units=1,
    )  # fmt: skip
    label, module = _seg_module(SEG_LOSSES[loss_name], net, (96, 96), 16, epochs)
    run_dir = work / f"drive_{loss_name}_f{fold}_s{seed}"
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=run_dir, filename="best", monitor=module.monitor, mode=module.monitor_mode, save_top_k=1
    )
    scaling = TemperatureScaling(max_voxels_per_batch=None, mask_key="fov")
    callbacks: list[Any] = [scaling, checkpoint]
    if loss_name == "adafocal":
        callbacks.append(AdaFocalCalibration(max_voxels_per_batch=50_000, mask_key="fov"))
    trainer = _cpu_trainer(
        run_dir,
        epochs,
        callbacks,
        log_every_n_steps=2,
        check_val_every_n_epoch=5,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    fit_seconds = time.perf_counter() - start

    # the module holds the selected weights and the temperature fitted on the inner validation images
    temperature = float(module.temperature)
    module.eval()
    dm.setup("test")
    probs_all, labels_all, dice_per_image, hd95_per_image = [], [], [], []
    bins_before = bins_after = None
    with torch.no_grad():
        for batch in dm.test_dataloader():
            logits = module(batch["image"]).float()
            label_map = batch["label"][:, 0].long()
            fov = batch["fov"][:, 0] > 0
            before = calibration_bins(torch.softmax(logits, 1), label_map, mask=fov)
            after = calibration_bins(torch.softmax(logits / temperature, 1), label_map, mask=fov)
            bins_before = before if bins_before is None else bins_before + before
            bins_after = after if bins_after is None else bins_after + after
            prob = torch.softmax(logits, 1)[:, 1]
            pred = (prob > 0.5) & fov
            truth = (label_map == 1) & fov
            hd = compute_hausdorff_distance(pred[:, None], truth[:, None], percentile=95.0)
            hd95_per_image.append(float(hd.item()))
            p = prob[fov].numpy()
            y = label_map[fov].numpy()
            yes = p > 0.5
            dice_per_image.append(2 * np.sum(yes & (y == 1)) / max(1, np.sum(yes) + np.sum(y == 1)))
            probs_all.append(p)
            labels_all.append(y)
    p = np.concatenate(probs_all)
    y = np.concatenate(labels_all)
    pred = p > 0.5
    tp, fp, fn = np.sum(pred & (y == 1)), np.sum(pred & (y == 0)), np.sum(~pred & (y == 1))
    tn = np.sum(~pred & (y == 0))
    n_fov = float(len(y))
    out_dir = run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    pick = np.random.default_rng(0).choice(len(p), size=min(len(p), 400_000), replace=False)
    np.savez_compressed(out_dir / "test_outputs.npz", prob=p[pick].astype(np.float32), label=y[pick])
    return {
        "dataset": "drive",
        "task": "segmentation",
        "loss": loss_name,
        "loss_label": label,
        "seed": seed,
        "fold": fold,
        "epochs": epochs,
        "best_epoch": _best_epoch(checkpoint),
        "val_score": None if checkpoint.best_model_score is None else float(checkpoint.best_model_score),
        "fit_seconds": round(fit_seconds, 1),
        "n_train": len(dm.splits["train"]),
        "n_val": len(dm.splits["val"]),
        "n_eval": len(dm.splits["test"]),
        "eval_cases": [str(r.get("case", "")) for r in dm.splits["test"]],
        "val_cases": [str(r.get("case", "")) for r in dm.splits["val"]],
        "dice_vessel": float(2 * tp / (2 * tp + fp + fn)),
        "dice_vessel_per_image_mean": float(np.mean(dice_per_image)),
        "hd95_px": float(np.mean(hd95_per_image)),
        "iou_vessel": float(tp / (tp + fp + fn)),
        "auroc": float(roc_auc_score(y, p)),
        "accuracy": float((tp + tn) / n_fov),
        "sensitivity": float(tp / (tp + fn)),
        "specificity": float(tn / (tn + fp)),
        "temperature": temperature,
        "ece_before": float(bins_before.ece()),
        "ece_after": float(bins_after.ece()),
        "val_calibration": scaling.results,
        "smoke": False,
        "threads": torch.get_num_threads(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cv_mean_std(rows: list[dict[str, Any]], key: str) -> str:
    """Cross-validated figure: mean over the folds of each seed, then mean ± std over the seeds
    (with a single seed: mean ± std over the folds)."""
    per_seed = {}
    for r in rows:
        per_seed.setdefault(r["seed"], []).append(r[key])
    if len(per_seed) == 1:
        return _mean_std(next(iter(per_seed.values())))
    return _mean_std([float(np.mean(v)) for v in per_seed.values()])


def drive_table(records: list[dict[str, Any]]) -> str:
    rows = [r for r in records if r["dataset"] == "drive" and "fold" in r]
    header = ["loss", "seeds x folds", "Dice vessel", "Dice per image", "IoU vessel", "HD95 (px)", "AUROC",
              "sensitivity", "specificity", "ECE (in FOV)", "ECE after TS", "T", "train s/run"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in SEG_LOSSES:
        rs = [r for r in rows if r["loss"] == name]
        if not rs:
            continue
        keys = ("dice_vessel", "dice_vessel_per_image_mean", "iou_vessel", "hd95_px", "auroc", "sensitivity",
                "specificity", "ece_before", "ece_after", "temperature")  # fmt: skip
        seeds = sorted({r["seed"] for r in rs})
        folds = sorted({r["fold"] for r in rs})
        cells = [SEG_LOSSES[name][0], f"{len(seeds)} x {len(folds)} ({len(rs)} runs)"]
        cells += [_cv_mean_std(rs, k) for k in keys]
        cells.append(f"{np.mean([r['fit_seconds'] for r in rs]):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "| published U-Net (Alom et al. 2018, see below) | – | 0.814 | – | – | – | 0.976 | 0.754 "
        "| – | – | – | – | – |"
    )
    return "\n".join(lines)


def drive_figure(records: list[dict[str, Any]], work: Path, out: Path) -> Path | None:
    """Reliability diagrams inside the FOV (fold 0, first seed) + Dice / sensitivity bars."""
    import torch
    from matplotlib.figure import Figure

    from medfocal.metrics import reliability_diagram

    rows = [r for r in records if r["dataset"] == "drive" and "fold" in r]
    names = [n for n in SEG_LOSSES if any(r["loss"] == n for r in rows)]
    if not names:
        return None
    fig = Figure(figsize=(3.3 * (len(names) + 1), 3.6), layout="constrained")
    axes = fig.subplots(1, len(names) + 1)
    for ax, name in zip(axes, names):
        first = min((r for r in rows if r["loss"] == name), key=lambda r: (r["fold"], r["seed"]))
        raw = work / f"drive_{name}_f{first['fold']}_s{first['seed']}" / "test_outputs.npz"
        if raw.is_file():
            data = np.load(raw)
            prob = torch.as_tensor(data["prob"]).double()
            reliability_diagram(
                torch.stack([1 - prob, prob], 1),
                torch.as_tensor(data["label"]).long(),
                ax=ax,
                title=f"{name} (fold {first['fold']}, seed {first['seed']})",
            )
        else:
            ax.set_title(f"{name}: test outputs not kept")
            ax.axis("off")
    ax = axes[-1]
    metrics = ("dice_vessel", "sensitivity", "specificity", "auroc")
    width = 0.8 / len(names)
    x = np.arange(len(metrics))
    for i, name in enumerate(names):
        values = [np.mean([r[m] for r in rows if r["loss"] == name]) for m in metrics]
        ax.bar(x + i * width, values, width=width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, ["Dice", "sensitivity", "specificity", "AUROC"], fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out images, mean over folds and seeds")
    ax.legend(fontsize="x-small")
    fig.suptitle("DRIVE vessels: reliability inside the field of view (held-out fold) and pixel metrics",
                 fontsize="small")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    path = out / "accuracy_drive.png"
    fig.savefig(path, dpi=90)
    return path


# ----------------------------------------------------------------------------- BraTS 2013 (3D, 5 labels)
BRATS_NAMES = ("background", "necrosis", "oedema", "non_enhancing", "enhancing")
BRATS_REGIONS = {"whole tumour": (1, 2, 3, 4), "tumour core": (1, 3, 4), "enhancing": (4,)}
BRATS_LOSSES: dict[str, tuple[str, str, dict[str, Any]]] = {
    **SEG_LOSSES,
    "preset": (
        "preset: focal + Dice (stroke_isles)",
        "dice_focal",
        {"gamma": 2.0, "include_background": False},
    ),
}
BRATS_EPOCHS = 200  # 2 training volumes, 1 step of 2 x 4 patches per epoch
BRATS_PUBLISHED = (
    "BraTS 2012/2013 benchmark (Menze et al., IEEE TMI 34(10):1993-2024, 2015), abstract: human raters "
    "agree with Dice 0.74-0.85 across the tumour sub-regions, and the best algorithms reached performance "
    "comparable to that inter-rater variability. Those methods trained on 20-30 cases with 4 modalities; "
    "here 2 cases and 2 modalities train and 2 cases are scored, so the comparison is indicative only"
)


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return float("nan") if total == 0 else 2.0 * float(np.logical_and(pred, truth).sum()) / total


def _iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = int(np.logical_or(pred, truth).sum())
    return float("nan") if union == 0 else float(np.logical_and(pred, truth).sum()) / union


def _hd95_mm(pred: np.ndarray, truth: np.ndarray, hausdorff: Any) -> float:
    """MONAI HD95 (1 mm voxels) on the bounding box of ``pred | truth`` padded by 2 voxels: the same
    surfaces and distances as on the whole volume, at a fraction of the distance-transform cost."""
    import torch

    both = np.logical_or(pred, truth)
    if not pred.any() or not truth.any():
        return float("nan")
    lo = [max(0, int(i.min()) - 2) for i in np.nonzero(both)]
    hi = [int(i.max()) + 3 for i in np.nonzero(both)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    p = torch.as_tensor(np.ascontiguousarray(pred[box]))[None, None]
    t = torch.as_tensor(np.ascontiguousarray(truth[box]))[None, None]
    return float(hausdorff(p, t, percentile=95.0, spacing=1.0).item())


def run_brats(
    loss_name: str, seed: int, root: Path, work: Path, epochs: int | None = None, smoke: bool = False
) -> dict[str, Any]:
    """BraTS 2013: train on the 2 ``train/`` cases (Flair + T1c, 2 mm, 48^3 class-balanced patches),
    keep the last epoch, predict the 2 ``validation/`` cases with :class:`medfocal.inference.Predictor`
    (back on their native 1 mm grid) and score them there: Dice per label and per composite region,
    HD95 in mm per region, voxel ECE inside the brain mask."""
    import nibabel as nib
    import pytorch_lightning as pl
    import torch
    from monai.metrics import compute_hausdorff_distance

    from medfocal.data import CaseFoldersLayout, PreprocessingSpec, SegmentationDataModule
    from medfocal.inference import Predictor
    from medfocal.metrics import calibration_bins
    from medfocal.nets import create_model
    from medfocal.tasks.calibration import AdaFocalCalibration

    _quiet()
    torch.set_num_threads(1)
    epochs = 2 if smoke else (epochs or BRATS_EPOCHS)
    pl.seed_everything(seed, workers=True, verbose=False)
    base = root / "brats2013"
    if not (base / "train").is_dir() or not (base / "validation").is_dir():
        raise FileNotFoundError(f"{base}: BraTS 2013 train/ and validation/ folders not found")
    layout = CaseFoldersLayout(
        str(base / "train"),
        channels=["Flair*.nii.gz", "T1c*.nii.gz"],
        label="OTMultiClass.nii.gz",
        val_root=str(base / "validation"),
        mask="brainmask.nii.gz",
    )
    # the files are already z-scored inside the brain: no intensity step, only RAS + 2 mm for the CPU,
    # and a crop to the non-zero (skull-stripped brain) box so that background patches show brain, not air
    spec = PreprocessingSpec(
        modality="generic", spatial_dims=3, orientation="RAS", spacing=(2.0, 2.0, 2.0), crop_foreground=True
    )
    dm = SegmentationDataModule(
        layout,
        preprocessing=spec,
        class_names=list(BRATS_NAMES),
        roi_size=[48, 48, 48],
        crop="label_classes",
        class_ratios=[4.0, 1.0, 1.0, 1.0, 1.0],  # half the patches on background, the rest per tumour label
        num_samples=4,
        batch_size=2,
        val_batch_size=1,
        num_workers=0,
        cache="memory",
        augmentation=_augmentations()["flips"],
    )
    dm.setup("fit")
    net = create_model(
        "unet", spatial_dims=3, in_channels=2, out_channels=5, channels=(16, 32, 64, 128), strides=(2, 2, 2),
        num_res_units=1,
    )  # fmt: skip
    label, module = _seg_module(BRATS_LOSSES[loss_name], net, (48, 48, 48), 4, epochs)
    run_dir = work / f"brats_{loss_name}_s{seed}"
    callbacks: list[Any] = []
    if loss_name == "adafocal":  # its per-bin gammas follow the validation calibration: the 2 scored cases
        callbacks.append(AdaFocalCalibration(max_voxels_per_batch=50_000))
    trainer = _cpu_trainer(
        run_dir,
        epochs,
        callbacks,
        enable_checkpointing=False,
        log_every_n_steps=5,
        check_val_every_n_epoch=50 if loss_name == "adafocal" else 10_000,
        limit_val_batches=1.0 if loss_name == "adafocal" else 0,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    fit_seconds = time.perf_counter() - start
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "last.ckpt"
    trainer.save_checkpoint(ckpt)

    predictor = Predictor.from_checkpoint(ckpt, device="cpu", overlap=0.5, sw_batch_size=4)
    per_case: list[dict[str, Any]] = []
    bins = None
    infer_seconds = 0.0
    for record in dm.splits["val"]:
        t0 = time.perf_counter()
        prediction = predictor.predict_volume(record["image"])
        infer_seconds += time.perf_counter() - t0
        truth = np.rint(np.asarray(nib.load(record["label"]).dataobj)).astype(np.int64)
        brain = np.asarray(nib.load(record["mask"]).dataobj) > 0
        pred = prediction.label.astype(np.int64)
        if pred.shape != truth.shape:
            raise ValueError(f"{record['case']}: prediction {pred.shape} vs label {truth.shape}")
        row: dict[str, Any] = {"case": record["case"]}
        for k, name in enumerate(BRATS_NAMES[1:4], start=1):  # label 4 is the "enhancing" region
            row[f"dice_{name}"] = _dice(pred == k, truth == k)
            row[f"iou_{name}"] = _iou(pred == k, truth == k)
        for region, labels_in in BRATS_REGIONS.items():
            p, t = np.isin(pred, labels_in), np.isin(truth, labels_in)
            row[f"dice_{region}"] = _dice(p, t)
            row[f"iou_{region}"] = _iou(p, t)
            row[f"hd95_{region}"] = _hd95_mm(p, t, compute_hausdorff_distance)
        probs = torch.as_tensor(prediction.probabilities)[None].double()
        case_bins = calibration_bins(probs, torch.as_tensor(truth)[None], mask=torch.as_tensor(brain)[None])
        bins = case_bins if bins is None else bins + case_bins
        per_case.append(row)
    out: dict[str, Any] = {
        "dataset": "brats",
        "task": "segmentation",
        "loss": loss_name,
        "loss_label": label,
        "seed": seed,
        "epochs": epochs,
        "fit_seconds": round(fit_seconds, 1),
        "infer_seconds_per_case": round(infer_seconds / max(1, len(per_case)), 1),
        "n_train": len(dm.splits["train"]),
        "n_eval": len(per_case),
        "eval_cases": [r["case"] for r in per_case],
        "per_case": per_case,
        "ece_brain": float(bins.ece()) if bins is not None else float("nan"),
        "smoke": smoke,
        "threads": torch.get_num_threads(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for key in per_case[0]:
        if key != "case":
            out[key] = float(np.nanmean([r[key] for r in per_case]))
    return out


def brats_table(records: list[dict[str, Any]]) -> str:
    rows = [r for r in records if r["dataset"] == "brats"]
    header = ["loss", "seeds", *[f"Dice {n}" for n in BRATS_NAMES[1:4]],
              *[f"Dice {r}" for r in BRATS_REGIONS], *[f"HD95 {r} (mm)" for r in BRATS_REGIONS],
              "voxel ECE (brain)", "train s/run"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in BRATS_LOSSES:
        rs = sorted((r for r in rows if r["loss"] == name), key=lambda r: r["seed"])
        if not rs:
            continue
        keys = [f"dice_{n}" for n in BRATS_NAMES[1:4]] + [f"dice_{r}" for r in BRATS_REGIONS]
        keys += [f"hd95_{r}" for r in BRATS_REGIONS] + ["ece_brain"]
        cells = [BRATS_LOSSES[name][0], ",".join(str(r["seed"]) for r in rs)]
        cells += [_mean_std([r.get(k) for r in rs]) for k in keys]
        cells.append(f"{np.mean([r['fit_seconds'] for r in rs]):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def brats_iou_table(records: list[dict[str, Any]]) -> str:
    rows = [r for r in records if r["dataset"] == "brats"]
    keys = [f"iou_{n}" for n in BRATS_NAMES[1:4]] + [f"iou_{r}" for r in BRATS_REGIONS]
    header = ["loss", *[f"IoU {k[4:]}" for k in keys]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in BRATS_LOSSES:
        rs = [r for r in rows if r["loss"] == name]
        if rs:
            cells = [BRATS_LOSSES[name][0], *[_mean_std([r.get(k) for r in rs]) for k in keys]]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def brats_figure(records: list[dict[str, Any]], out: Path) -> Path | None:
    """Dice per label and per region (mean over seeds and the 2 scored cases) for each loss."""
    from matplotlib.figure import Figure

    rows = [r for r in records if r["dataset"] == "brats"]
    names = [n for n in BRATS_LOSSES if any(r["loss"] == n for r in rows)]
    if not names:
        return None
    keys = [f"dice_{n}" for n in BRATS_NAMES[1:4]] + [f"dice_{r}" for r in BRATS_REGIONS]
    labels = [*BRATS_NAMES[1:4], *(f"{r} ({'+'.join(map(str, v))})" for r, v in BRATS_REGIONS.items())]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(names)
    x = np.arange(len(keys))
    for i, name in enumerate(names):
        values = [np.nanmean([r.get(k, np.nan) for r in rows if r["loss"] == name]) for k in keys]
        ax.bar(x + i * width, values, width=width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, labels, rotation=20, fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice on validation/ (mean over cases, seeds)")
    ax.legend(fontsize="x-small", ncols=3)
    ax.set_title("BraTS 2013: Dice per label and composite region, 2 training cases", fontsize="small")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "accuracy_brats.png"
    fig.savefig(path, dpi=90)
    return path


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
