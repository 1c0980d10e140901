"""Accuracy benchmark, DRIVE part: 4-fold cross-validated vessel segmentation inside the field of view."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
from accuracy_common import _best_epoch, _cpu_trainer, _mean_std, _quiet

from medfocal.data.layouts import Layout

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
    from sklearn.metrics import roc_auc_score

    from medfocal.data import PairedFoldersLayout, PreprocessingSpec, SegmentationDataModule
    from medfocal.inference.evaluate import evaluate_case
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
            for pred_i, truth_i in zip(pred.numpy(), truth.numpy()):  # pixels: no affine, unit spacing
                scores = evaluate_case(pred_i.astype(np.uint8), truth_i.astype(np.uint8), labels=[1])[0]
                hd95_per_image.append(scores["hd95_mm"])
                dice_per_image.append(scores["dice"])
            p = prob[fov].numpy()
            y = label_map[fov].numpy()
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
