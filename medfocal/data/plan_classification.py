"""The classification rules of ``medfocal plan``: fingerprint + budget -> config dict and reasons.

Stem, width and depth for the budget (ResNet-18; CIFAR-style 3x3 stride-1 stem for images <= 64 px, as
MedMNIST v2's ResNet-18 (28)), batch size, epochs from an estimated cost, augmentation, loss (focal
``gamma`` and ``alpha`` from the class counts, or plain cross-entropy) and checkpoint selection on
validation AUROC. Pure functions (no file access).

Yang et al., "MedMNIST v2", Scientific Data 10:41, 2023; Lin et al., "Focal Loss for Dense Object
Detection", ICCV 2017; Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medfocal.data.fingerprint import Fingerprint
from medfocal.data.plan_rules import common_reasons

__all__ = ["CLS_FLOPS", "classification_plan"]

# effective training FLOP/s for the epoch estimate; cpu measured with one thread of the shared 2-core
# machine under load (MedMNIST 28 px, ResNet-18 x0.5: 8-9 s per BreastMNIST epoch, 18 s RetinaMNIST)
CLS_FLOPS = {"cpu": 2.0e10, "gpu": 5.0e12}


def classification_plan(
    fp: Fingerprint, layout: Any, device: str, seconds: float
) -> tuple[dict[str, Any], dict[str, str]]:
    """Config and reasons for a classification dataset."""
    r: dict[str, str] = {}
    dims, shape = fp.spatial_dims, list(fp.image_shape)
    counts = np.asarray(fp.class_counts, dtype=np.float64)
    n_classes = max(len(counts), 2)
    n_train = int(counts.sum())
    minority = float(counts.min() / max(counts.sum(), 1))
    small = max(shape) <= 64
    resize = None
    if not small and fp.layout != "MedMNISTLayout":
        edge = 128 if device == "cpu" else 224
        resize = [edge] * dims
        shape = resize
    if dims == 3 and device == "cpu":
        stem = {"conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": True}
        why_stem = "3D on CPU: 3x3x3 stem with stride 2, no max-pool (8x fewer voxels than stride 1)"
        reduce = 8.0
    elif small:
        stem = {"conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": True}
        why_stem = (
            f"images {fp.image_shape} <= 64 px: CIFAR-style 3x3 stride-1 stem, no max-pool"
            " (MedMNIST ResNet-18 (28))"
        )
        reduce = 1.0
    else:
        stem = {"conv1_t_size": 7, "conv1_t_stride": 2, "no_max_pool": False}
        why_stem = "large images: the standard 7x7 stride-2 stem + max-pool"
        reduce = 16.0 ** (dims / 2)
    width = 1.0 if device == "gpu" else (0.25 if dims == 3 else 0.5)
    # ResNet-18 CIFAR stem: ~0.55 GFLOP forward per 32x32 image at width 1; x3 for training, x3 for 3x3x3
    flops = 0.55e9 / 1024 * float(np.prod(shape)) / reduce * width**2 * 3 * (3 if dims == 3 else 1)
    epoch_s = n_train * flops / CLS_FLOPS[device]
    epochs = int(np.clip(seconds * 0.85 / max(epoch_s, 1e-6), 10, 200))
    batch = 128 if n_train >= 2000 else (64 if n_train >= 500 else 32)
    if dims == 3:
        batch = min(batch, 32)
    prior = [round(float(c / counts.sum()), 4) for c in counts] if counts.sum() else None
    if minority < 0.05:
        gamma, alpha = 2.0, "auto"
        why_loss = f"minority class {minority:.1%}: focal gamma 2 with class-balanced alpha from the counts"
    elif minority < 0.2:
        gamma, alpha = 1.0, None
        why_loss = (
            f"minority class {minority:.1%}: mild focal gamma 1, no alpha"
            " (the operating point corrects the prior)"
        )
    else:
        gamma, alpha = 0.0, None
        why_loss = (
            f"minority class {minority:.1%}: plain cross-entropy (focal gamma 0), which beat focal+alpha here"
        )
    aug = {
        "flip_prob": 0.5,
        "rot90_prob": 0.0,
        "affine_prob": 0.3 if dims == 2 else 0.2,
        "rotate_degrees": 10.0,
        "scale_range": 0.1,
        "contrast_prob": 0.2,
        "intensity_prob": 0.2,
        "noise_prob": 0.0,
        "colour_prob": 0.2 if fp.in_channels == 3 else 0.0,
    }
    if dims == 3:
        spec: dict[str, Any] = {"modality": "generic", "spatial_dims": 3, "intensity_range": [0.0, 255.0]}
    else:
        spec = {"modality": fp.modality if fp.modality in ("rgb", "grey") else "grey", "spatial_dims": 2}
    if resize:
        spec["resize"] = resize
        r["data.init_args.preprocessing.resize"] = f"images resized to {resize} for the {device} budget"
    model_args = {
        "model": {
            "class_path": "medfocal.nets.ResNet18",
            "init_args": {
                "spatial_dims": dims,
                "in_channels": fp.in_channels,
                "out_channels": n_classes,
                "widen_factor": width,
                **stem,
                "head": "focal",
                "prior": prior,
                "activation": "softmax",
            },
        },
        "loss": {
            "class_path": "medfocal.losses.FocalLoss",
            "init_args": {"activation": "softmax", "gamma": gamma, "alpha": alpha},
        },
        "activation": "softmax",
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001, "weight_decay": 0.0001}},
        "lr_scheduler": {
            "class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "init_args": {"T_max": epochs},
        },
        "class_names": fp.class_names[:n_classes],
        "monitor": "val/auroc",
        "monitor_mode": "max",
    }
    r["model.init_args.model"] = (
        f"ResNet-18 (MedMNIST v2's best small-image baseline), width x{width} for the {device} budget"
    )
    r["model.init_args.model.init_args.conv1_t_size"] = why_stem
    r["model.init_args.model.init_args.prior"] = "focal head starts at the training class frequencies"
    r["model.init_args.loss"] = why_loss
    r["model.init_args.optimizer"] = "AdamW 1e-3 (MedMNIST: Adam 1e-3)"
    r["model.init_args.lr_scheduler"] = "cosine decay over the planned epochs"
    r["model.init_args.monitor"] = (
        "checkpoint chosen on validation AUROC (MedMNIST); accuracy and balanced accuracy logged too"
    )
    data_args = {
        "layout": layout,
        "preprocessing": spec,
        "class_names": fp.class_names[:n_classes],
        "augmentation": aug,
        "batch_size": batch,
        "val_batch_size": 256 if dims == 2 else 64,
    }
    r["data.init_args.preprocessing"] = "intensities scaled from [0, 255] to [0, 1]"
    r["data.init_args.augmentation"] = (
        "flips, small rotation/scaling, brightness/contrast; no 90-degree turns (orientation carries meaning)"
    )
    r["data.init_args.batch_size"] = f"{n_train} training images: batch {batch}"
    r["trainer.max_epochs"] = f"{seconds / 60:.0f} min budget / ~{epoch_s:.1f} s per epoch (estimated)"
    common_reasons(r, fp)
    r["data.init_args.val_batch_size"] = "validation batch (no gradients)"
    binary = n_classes == 2
    callbacks: list[dict[str, Any]] = [{"class_path": "medfocal.tasks.TemperatureScaling"}]
    if binary:
        callbacks.append({"class_path": "medfocal.tasks.OperatingPoint", "init_args": {"rule": "youden"}})
    r["trainer.callbacks"] = (
        "after fit, on validation with the best weights: temperature scaling (calibrated probabilities, ECE)"
        + (
            "; then the decision threshold for Youden's J, stored in the model card (test/op/*, infer)"
            if binary
            else "; decisions stay argmax (a threshold rule needs a binary task)"
        )
    )
    trainer = {
        "max_epochs": epochs,
        "callbacks": callbacks,
        "precision": "16-mixed" if device == "gpu" else "32-true",
        "log_every_n_steps": max(1, min(50, n_train // batch)),
        "logger": [
            {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs/plan"}}
        ],
    }
    config = {
        "seed_everything": 0,
        "trainer": trainer,
        "model": {"class_path": "medfocal.tasks.ClassificationModule", "init_args": model_args},
        "data": {"class_path": "medfocal.data.ClassificationDataModule", "init_args": data_args},
    }
    return config, r
