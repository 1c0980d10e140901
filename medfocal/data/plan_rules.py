"""The segmentation rules of ``medfocal plan``: fingerprint + budget -> config dict and one reason per choice.

Pure functions (no file access), tested one by one. Cost model: seconds per training step are
``voxels per step * US_PER_VOXEL[network][dims][device] * 1e-6 * base_filters / 16``, end to end (data
cached in memory, augmentation, Lightning). The CPU figures were measured on this project's 2-core CPU with
one thread per run and the other core busy (2026-11-29/30): DRIVE, the ``DynUNet`` with deep supervision,
32 patches of 48x48, 0.39 s per step (5.3 us per voxel); MONAI's residual ``UNet``, 32 patches of 80x80,
2.4 s per epoch of 4 steps (2.9 us); BraTS, ``DynUNet``, 2 patches of 32^3, about 1.4 s per step (21 us);
MONAI's ``UNet``, 2 patches of 32^3, 2000 steps and 8 validations in 4.6-7.9 minutes, 0.14-0.24 s per step
(2.1-3.6 us: the figure is 3.0 since 2026-11-30; the 10 before it left BraTS plans training 5-8 of their 30
minutes on 32^3 patches, where the budget buys 48^3).
The planner aims at a number of optimiser steps (``MIN_STEPS``), not at a wall-clock promise.

Network (``network="auto"``): MONAI's residual ``UNet`` on a CPU budget, nnU-Net's ``DynUNet`` with deep
supervision on a GPU. The UNet downsamples with its first (strided) convolution, so it has no
full-resolution feature maps: its forward and backward pass cost 3.2x less than the DynUNet's at DRIVE's
80x80 patches and 3.8x less at BraTS's 32^3 (2x and 2x end to end, with loading and augmentation), and on
this CPU the time buys more steps. At the same 30-minute budget, on BraTS 2013 it reached whole tumour
0.885 against the DynUNet's 0.796 (3 and 2 seeds), on DRIVE 0.804 against 0.803 (4 folds)
(bench/results/segmentation_losses.md, drive_plan.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medfocal.data.fingerprint import Fingerprint

__all__ = [
    "US_PER_VOXEL",
    "common_reasons",
    "dynunet_topology",
    "fit_patch",
    "lowres_factor",
    "segmentation_plan",
    "square_in_plane",
    "target_spacing",
]

NETWORKS = ("auto", "unet", "dynunet")
# training step cost per patch voxel (microseconds), base 16 filters, by network, spatial dims and device
US_PER_VOXEL = {
    "dynunet": {2: {"cpu": 6.0, "gpu": 0.05}, 3: {"cpu": 20.0, "gpu": 0.05}},
    "unet": {2: {"cpu": 3.0, "gpu": 0.03}, 3: {"cpu": 3.0, "gpu": 0.03}},
}
CACHE_BYTES = 4 * 2**30  # preprocessed dataset size up to which the plan caches it in memory
# optimiser steps the patch size must leave room for; on CPU 2000: DRIVE's MONAI baseline at 2464 steps
# matched the plan at 1232 steps with a larger network (bench/results/drive_plan.md)
MIN_STEPS = {"cpu": 2000, "gpu": 25000}
MAX_PATCH_VOXELS = {2: {"cpu": 256 * 256, "gpu": 512 * 512}, 3: {"cpu": 96**3, "gpu": 160 * 160 * 128}}
LIMIT_BATCHES = {"cpu": 50, "gpu": 250}  # nnU-Net's 250 iterations per epoch on GPU
ANISOTROPY = 3.0
LOWRES_COVER = 0.25  # share of the median volume a 3D patch should see (nnU-Net's low-resolution trigger)
LOWRES_MAX = 2.0  # at most this much coarser than the target spacing (small lesions must stay visible)


def target_spacing(spacings: list[list[float]]) -> tuple[list[float], str]:
    """Median spacing; on an axis coarser than ``ANISOTROPY`` x the finest, its 10th percentile (nnU-Net)."""
    arr = np.asarray(spacings, dtype=np.float64)
    target = np.median(arr, axis=0)
    coarse = int(np.argmax(target))
    if target[coarse] > ANISOTROPY * target.min():
        target[coarse] = np.percentile(arr[:, coarse], 10)
        return [
            float(v) for v in target
        ], f"median spacing, axis {coarse} anisotropic (>3x): its 10th percentile"
    return [float(v) for v in target], "median spacing of the training cases"


def dynunet_topology(
    patch: list[int], spacing: list[float], max_levels: int = 6
) -> tuple[list[list[int]], list[list[int]]]:
    """Per-level kernels and strides (nnU-Net): pool an axis while its size >= 8 and its spacing is within
    2x the finest; kernel 1 on an axis still coarser than 2x the finest (anisotropic top levels)."""
    size = np.asarray(patch, dtype=np.float64)
    sp = np.asarray(spacing, dtype=np.float64)
    kernels = [[3 if s <= 2 * sp.min() else 1 for s in sp]]
    strides = [[1] * len(patch)]
    for _ in range(max_levels - 1):
        pool = [2 if (size[i] >= 8 and sp[i] <= 2 * sp.min()) else 1 for i in range(len(patch))]
        if all(p == 1 for p in pool):
            break
        size = size / np.asarray(pool)
        sp = sp * np.asarray(pool)
        strides.append(pool)
        kernels.append([3 if s <= 2 * sp.min() else 1 for s in sp])
    return kernels, strides


def fit_patch(shape: list[int], spacing: list[float], max_voxels: int) -> list[int]:
    """Largest patch <= the median ``shape`` and <= ``max_voxels``: shrink the axis longest in mm by 10%
    at a time (nnU-Net), then round each axis down to a multiple of its total stride."""
    patch = [float(s) for s in shape]
    while np.prod(patch) > max_voxels:
        i = int(np.argmax([p * s for p, s in zip(patch, spacing)]))
        patch[i] = max(8.0, patch[i] * 0.9)
        if all(p <= 8.0 for p in patch):
            break
    patch_int = [max(8, int(p)) for p in patch]
    fitted = _divisible(patch_int, spacing)
    # rounding down to the strides can drop a third of the budget (28 x 32 x 32 of 38k voxels): grow the
    # axis shortest in mm by one stride while the patch stays within budget, image and divisibility
    while True:
        _, strides = dynunet_topology(fitted, spacing)
        total = np.prod(np.asarray(strides), axis=0)
        grown = None
        for i in np.argsort([f * s for f, s in zip(fitted, spacing)]):
            trial = list(fitted)
            trial[i] += int(total[i])
            if trial[i] <= shape[i] and np.prod(trial) <= max_voxels and _divisible(trial, spacing) == trial:
                grown = trial
                break
        if grown is None:
            return fitted
        fitted = grown


def _divisible(patch: list[int], spacing: list[float]) -> list[int]:
    """Each axis rounded down to a multiple of its total stride in the patch's own topology."""
    _, strides = dynunet_topology(patch, spacing)
    total = np.prod(np.asarray(strides), axis=0)
    return [int(max(t, (p // t) * t)) for p, t in zip(patch, total)]


def lowres_factor(patch: list[int], shape: list[int]) -> float:
    """Spacing factor (1 to ``LOWRES_MAX``) that lets a patch of the same voxel count see ``LOWRES_COVER``
    of the median volume; 1 when it already does (nnU-Net plans a low-resolution stage for the same
    reason, with its larger GPU patch)."""
    cover = float(np.prod(np.minimum(patch, shape)) / max(np.prod(shape), 1))
    if cover >= LOWRES_COVER:
        return 1.0
    return float(min(LOWRES_MAX, (LOWRES_COVER / cover) ** (1.0 / len(shape))))


def square_in_plane(patch: list[int], spacing: list[float]) -> list[int]:
    """Equal sizes on axes 0 and 1 (the smaller, kept a multiple of both axes' total stride), so that
    90-degree rotations in that plane keep the patch shape (batches must stack)."""
    _, strides = dynunet_topology(patch, spacing)
    total = np.prod(np.asarray(strides), axis=0)
    step = int(max(total[0], total[1]))
    side = max(step, (min(patch[0], patch[1]) // step) * step)
    return [side, side, *patch[2:]]


def _preprocessing(fp: Fingerprint, spacing: list[float] | None) -> tuple[dict[str, Any], dict[str, str]]:
    spec: dict[str, Any] = {"modality": fp.modality, "spatial_dims": fp.spatial_dims}
    why = {"modality": f"modality guessed from files and intensities: {fp.modality}"}
    if fp.modality == "ct":
        lo, hi = fp.intensity[0]["p00_5"], fp.intensity[0]["p99_5"]
        mean, std = fp.intensity[0]["mean"], max(fp.intensity[0]["std"], 1e-6)
        spec["window"] = [round(lo, 2), round(hi, 2)]
        spec["mean"] = [round((mean - lo) / (hi - lo), 6)]
        spec["std"] = [round(std / (hi - lo), 6)]
        why["window"] = "CT: clip to the foreground 0.5/99.5 percentiles (nnU-Net), scaled to [0, 1]"
        why["mean"] = "then z-score with the foreground mean/std (after the window)"
    elif fp.modality == "mri":
        why["modality"] += "; z-score per channel inside the non-zero voxels"
        if fp.zero_fraction > 0.2:
            spec["crop_foreground"] = True
            why["crop_foreground"] = (
                f"{fp.zero_fraction:.0%} of voxels are exactly 0: crop to the non-zero box"
            )
    else:
        why["modality"] += "; intensities scaled from [0, 255] to [0, 1]"
    if spacing is not None:
        spec["spacing"] = [round(s, 4) for s in spacing]
    values = fp.label_values
    if fp.spatial_dims == 2 and max(values) > 1 and (len(values) == 2 or max(values) >= 128):
        spec["label_threshold"] = 127
        why["label_threshold"] = f"masks stored with values up to {max(values)}: binarise at 127"
    elif values != list(range(len(values))):
        spec["label_map"] = {str(v): i for i, v in enumerate(values)}
        why["label_map"] = f"label values {values} mapped to contiguous class indices"
    return spec, why


def _augmentation(fp: Fingerprint, anisotropic: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """nnU-Net's augmentation set within :class:`medfocal.data.Augmentation`; reasons keyed by field
    (``""``: the whole block)."""
    volume = fp.spatial_dims == 3
    aug: dict[str, Any] = {
        "flip_prob": 0.5,
        "rot90_prob": 0.5 if not volume else (0.0 if anisotropic else 0.2),
        "affine_prob": 0.3,
        "rotate_degrees": 30.0 if not volume else (10.0 if anisotropic else 15.0),
        "scale_range": 0.15,
        "elastic_prob": 0.0,
        "contrast_prob": 0.3,
        "contrast_gamma": [0.7, 1.5],
        "intensity_prob": 0.3,
        "intensity_factor": 0.1,
        "lowres_prob": 0.25 if volume else 0.0,
        "lowres_zoom": [0.5, 1.0],
        "noise_prob": 0.1,
        "noise_std": 0.05,
        "colour_prob": 0.3 if fp.modality == "rgb" else 0.0,
    }
    why = {
        "": "nnU-Net's set within medfocal.data.Augmentation: mirroring, rotation/scaling, gamma,"
        " brightness/contrast, low-resolution simulation, noise",
    }
    if volume:
        why["elastic_prob"] = (
            "elastic deformation off, as in nnU-Net since its V2 trainer: ~2.3 s per 96^3 patch on one CPU"
            " thread (affine 0.16 s), gain not measured here; elastic_prob: 0.2 turns it on"
        )
        why["lowres_prob"] = (
            f"low-resolution simulation on (nnU-Net: p 0.25, zoom 0.5-1): 3D {fp.modality} volumes"
            + (" with an anisotropic axis" if anisotropic else "")
            + ", for scans coarser than the training ones"
        )
    else:
        why["elastic_prob"] = (
            "elastic deformation off, as in nnU-Net since its V2 trainer; cheap in 2D (~9 ms per 256^2"
            " patch) but its gain is not measured here; elastic_prob: 0.2 turns it on"
        )
        why["lowres_prob"] = (
            "low-resolution simulation off in 2D: the recipe measured on DRIVE"
            " (bench/results/drive_plan.md) ran without it"
        )
    return aug, why


def _poly(epochs: int) -> dict[str, Any]:
    return {
        "class_path": "torch.optim.lr_scheduler.PolynomialLR",
        "init_args": {"total_iters": epochs, "power": 0.9},
    }


def common_reasons(r: dict[str, str], fp: Fingerprint) -> None:
    r["seed_everything"] = "fixed seed: splits, sampling and initialisation reproducible"
    r["trainer.log_every_n_steps"] = "at least once per epoch"
    r["trainer.logger"] = "metrics.csv per run under runs/plan"
    r["model.init_args.activation"] = "mutually exclusive classes: softmax"
    r["model.init_args.class_names"] = f"{len(fp.class_names)} classes from the fingerprint"
    r["data.init_args.layout"] = f"detected layout: {fp.layout}"
    r.setdefault("data.init_args.class_names", "from the layout, else the label values")


def choose_network(network: str, device: str) -> str:
    """``"unet"`` or ``"dynunet"``: ``network`` itself, or for ``"auto"`` the UNet on a CPU budget."""
    if network not in NETWORKS:
        raise ValueError(f"network: expected one of {', '.join(NETWORKS)}, got {network!r}")
    if network == "auto":
        return "unet" if device == "cpu" else "dynunet"
    return network


def segmentation_plan(
    fp: Fingerprint, layout: Any, device: str, seconds: float, network: str = "auto"
) -> tuple[dict[str, Any], dict[str, str]]:
    """Config and reasons for a segmentation dataset (see the module docstring of ``planning``)."""
    r: dict[str, str] = {}
    chosen = choose_network(network, device)
    dims, n_classes = fp.spatial_dims, len(fp.class_fractions)
    if dims == 3:
        spacing, why_spacing = target_spacing(fp.spacings)
        sp = np.asarray(fp.spacings)
        uniform = np.allclose(sp, np.asarray(spacing)[None], rtol=0.01)
        shape = [round(m * s / t) for m, s, t in zip(fp.median_shape, np.median(sp, axis=0), spacing)]
    else:
        spacing, why_spacing, uniform, shape = [1.0, 1.0], "", True, fp.median_shape
    anisotropic = max(spacing) > ANISOTROPY * min(spacing)
    explicit_val = fp.split_sizes.get("val", 0)  # a layout's own validation split (BraTS validation/)
    if explicit_val:
        n_train = max(1, fp.split_sizes.get("train", 0) + fp.split_sizes.get("unsplit", 0))
        n_val = explicit_val
    else:
        n_train = max(1, round(fp.num_cases * 0.8))
        n_val = max(1, fp.num_cases - n_train)
    few_2d = dims == 2 and n_train <= 50
    if dims == 2:
        batch, samples = (4, 8) if few_2d else (16, 2)
    else:
        batch, samples = (1, 2) if n_train < 4 else (2, 1)
    base = 16 if device == "cpu" else 32
    patches = batch * samples
    step_budget = seconds * 0.85 / MIN_STEPS[device]
    us = US_PER_VOXEL[chosen][dims][device]
    voxels = step_budget / (us * 1e-6 * base / 16 * patches)
    cap = MAX_PATCH_VOXELS[dims][device]
    patch = fit_patch(shape, spacing, int(min(voxels, cap)))
    coarsen = lowres_factor(patch, shape) if dims == 3 else 1.0
    if coarsen > 1.0:
        cover = float(np.prod(patch) / np.prod(shape))
        spacing = [float(round(v * coarsen, 3)) for v in spacing]
        shape = [max(1, round(m / coarsen)) for m in shape]
        patch = fit_patch(shape, spacing, int(min(voxels, cap)))
        uniform = False
        why_spacing = (
            f"{why_spacing}, coarsened {coarsen:.2g}x: the budget's patch covered {cover:.1%} of the median "
            f"volume at full resolution, too little context (nnU-Net's low-resolution stage, when a patch "
            f"sees under {LOWRES_COVER:.0%}); now {float(np.prod(patch) / np.prod(shape)):.1%}"
        )
    if dims == 2 or not anisotropic:
        patch = square_in_plane(patch, spacing)
    kernels, strides = dynunet_topology(patch, spacing)
    levels = len(strides)
    step_s = us * 1e-6 * base / 16 * patches * float(np.prod(patch))
    steps_per_epoch = math.ceil(n_train / batch)
    limit = LIMIT_BATCHES[device] if steps_per_epoch > LIMIT_BATCHES[device] else None
    steps_per_epoch = min(steps_per_epoch, limit or steps_per_epoch)
    epochs = int(np.clip(seconds * 0.85 / (steps_per_epoch * step_s), 5, 1000))
    val_s = 0.35 * us * 1e-6 * base / 16 * float(np.prod(shape)) * 2.0 * n_val
    # validation near 10% of the training time, at least once; epochs rounded down to a multiple of the
    # interval so the last epoch is validated (a whole BraTS volume costs minutes on a CPU)
    n_val = int(np.clip(round(0.1 * epochs * steps_per_epoch * step_s / max(val_s, 1e-6)), 1, epochs))
    every = max(1, epochs // n_val)
    epochs = every * (epochs // every)
    fg = fp.class_fractions[1:] if len(fp.class_fractions) > 1 else [0.0]
    rare = min(fg)
    spec, why_spec = _preprocessing(fp, None if uniform else spacing)
    for key, text in why_spec.items():
        r[f"data.init_args.preprocessing.{key}"] = text
    if dims == 3:
        r["data.init_args.preprocessing.spacing" if not uniform else "data.init_args.preprocessing"] = (
            f"{why_spacing}: {[round(s, 3) for s in spacing]} mm"
            + (" (every case already on it: no resampling)" if uniform else "")
        )
    aug, why_aug = _augmentation(fp, anisotropic)
    for key, text in why_aug.items():
        r["data.init_args.augmentation" + (f".{key}" if key else "")] = text
    filters = [min(base * 2**i, 320 if dims == 3 else 512) for i in range(levels)]
    r["model.init_args.model.init_args.strides"] = (
        "pool an axis while it is >= 8 voxels and within 2x the finest spacing"
    )
    r["model.init_args.model.init_args.kernel_size"] = (
        "3 per axis; 1 on an axis still >2x coarser than the finest"
    )
    why_net = "chosen with --network" if network != "auto" else f"the default on a {device.upper()} budget"
    if chosen == "unet":
        deep = False
        net = {
            "class_path": "medfocal.nets.UNet",
            "init_args": {
                "spatial_dims": dims,
                "in_channels": fp.in_channels,
                "out_channels": n_classes,
                "channels": filters,
                # one int per level where every axis pools alike (MONAI's own form), else one per axis
                "strides": [s[0] if len(set(s)) == 1 else s for s in strides[1:]],
                "kernel_size": 3,
                "num_res_units": 2,
            },
        }
        r["model.init_args.model"] = (
            f"MONAI's residual UNet ({why_net}): strided first convolution, no full-resolution feature "
            "maps, 2x cheaper per step than the DynUNet on a CPU, so the budget buys twice the steps; at "
            "the same budget BraTS whole tumour 0.885 vs 0.796, DRIVE level "
            "(bench/results/segmentation_losses.md, drive_plan.md); --network dynunet for nnU-Net's"
        )
        r["model.init_args.model.init_args.strides"] = (
            "per level: " + r["model.init_args.model.init_args.strides"]
        )
        r["model.init_args.model.init_args.kernel_size"] = (
            "3 per axis at every level (MONAI UNet: one kernel)"
        )
        r["model.init_args.model.init_args.channels"] = (
            f"{base} at the top (budget {device}), doubling per level, capped"
        )
        r["model.init_args.model.init_args.num_res_units"] = (
            "two residual units per level (MONAI's tutorials)"
        )
    else:
        deep = levels >= 3
        net = {
            "class_path": "medfocal.nets.DynUNet",
            "init_args": {
                "spatial_dims": dims,
                "in_channels": fp.in_channels,
                "out_channels": n_classes,
                "kernel_size": kernels,
                "strides": strides,
                "filters": filters,
                "deep_supervision": deep,
                "deep_supr_num": max(1, min(2, levels - 2)),
            },
        }
        r["model.init_args.model"] = (
            f"DynUNet (nnU-Net's network, {why_net}); topology from patch and spacing below"
        )
        r["model.init_args.model.init_args.filters"] = (
            f"{base} at the top (budget {device}), doubling per level, capped"
        )
        r["model.init_args.model.init_args.deep_supervision"] = (
            "deep supervision on the two levels below the top (nnU-Net)"
            if deep
            else "too few levels for deep supervision"
        )
    inner = {
        "class_path": "medfocal.losses.DiceFocalLoss",
        "init_args": {"activation": "softmax", "gamma": 0.0, "alpha": None, "include_background": False},
    }
    # Dice + CE for every dataset: inside this recipe the focal term (gamma 2) lowered Dice on DRIVE and
    # on BraTS and doubled BraTS's false-positive lesions (bench/results/segmentation_losses.md); no class
    # weights: effective-number alpha of voxel counts is uniform (Cui et al.), the Dice term carries the
    # imbalance, as in nnU-Net
    why_loss = (
        f"rarest class {rare:.2%} of voxels: Dice + CE (focal gamma 0; gamma 2 cost Dice on DRIVE and on "
        "BraTS's 32^3 patches, led on its 48^3 patches: 2 validation cases, too few to change the default; "
        "bench/results/segmentation_losses.md); no class weights: the Dice term carries the imbalance "
        "(nnU-Net)"
    )
    loss = (
        {"class_path": "medfocal.nets.DeepSupervisionLoss", "init_args": {"loss": inner}} if deep else inner
    )
    r["model.init_args.loss"] = why_loss + (" inside the deep-supervision wrapper" if deep else "")
    if device == "cpu":
        optimizer = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001, "weight_decay": 0.0001}}
        why_opt = (
            "AdamW 1e-3: converges within a short CPU schedule (nnU-Net's SGD 0.01 is tuned for 250k steps)"
        )
    else:
        optimizer = {
            "class_path": "torch.optim.SGD",
            "init_args": {"lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5},
        }
        why_opt = "SGD with Nesterov momentum 0.99, lr 0.01 (nnU-Net)"
    r["model.init_args.optimizer"] = why_opt
    r["model.init_args.lr_scheduler"] = "poly learning rate (1 - epoch/max)^0.9 (nnU-Net)"
    r["model.init_args.roi_size"] = "sliding-window validation over training-size patches"
    if fp.components:
        sizes = {k: v.get("median", 0) for k, v in fp.components.items()}
        r["data.init_args.crop"] = f"median lesion size per class (voxels) {sizes}"
    multi = n_classes > 2
    data_args: dict[str, Any] = {
        "layout": layout,
        "preprocessing": spec,
        "class_names": fp.class_names[:n_classes],
        "roi_size": patch,
        "crop": "label_classes" if multi else "pos_neg",
    }
    if multi:
        data_args["class_ratios"] = [float(n_classes - 1)] + [1.0] * (n_classes - 1)
        r["data.init_args.crop"] = (
            r.get("data.init_args.crop", "")
            + "; half the patch centres on background, the rest equally per foreground class (with equal "
            "ratios 80% of BraTS patches sat on tumour and the network called normal brain tumour)"
        )
    else:
        data_args["pos_fraction"] = 0.67 if rare < 0.01 else 0.5
        r["data.init_args.pos_fraction"] = "foreground-centred share of patches (higher for tiny foregrounds)"
    cache_bytes = 4.0 * fp.num_cases * (fp.in_channels + 1) * float(np.prod(shape))
    data_args["cache"] = "memory" if cache_bytes <= CACHE_BYTES else "none"
    r["data.init_args.cache"] = (
        f"the preprocessed cases (~{cache_bytes / 2**20:,.0f} MB) fit in memory: loaded and normalised once "
        "(MONAI CacheDataset), only crops and augmentation run per step"
        if cache_bytes <= CACHE_BYTES
        else f"the preprocessed cases (~{cache_bytes / 2**30:.1f} GB) do not fit the "
        f"{CACHE_BYTES / 2**30:.0f} GB memory cache: read per step (cache: disk with cache_dir "
        "preprocesses them once)"
    )
    data_args.update(
        {
            "num_samples": samples,
            "augmentation": aug,
            "batch_size": batch,
            "val_batch_size": 1,
            "val_fraction": 0.2,
        }
    )
    r["data.init_args.roi_size"] = (
        f"largest patch within the median image {shape} leaving {MIN_STEPS[device]} steps of "
        f"{patches} patches in the budget (about {step_s:.2f} s/step estimated)"
    )
    r["data.init_args.num_samples"] = (
        "many patches per image: few 2D images (DRIVE: 8 patches x batch 4 gave Dice 0.81 vs 0.72)"
        if few_2d
        else "patches drawn per image per step"
    )
    r["data.init_args.batch_size"] = f"images per step ({patches} patches per step)"
    r["data.init_args.class_names"] = "from the layout, else class_<value>"
    trainer: dict[str, Any] = {
        "max_epochs": epochs,
        "check_val_every_n_epoch": every,
        "precision": "16-mixed" if device == "gpu" else "32-true",
        "log_every_n_steps": max(1, min(50, steps_per_epoch)),
        "logger": [
            {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs/plan"}}
        ],
    }
    if limit:
        trainer["limit_train_batches"] = limit
        r["trainer.limit_train_batches"] = f"iteration-based epochs of {limit} steps ({device})"
    r["trainer.max_epochs"] = (
        f"{seconds / 60:.0f} min budget / ({steps_per_epoch} steps x ~{step_s:.2f} s) per epoch"
    )
    r["trainer.check_val_every_n_epoch"] = (
        f"{epochs // every} validation(s) of ~{val_s:.0f} s (sliding window over whole images): about 10% "
        "of the training time, the last at the last epoch"
    )
    r["trainer.precision"] = "mixed precision on GPU" if device == "gpu" else "float32 on CPU"
    common_reasons(r, fp)
    r["model.init_args.sw_batch_size"] = "windows per forward pass in validation"
    r["model.init_args.sw_overlap"] = (
        "window overlap: 0.5 as nnU-Net on GPU, 0.25 to keep CPU validation short"
    )
    r["data.init_args.val_batch_size"] = "whole images of different sizes: one per batch"
    r["data.init_args.val_fraction"] = "20% of the cases for validation (5-fold split with fold=k)"
    model_args = {
        "model": net,
        "loss": loss,
        "activation": "softmax",
        "optimizer": optimizer,
        "lr_scheduler": _poly(epochs),
        "roi_size": patch,
        "sw_batch_size": 16 if dims == 2 else 4,
        "sw_overlap": 0.25 if device == "cpu" else 0.5,
        "class_names": fp.class_names[:n_classes],
    }
    if fp.region_mask_key == "fov":
        model_args["metric_mask_key"] = "fov"
        r["model.init_args.metric_mask_key"] = (
            "validation scored inside the field of view (the protocol of published retinal-vessel figures; "
            "medfocal evaluate --roi scores infer's masks the same way)"
        )
    config = {
        "seed_everything": 0,
        "trainer": trainer,
        "model": {"class_path": "medfocal.tasks.SegmentationModule", "init_args": model_args},
        "data": {"class_path": "medfocal.data.SegmentationDataModule", "init_args": data_args},
    }
    return config, r
