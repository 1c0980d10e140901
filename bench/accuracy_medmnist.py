"""Accuracy benchmark, MedMNIST part: dataset specs, loss choices, one training run, its metrics."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from accuracy_common import _augmentations, _best_epoch, _cpu_trainer, _quiet

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
