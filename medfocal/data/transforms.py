"""MONAI transform presets per modality: the deterministic part and the training augmentations.

:class:`PreprocessingSpec` says how an image is turned into the network's input (reader, orientation,
spacing, intensity, 2D resize, label clean-up). :func:`inference_transforms` builds the deterministic
MONAI ``Compose`` used identically for validation and ``medfocal infer`` (invertible with ``Invertd``);
:func:`train_transforms` adds foreground-aware patch sampling and the random augmentations described
by :class:`Augmentation` (built in :mod:`medfocal.data.augmentation`; re-exported here).

Example::

    spec = PreprocessingSpec(modality="ct", spacing=(1.5, 1.5, 3.0), window=(-175, 250))
    tf = inference_transforms(spec, keys=("image", "label"))
    sample = tf({"image": "ct.nii.gz", "label": "seg.nii.gz"})   # image in [0, 1], RAS, 1.5x1.5x3 mm
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapLabelValued,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    RandSpatialCropd,
    Resized,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from medfocal.data.augmentation import Augmentation, augmentation_transforms
from medfocal.data.readers import resolve_reader, with_simpleitk

__all__ = [
    "MASK_KEYS",
    "MODALITIES",
    "Augmentation",
    "LabelToIndexd",
    "PreprocessingSpec",
    "check_roi_size",
    "inference_transforms",
    "label_transforms",
    "train_transforms",
]

MODALITIES = ("ct", "mri", "rgb", "dermoscopy", "histology", "grey", "generic")
_TWO_D_PHOTO = ("rgb", "dermoscopy", "histology", "grey")
# binary region masks carried beside the label (DRIVE's field of view, a brain mask): resampled with
# nearest neighbour, never intensity-normalised, and binarised (stored value > 0 -> 1)
MASK_KEYS = ("fov", "mask", "brainmask")


def check_roi_size(roi_size: Sequence[int] | None, spatial_dims: int) -> None:
    """The one check of a patch / sliding-window size: one positive value per spatial axis.

    Used by the datamodules, the training transforms and (through the model card) inference.

    Raises:
        ValueError: ``roi_size: expected 2 values, got [64, 64, 32]`` (or a non-positive value).
    """
    if roi_size is None:
        return
    if len(roi_size) != spatial_dims:
        raise ValueError(f"roi_size: expected {spatial_dims} values, got {list(roi_size)}")
    if any(int(v) <= 0 for v in roi_size):
        raise ValueError(f"roi_size: expected positive sizes, got {list(roi_size)}")


def _is_mask(key: str) -> bool:
    return key == "label" or key in MASK_KEYS


def _interp(key: str, image_mode: str = "bilinear") -> str:
    return "nearest" if _is_mask(key) else image_mode


def _tuple_or_none(value: Any, cast: type = float) -> tuple | None:
    if value is None:
        return None
    return tuple(cast(v) for v in value)


@dataclass
class PreprocessingSpec:
    """How an image file becomes the network input; fields left ``None`` take the modality's default.

    Modality defaults:

    ============  =========  ===========  =========================================================
    modality      dims       orientation  intensity
    ============  =========  ===========  =========================================================
    ct            3          RAS          clip to ``window`` (HU, default (-1000, 1000)), scale to [0, 1]
    mri           3          RAS          z-score per channel on non-zero voxels (brain/foreground)
    rgb,          2          none         ``intensity_range`` (0, 255) scaled to [0, 1]; PIL reader
    dermoscopy,
    histology,
    grey
    generic       3          none         none
    ============  =========  ===========  =========================================================

    Args:
        modality: one of ``MODALITIES``.
        spatial_dims: 2 or 3.
        orientation: axcodes for ``Orientationd`` (e.g. ``"RAS"``); ``""`` disables it.
        spacing: target voxel size in mm for ``Spacingd``; ``None`` keeps the native grid.
        window: CT ``(a_min, a_max)`` in HU, clipped then scaled to [0, 1].
        zscore_nonzero: MRI z-score over non-zero voxels only (``NormalizeIntensityd(nonzero=True)``).
        intensity_range: ``(a_min, a_max)`` scaled to [0, 1] without clipping (photos: (0, 255)).
        mean, std: optional per-channel normalisation after scaling (e.g. ImageNet statistics).
        resize: 2D/3D size for ``Resized`` (classification or fixed-size 2D segmentation).
        reader: MONAI reader name for ``LoadImaged`` (``"PILReader"``, ``"NibabelReader"``,
            ``"ITKReader"``); ``None`` picks by file suffix.
        label_threshold: binarise the label map with ``label > threshold`` (JPEG masks: 127).
        label_map: ``{stored value: class index}`` (e.g. DRIVE ``{255: 1}``); applied before the threshold
            is *not* used together with it.
        label_channel: channel kept when a mask file has several (RGB masks).
        crop_foreground: crop every image to the bounding box of its non-zero voxels (any channel)
            plus ``crop_margin`` voxels, after resampling (``CropForegroundd``, as nnU-Net does for
            skull-stripped MRI): background patches then come from the anatomy, not from the air
            around it. Invertible: ``medfocal infer`` pads the prediction back to the input grid
            (probabilities 0 outside the box, label background).
        crop_margin: voxels kept around the non-zero box.

    Raises:
        ValueError: unknown modality, spatial_dims not 2/3, or a tuple of the wrong length.
    """

    modality: str = "generic"
    spatial_dims: int | None = None
    orientation: str | None = None
    spacing: tuple[float, ...] | None = None
    window: tuple[float, float] | None = None
    zscore_nonzero: bool = True
    intensity_range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: tuple[int, ...] | None = None
    reader: str | None = None
    label_threshold: float | None = None
    label_map: dict[int, int] | None = None
    label_channel: int = 0
    crop_foreground: bool = False
    crop_margin: int = 2

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(
                f"PreprocessingSpec.modality: expected one of {MODALITIES}, got {self.modality!r}"
            )
        photo = self.modality in _TWO_D_PHOTO
        if self.spatial_dims is None:
            self.spatial_dims = 2 if photo else 3
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"PreprocessingSpec.spatial_dims: expected 2 or 3, got {self.spatial_dims}")
        if self.orientation is None and self.modality in ("ct", "mri") and self.spatial_dims == 3:
            self.orientation = "RAS"
        if self.window is None and self.modality == "ct":
            self.window = (-1000.0, 1000.0)
        if self.intensity_range is None and photo:
            self.intensity_range = (0.0, 255.0)
        if self.reader is None and photo:
            self.reader = "PILReader"
        self.spacing = _tuple_or_none(self.spacing)
        self.window = _tuple_or_none(self.window)
        self.intensity_range = _tuple_or_none(self.intensity_range)
        self.mean = _tuple_or_none(self.mean)
        self.std = _tuple_or_none(self.std)
        self.resize = _tuple_or_none(self.resize, int)
        if self.label_map is not None:
            self.label_map = {int(k): int(v) for k, v in self.label_map.items()}
        for name in ("spacing", "resize"):
            value = getattr(self, name)
            if value is not None and len(value) != self.spatial_dims:
                raise ValueError(
                    f"PreprocessingSpec.{name}: expected {self.spatial_dims} values, got {list(value)}"
                )
        for name in ("window", "intensity_range"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or value[0] >= value[1]):
                raise ValueError(
                    f"PreprocessingSpec.{name}: expected (low, high) with low < high, got {value}"
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists, str keys) for checkpoints."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        if self.label_map is not None:
            out["label_map"] = {str(k): v for k, v in self.label_map.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessingSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"PreprocessingSpec.from_dict: unknown keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**dict(data))


class LabelToIndexd(MapTransform):
    """Turn a stored mask into integer class indices (one channel, float dtype as MONAI expects).

    Keeps channel ``channel`` of a multi-channel mask (RGB JPEG masks), then applies ``label_map``
    (``{stored: index}``, values not listed are kept) or ``threshold`` (``label > threshold`` -> 1).
    Deterministic and shape-preserving, so ``Invertd`` passes through it.
    """

    def __init__(
        self,
        keys: KeysCollection,
        threshold: float | None = None,
        channel: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = threshold
        self.channel = channel

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            if label.shape[0] > 1:
                label = label[self.channel : self.channel + 1]
            if self.threshold is not None:
                label = (
                    (label > self.threshold).to(label.dtype)
                    if isinstance(label, torch.Tensor)
                    else ((label > self.threshold).astype(label.dtype))
                )
            else:
                label = torch.round(label) if isinstance(label, torch.Tensor) else np.round(label)
            d[key] = label
        return d


def nonzero(x: Any) -> Any:
    """``x != 0`` (the foreground of :class:`PreprocessingSpec` ``crop_foreground``; picklable)."""
    return x != 0


def _image_keys(keys: Sequence[str]) -> list[str]:
    return [k for k in keys if not _is_mask(k)]


def _intensity(spec: PreprocessingSpec, image_keys: list[str]) -> list:
    out: list = []
    if not image_keys:
        return out
    if spec.modality == "ct" and spec.window is not None:
        out.append(ScaleIntensityRanged(image_keys, spec.window[0], spec.window[1], 0.0, 1.0, clip=True))
    elif spec.intensity_range is not None:
        low, high = spec.intensity_range
        out.append(ScaleIntensityRanged(image_keys, low, high, 0.0, 1.0))
    if spec.modality == "mri":
        out.append(NormalizeIntensityd(image_keys, nonzero=spec.zscore_nonzero, channel_wise=True))
    if spec.mean is not None or spec.std is not None:
        mean = np.asarray(spec.mean if spec.mean is not None else [0.0], dtype=np.float32)
        std = np.asarray(spec.std if spec.std is not None else [1.0], dtype=np.float32)
        out.append(NormalizeIntensityd(image_keys, subtrahend=mean, divisor=std, channel_wise=True))
    return out


def label_transforms(spec: PreprocessingSpec, keys: Sequence[str] = ("label",)) -> list:
    """The label clean-up steps of ``spec`` (channel pick, ``label_map`` or ``label_threshold``)."""
    keys = list(keys)
    if not keys:
        return []
    if spec.label_map:
        orig = list(spec.label_map)
        target = [spec.label_map[k] for k in orig]
        return [
            LabelToIndexd(keys, threshold=None, channel=spec.label_channel),
            MapLabelValued(keys, orig, target, dtype=np.float32),
        ]
    return [LabelToIndexd(keys, threshold=spec.label_threshold, channel=spec.label_channel)]


def inference_transforms(
    spec: PreprocessingSpec,
    keys: Sequence[str] = ("image",),
    load: bool = True,
) -> Compose:
    """Deterministic preprocessing: load, channel-first, orientation, spacing, intensity, resize.

    Args:
        spec: the preprocessing description.
        keys: dict keys to transform; ``"label"`` gets nearest-neighbour resampling and
            :class:`LabelToIndexd`/``MapLabelValued``; region masks (:data:`MASK_KEYS`: ``"fov"``,
            ``"mask"``, ``"brainmask"``) get nearest-neighbour resampling and are binarised (> 0);
            every other key is an image.
        load: ``False`` when the items already hold channel-first arrays (MedMNIST ``.npz``).

    Returns:
        ``monai.transforms.Compose`` of invertible MONAI transforms; outputs are ``MetaTensor`` float32
        images ``(C, *spatial)`` and labels ``(1, *spatial)`` holding class indices.

    Example::

        tf = inference_transforms(PreprocessingSpec(modality="mri"), keys=("image", "label"))
        item = tf({"image": ["flair.nii.gz", "t1c.nii.gz"], "label": "seg.nii.gz"})  # image (2, X, Y, Z)
    """
    keys = list(keys)
    image_keys = _image_keys(keys)
    label_keys = [k for k in keys if k == "label"]
    region_keys = [k for k in keys if k in MASK_KEYS]
    modes = [_interp(k) for k in keys]
    steps: list = []
    if load:
        reader = resolve_reader(spec.reader)
        steps.append(with_simpleitk(LoadImaged(keys, reader=reader, image_only=True), reader))
        steps.append(EnsureChannelFirstd(keys))
    steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=True))
    steps += label_transforms(spec, label_keys)
    if region_keys:
        steps.append(LabelToIndexd(region_keys, threshold=0.0, channel=0))
    if spec.orientation:
        steps.append(Orientationd(keys, axcodes=spec.orientation, labels=None))
    if spec.spacing is not None:
        steps.append(Spacingd(keys, pixdim=spec.spacing, mode=modes))
    if spec.crop_foreground:
        steps.append(
            CropForegroundd(
                keys, source_key=image_keys[0], select_fn=nonzero, margin=spec.crop_margin, allow_smaller=True
            )
        )
    steps += _intensity(spec, image_keys)
    if spec.resize is not None:
        resize_modes = [_interp(k, "area" if spec.spatial_dims == 2 else "trilinear") for k in keys]
        steps.append(Resized(keys, spatial_size=spec.resize, mode=resize_modes))
    return Compose(steps)


def _crop(
    keys: list[str],
    roi_size: Sequence[int],
    crop: str,
    pos_fraction: float,
    num_samples: int,
    class_ratios: Sequence[float] | None,
    num_classes: int,
) -> list:
    has_label = "label" in keys
    pad = SpatialPadd(keys, spatial_size=list(roi_size))
    if crop == "random" or not has_label:
        return [pad, RandSpatialCropd(keys, roi_size=list(roi_size), random_size=False)]
    if crop == "pos_neg":
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction: expected a value in [0, 1], got {pos_fraction}")
        return [
            pad,
            RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=list(roi_size),
                pos=pos_fraction,
                neg=1.0 - pos_fraction,
                num_samples=num_samples,
                allow_smaller=True,
            ),
        ]
    if crop == "label_classes":
        ratios = list(class_ratios) if class_ratios is not None else [1.0] * num_classes
        if len(ratios) != num_classes:
            raise ValueError(f"class_ratios: expected {num_classes} values (one per class), got {ratios}")
        return [
            pad,
            RandCropByLabelClassesd(
                keys,
                label_key="label",
                spatial_size=list(roi_size),
                ratios=ratios,
                num_classes=num_classes,
                num_samples=num_samples,
                allow_smaller=True,
                warn=False,
            ),
        ]
    raise ValueError(f"crop: expected 'pos_neg', 'label_classes' or 'random', got {crop!r}")


def train_transforms(
    spec: PreprocessingSpec,
    keys: Sequence[str] = ("image", "label"),
    roi_size: Sequence[int] | None = None,
    crop: str = "pos_neg",
    pos_fraction: float = 0.5,
    num_samples: int = 2,
    class_ratios: Sequence[float] | None = None,
    num_classes: int = 2,
    augmentation: Augmentation | None = None,
    load: bool = True,
) -> Compose:
    """:func:`inference_transforms` + patch sampling + random augmentations.

    Args:
        spec, keys, load: as in :func:`inference_transforms`.
        roi_size: patch size; ``None`` keeps whole images (2D resized data, classification).
        crop: ``"pos_neg"`` (``RandCropByPosNegLabeld``: a patch is centred on foreground with
            probability ``pos_fraction``), ``"label_classes"`` (``RandCropByLabelClassesd`` with
            ``class_ratios``, one per class), or ``"random"``.
        num_samples: patches per image (a batch holds ``batch_size * num_samples`` patches).
        num_classes: number of classes (for ``"label_classes"``).
        augmentation: random transforms; ``None`` uses :class:`Augmentation` defaults, ``Augmentation``
            with all probabilities 0 disables them.

    Returns:
        ``Compose``; with a crop, each call returns a list of ``num_samples`` dicts
        (``monai.data.list_data_collate`` flattens them into the batch).
    """
    keys = list(keys)
    aug = augmentation if augmentation is not None else Augmentation()
    steps = list(inference_transforms(spec, keys, load=load).transforms)
    if roi_size is not None:
        check_roi_size(roi_size, spec.spatial_dims)
        steps += _crop(keys, roi_size, crop, pos_fraction, num_samples, class_ratios, num_classes)
    patch_size = roi_size if roi_size is not None else spec.resize
    steps += augmentation_transforms(
        aug,
        _image_keys(keys),
        [k for k in keys if _is_mask(k)],
        spatial_dims=spec.spatial_dims,
        modality=spec.modality,
        patch_size=patch_size,
    )
    steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=False))
    return Compose(steps)
