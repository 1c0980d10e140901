"""Accuracy benchmark, BraTS 2013 part: train on train/, predict validation/ with the Predictor, score."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from accuracy_common import _augmentations, _cpu_trainer, _mean_std, _quiet
from accuracy_drive import SEG_LOSSES, _seg_module

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


def brats_scores(pred: np.ndarray, truth: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Dice / IoU per tumour label and Dice / IoU / HD95 (mm, from the affine) per composite region,
    through :func:`medfocal.inference.evaluate.evaluate_case`; a label absent from both masks is NaN
    (left out of the means) rather than a perfect score."""
    from medfocal.inference.evaluate import evaluate_case

    def score(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
        if not p.any() and not t.any():
            return {"dice": float("nan"), "iou": float("nan"), "hd95_mm": float("nan")}
        return evaluate_case(p.astype(np.uint8), t.astype(np.uint8), labels=[1], affine=affine)[0]

    row: dict[str, float] = {}
    for k, name in enumerate(BRATS_NAMES[1:4], start=1):  # label 4 is the "enhancing" region
        scores = score(pred == k, truth == k)
        row[f"dice_{name}"], row[f"iou_{name}"] = scores["dice"], scores["iou"]
    for region, labels_in in BRATS_REGIONS.items():
        scores = score(np.isin(pred, labels_in), np.isin(truth, labels_in))
        row[f"dice_{region}"], row[f"iou_{region}"] = scores["dice"], scores["iou"]
        row[f"hd95_{region}"] = scores["hd95_mm"]
    return row


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
        truth_image = nib.load(record["label"])
        truth = np.rint(np.asarray(truth_image.dataobj)).astype(np.int64)
        brain = np.asarray(nib.load(record["mask"]).dataobj) > 0
        pred = prediction.label.astype(np.int64)
        if pred.shape != truth.shape:
            raise ValueError(f"{record['case']}: prediction {pred.shape} vs label {truth.shape}")
        row: dict[str, Any] = {"case": record["case"], **brats_scores(pred, truth, truth_image.affine)}
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
