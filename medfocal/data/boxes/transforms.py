"""Box-aware MONAI transform chains for detection (``monai.apps.detection.transforms.dictionary``).

Data dicts carry ``"image"`` (path, then ``(C, *spatial)`` MetaTensor), ``"boxes"`` (``(N, 2 * dims)``)
and ``"labels"`` (``(N,)``). The chain: load -> channel first -> (3D) orientation and spacing -> intensity
to [0, 1] -> boxes to MONAI's standard corner mode -> (world boxes) to image coordinates through the
image's current affine (:class:`WorldBoxToImaged`, right for oblique affines too) -> (2D) zoom -> clip
boxes to the image, dropping empty ones; training adds a crop
around positive/negative boxes, flips on every axis, 90-degree rotations in the first plane (square
patches only) and intensity jitter, each followed by clipping. After any transform the boxes are valid
corner boxes inside the image, in the voxel coordinates of the transformed image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from monai.apps.detection.transforms.dictionary import (
    ClipBoxToImaged,
    ConvertBoxToStandardModed,
    RandCropBoxByPosNegLabeld,
    RandFlipBoxd,
    RandRotateBox90d,
    StandardizeEmptyBoxd,
    ZoomBoxd,
)
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from medfocal.data.boxes.geometry import WorldBoxToImaged
from medfocal.data.transforms import PreprocessingSpec

__all__ = ["BoxPreprocessing", "detection_transforms"]

_KEYS = {"image": "image", "boxes": "boxes", "labels": "labels"}
_MODALITIES = ("rgb", "grey", "ct")


@dataclass
class BoxPreprocessing:
    """How an image and its boxes become the network input (recorded in checkpoints for inference).

    Args:
        modality: ``"rgb"`` / ``"grey"`` (2D photos, intensities ``intensity_range`` -> [0, 1]) or ``"ct"``
            (3D, HU ``window`` clipped and scaled to [0, 1]).
        spatial_dims: 2 or 3.
        box_mode: MONAI box mode of the stored boxes (``"xyxy"``, ``"cccwhd"``...).
        world_coordinates: boxes are in world millimetres (3D box JSON) rather than voxels.
        affine_lps_to_ras: world boxes are in ITK's LPS world (LUNA16) while the image affine is RAS.
        orientation: axcodes for ``Orientationd`` (3D), ``""`` keeps the stored orientation.
        spacing: target voxel size in mm (3D ``Spacingd``), None keeps the native grid.
        window: CT ``(a_min, a_max)`` in HU.
        intensity_range: 2D ``(a_min, a_max)`` scaled to [0, 1].
        zoom: resize factor for 2D images (``ZoomBoxd``), e.g. 0.5; None keeps the size.
    """

    modality: str = "rgb"
    spatial_dims: int = 2
    box_mode: str = "xyxy"
    world_coordinates: bool = False
    affine_lps_to_ras: bool = False
    orientation: str = ""
    spacing: Sequence[float] | None = None
    window: Sequence[float] = (-1000.0, 500.0)
    intensity_range: Sequence[float] = (0.0, 255.0)
    zoom: float | None = None

    def __post_init__(self) -> None:
        if self.modality not in _MODALITIES:
            raise ValueError(f"modality must be one of {_MODALITIES}, not {self.modality!r}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, not {self.spatial_dims}")

    @property
    def in_channels(self) -> int:
        """3 for RGB, else 1."""
        return 3 if self.modality == "rgb" else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON types only (for the checkpoint)."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def image_spec(self) -> PreprocessingSpec:
        """The image part as a :class:`~medfocal.data.PreprocessingSpec` (what ``medfocal infer`` repeats).

        ``inference_transforms(spec)`` then loads, orients, resamples and scales the image exactly as
        :func:`detection_transforms` does before the box steps; the 2D ``zoom`` is not in it (the
        detection prediction head applies it and scales the boxes back).
        """
        return PreprocessingSpec(
            modality=self.modality,
            spatial_dims=self.spatial_dims,
            orientation=self.orientation if self.spatial_dims == 3 else None,
            spacing=tuple(self.spacing) if self.spatial_dims == 3 and self.spacing is not None else None,
            window=tuple(self.window) if self.modality == "ct" else None,
            intensity_range=tuple(self.intensity_range) if self.modality != "ct" else None,
            reader="PILReader" if self.spatial_dims == 2 else None,
        )


def _load(spec: BoxPreprocessing) -> list[Any]:
    reader = "PILReader" if spec.spatial_dims == 2 else None
    steps: list[Any] = [
        LoadImaged(keys="image", reader=reader, image_only=True),
        EnsureChannelFirstd(keys="image"),
        EnsureTyped(keys=["image", "boxes"], dtype=torch.float32),
        EnsureTyped(keys="labels", dtype=torch.long),
        StandardizeEmptyBoxd(box_keys="boxes", box_ref_image_keys="image"),
    ]
    if spec.spatial_dims == 3 and spec.orientation:
        steps.append(Orientationd(keys="image", axcodes=spec.orientation))
    if spec.spatial_dims == 3 and spec.spacing is not None:
        steps.append(Spacingd(keys="image", pixdim=list(spec.spacing), mode="bilinear"))
    if spec.modality == "ct":
        lo, hi = spec.window
        steps.append(ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    else:
        lo, hi = spec.intensity_range
        steps.append(ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0))
    steps.append(ConvertBoxToStandardModed(box_keys="boxes", mode=spec.box_mode))
    if spec.world_coordinates:
        steps.append(
            WorldBoxToImaged(box_keys="boxes", box_ref_image_keys="image", lps=spec.affine_lps_to_ras)
        )
    if spec.zoom is not None and spec.zoom != 1.0:
        steps.append(
            ZoomBoxd(
                image_keys="image",
                box_keys="boxes",
                box_ref_image_keys="image",
                # per axis: MONAI's ZoomBoxd(keep_size=False) fails on a scalar zoom
                zoom=[float(spec.zoom)] * spec.spatial_dims,
                keep_size=False,
            )
        )
    steps.append(_clip())
    return steps


def _clip() -> ClipBoxToImaged:
    return ClipBoxToImaged(
        box_keys="boxes", label_keys="labels", box_ref_image_keys="image", remove_empty=True
    )


def detection_transforms(
    spec: BoxPreprocessing,
    train: bool = False,
    patch_size: Sequence[int] | None = None,
    num_samples: int = 1,
    flip_prob: float = 0.5,
    rot90_prob: float = 0.0,
    intensity_prob: float = 0.0,
) -> Compose:
    """The transform chain of the module docstring (``train=False``: deterministic preprocessing only).

    Args:
        spec: the preprocessing.
        train: add the random crop and augmentations.
        patch_size: training crop size (``RandCropBoxByPosNegLabeld``, half the centres on boxes; smaller
            images are first padded at the end); None trains on whole images.
        num_samples: crops per image (each a separate training sample).
        flip_prob: probability of a flip, per axis.
        rot90_prob: probability of a 90-degree rotation in the plane of axes (0, 1) (needs a square
            ``patch_size`` in that plane so batches keep one shape; ignored otherwise).
        intensity_prob: probability of intensity scaling and shifting (+-10 %).
    """
    steps = _load(spec)
    if not train:
        return Compose(steps)
    if patch_size is not None:
        steps += [
            # images smaller than the patch are padded at the end (0 after scaling), so boxes keep their place
            SpatialPadd(keys="image", spatial_size=list(patch_size), method="end"),
            RandCropBoxByPosNegLabeld(
                image_keys="image",
                box_keys="boxes",
                label_keys="labels",
                spatial_size=list(patch_size),
                whole_box=True,
                num_samples=num_samples,
                pos=1,
                neg=1,
            ),
            _clip(),
        ]
    for axis in range(spec.spatial_dims):
        steps.append(
            RandFlipBoxd(
                image_keys="image",
                box_keys="boxes",
                box_ref_image_keys="image",
                prob=flip_prob,
                spatial_axis=axis,
            )
        )
    square = patch_size is not None and int(patch_size[0]) == int(patch_size[1])
    if rot90_prob > 0 and square:
        steps.append(
            RandRotateBox90d(
                image_keys="image", box_keys="boxes", box_ref_image_keys="image", prob=rot90_prob, max_k=3
            )
        )
    if intensity_prob > 0:
        steps += [
            RandScaleIntensityd(keys="image", factors=0.1, prob=intensity_prob),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=intensity_prob),
        ]
    steps.append(_clip())
    return Compose(steps)
