"""Random training augmentations from MONAI transforms: what :class:`Augmentation` describes.

:func:`augmentation_transforms` turns an :class:`Augmentation` into MONAI dictionary transforms for a
patch (or a whole image): spatial ones (mirroring, 90-degree rotations, rotation/scaling, elastic
deformation) move the image and its masks together, masks with nearest-neighbour interpolation so
that label values are kept; intensity ones (brightness, contrast/gamma, histogram shift, colour jitter,
low-resolution simulation, noise) touch the image only. :func:`medfocal.data.transforms.train_transforms`
places them after the patch sampling.

Example::

    aug = Augmentation(elastic_prob=0.2, lowres_prob=0.25)        # nnU-Net's elastic and low-res
    steps = augmentation_transforms(aug, ["image"], ["label"], spatial_dims=3, modality="mri")

Isensee et al., nnU-Net, Nature Methods 18:203-211, 2021 (the augmentation set and its parameters);
Simard et al., Best practices for convolutional neural networks applied to visual document analysis,
ICDAR 2003 (elastic deformation: a smoothed random displacement field).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai.transforms import (
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandHistogramShiftd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
)

__all__ = [
    "COLOUR_MODALITIES",
    "NNUNET_ELASTIC_ALPHA",
    "Augmentation",
    "augmentation_transforms",
    "elastic_2d_magnitude",
]

COLOUR_MODALITIES = ("rgb", "dermoscopy", "histology")
#: nnU-Net v1's elastic ``alpha`` range per number of spatial dimensions (``default_*D_augmentation_params``)
NNUNET_ELASTIC_ALPHA = {2: (0.0, 200.0), 3: (0.0, 900.0)}


@dataclass
class Augmentation:
    """Random augmentations of the training split (probabilities per sample; 0 disables one).

    Spatial ones (flip, rot90, affine, elastic) move image and label together; intensity ones touch the
    image only. ``colour_prob`` applies channel-wise random scale/shift (a colour jitter; MONAI has no
    HED stain jitter, this is its closest stand-in for histology) and is used for RGB-like modalities
    only.

    Elastic deformation (``elastic_prob``; off by default) displaces every voxel by a random field:
    uniform noise in [-1, 1] per voxel and axis, smoothed by a Gaussian of standard deviation
    ``sigma`` ~ U(``elastic_sigma``) voxels and multiplied by ``alpha`` ~ U(``elastic_magnitude``)
    voxels, as nnU-Net's (batchgenerators') ``elastic_deform_coordinates``. ``elastic_magnitude``
    None takes nnU-Net v1's defaults (:data:`NNUNET_ELASTIC_ALPHA`: 0-900 in 3D, 0-200 in 2D; sigma
    9-13); its V2 trainer and nnU-Net v2 switched elastic deformation off. 3D: MONAI
    ``Rand3DElasticd`` computes exactly that field. 2D: MONAI ``Rand2DElasticd`` (random offsets on
    control points, B-spline interpolated) with control points every ``2 * mean(sigma)`` pixels and
    offsets of the standard deviation the smoothed 2D field has, ``alpha / (sigma * sqrt(12 * pi))``
    (:func:`elastic_2d_magnitude`). Labels are resampled with nearest neighbour (label values kept);
    the border is reflected.

    Low-resolution simulation (``lowres_prob``; off by default): MONAI ``RandSimulateLowResolutiond``,
    nnU-Net's ``SimulateLowResolutionTransform``: the image is downsampled by a factor drawn from
    ``lowres_zoom`` (nearest neighbour), then upsampled back to its grid (linear), all channels and all
    axes together (nnU-Net draws per channel and may skip an anisotropic axis).
    """

    flip_prob: float = 0.5
    rot90_prob: float = 0.5
    affine_prob: float = 0.2
    rotate_degrees: float = 15.0
    scale_range: float = 0.1
    elastic_prob: float = 0.0
    elastic_sigma: tuple[float, float] = (9.0, 13.0)
    elastic_magnitude: tuple[float, float] | None = None
    noise_prob: float = 0.1
    noise_std: float = 0.05
    contrast_prob: float = 0.2
    contrast_gamma: tuple[float, float] = (0.7, 1.5)
    histogram_shift_prob: float = 0.0
    intensity_prob: float = 0.2
    intensity_factor: float = 0.1
    colour_prob: float = 0.3
    lowres_prob: float = 0.0
    lowres_zoom: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        for name in ("elastic_sigma", "elastic_magnitude", "lowres_zoom", "contrast_gamma"):
            if getattr(self, name) is None:
                continue
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or value[0] > value[1] or value[0] < 0:
                raise ValueError(
                    f"Augmentation.{name}: expected (low, high) with 0 <= low <= high, got {list(value)}"
                )
            setattr(self, name, value)
        if self.elastic_sigma[0] <= 0:
            raise ValueError(
                f"Augmentation.elastic_sigma: expected positive values, got {list(self.elastic_sigma)}"
            )
        if not 0 < self.lowres_zoom[0] <= self.lowres_zoom[1] <= 1:
            raise ValueError(
                f"Augmentation.lowres_zoom: expected 0 < low <= high <= 1, got {list(self.lowres_zoom)}"
            )


def elastic_2d_magnitude(sigma: float, alpha: float) -> float:
    """Standard deviation (pixels) of nnU-Net's 2D displacement: ``alpha`` x U(-1, 1) noise smoothed by
    a normalised Gaussian of ``sigma`` pixels, ``alpha * sqrt(1/3 * sum(g**2))``, with
    ``sum(g**2) = 1 / (4 * pi * sigma**2)`` for a 2D Gaussian kernel ``g``."""
    return float(alpha / (sigma * math.sqrt(12.0 * math.pi)))


def _elastic(aug: Augmentation, keys: list[str], modes: list[str], spatial_dims: int) -> list:
    alpha = aug.elastic_magnitude if aug.elastic_magnitude is not None else NNUNET_ELASTIC_ALPHA[spatial_dims]
    if spatial_dims == 3:
        return [
            Rand3DElasticd(
                keys,
                sigma_range=aug.elastic_sigma,
                magnitude_range=alpha,
                prob=aug.elastic_prob,
                mode=modes,
                padding_mode="reflection",
            )
        ]
    sigma = float(np.mean(aug.elastic_sigma))
    low, high = (elastic_2d_magnitude(sigma, a) for a in alpha)
    return [
        Rand2DElasticd(
            keys,
            spacing=(2.0 * sigma, 2.0 * sigma),
            magnitude_range=(low, high),
            prob=aug.elastic_prob,
            mode=modes,
            padding_mode="reflection",
        )
    ]


def _spatial(
    aug: Augmentation,
    keys: list[str],
    modes: list[str],
    spatial_dims: int,
    patch_size: Sequence[int] | None,
) -> list:
    out: list = []
    if aug.flip_prob > 0:
        out += [RandFlipd(keys, prob=aug.flip_prob, spatial_axis=axis) for axis in range(spatial_dims)]
    square = patch_size is None or int(patch_size[0]) == int(patch_size[1])
    if aug.rot90_prob > 0 and square:
        out.append(RandRotate90d(keys, prob=aug.rot90_prob, max_k=3, spatial_axes=(0, 1)))
    if aug.affine_prob > 0:
        angle = float(np.deg2rad(aug.rotate_degrees))
        rotate = (angle,) if spatial_dims == 2 else (angle, angle, angle)
        out.append(
            RandAffined(
                keys,
                prob=aug.affine_prob,
                rotate_range=rotate,
                scale_range=(aug.scale_range,) * spatial_dims,
                mode=modes,
                padding_mode="zeros",
            )
        )
    if aug.elastic_prob > 0:
        out += _elastic(aug, keys, modes, spatial_dims)
    return out


def augmentation_transforms(
    aug: Augmentation,
    image_keys: Sequence[str],
    mask_keys: Sequence[str] = (),
    spatial_dims: int = 3,
    modality: str = "generic",
    patch_size: Sequence[int] | None = None,
) -> list:
    """MONAI dictionary transforms for ``aug``: spatial ones on all keys, intensity ones on images.

    Args:
        aug: the augmentation description.
        image_keys: keys resampled (bi/trilinear) and intensity-augmented.
        mask_keys: label and region-mask keys, moved with the images by the spatial transforms and
            resampled with nearest neighbour (values kept), never intensity-augmented.
        spatial_dims: 2 or 3.
        modality: ``colour_prob`` applies to :data:`COLOUR_MODALITIES` only.
        patch_size: the size of what reaches the augmentations (the crop's ``roi_size``); a rectangular
            one (``(32, 16)``) would turn into ``(16, 32)`` half the time and break batching, so 90-degree
            rotations (only ever in the (0, 1) plane) are left out there (nnU-Net does the same). ``None``
            (whole images of unknown size) keeps them: whole images batch only when all have one shape.

    Returns:
        a list of MONAI transforms (empty when every probability is 0).
    """
    image_keys, mask_keys = list(image_keys), list(mask_keys)
    keys = image_keys + mask_keys
    modes = ["bilinear"] * len(image_keys) + ["nearest"] * len(mask_keys)
    out = _spatial(aug, keys, modes, spatial_dims, patch_size)
    if not image_keys:
        return out
    if aug.intensity_prob > 0:
        out.append(RandScaleIntensityd(image_keys, factors=aug.intensity_factor, prob=aug.intensity_prob))
        out.append(RandShiftIntensityd(image_keys, offsets=aug.intensity_factor, prob=aug.intensity_prob))
    if aug.contrast_prob > 0:
        out.append(RandAdjustContrastd(image_keys, prob=aug.contrast_prob, gamma=tuple(aug.contrast_gamma)))
    if aug.histogram_shift_prob > 0:
        out.append(RandHistogramShiftd(image_keys, num_control_points=10, prob=aug.histogram_shift_prob))
    if aug.colour_prob > 0 and modality in COLOUR_MODALITIES:
        out.append(RandScaleIntensityd(image_keys, factors=0.15, prob=aug.colour_prob, channel_wise=True))
        out.append(RandShiftIntensityd(image_keys, offsets=0.05, prob=aug.colour_prob, channel_wise=True))
    if aug.lowres_prob > 0:
        out.append(
            RandSimulateLowResolutiond(
                image_keys,
                prob=aug.lowres_prob,
                downsample_mode="nearest",
                upsample_mode="bilinear" if spatial_dims == 2 else "trilinear",
                zoom_range=aug.lowres_zoom,
            )
        )
    if aug.noise_prob > 0:
        out.append(RandGaussianNoised(image_keys, prob=aug.noise_prob, std=aug.noise_std))
    return out
