"""World (mm) <-> image (voxel) box conversion that stays right for oblique affines.

MONAI's ``AffineBoxToImageCoordinated`` maps the two corners of a box through the affine and takes their
min/max: exact for affines that only scale, flip and permute axes, but for a rotated (oblique) direction
matrix the result is neither the object's box nor a bounding box of the rotated world box. Here a box is
its centre and its size, with the centre mapped exactly through the affine and the size carried per
axis: image axis ``i`` takes the size of the world axis ``j`` it points along most (largest
``|direction[j, i]|``) divided by the voxel spacing ``s_i``. For axis-aligned affines (any flips and
permutations) this equals MONAI's corner mapping; for spheres (nodules) it is exact at any rotation; and
the two functions invert each other exactly.

Voxel coordinates are continuous with voxel ``k`` covering ``[k - 0.5, k + 0.5)`` mapped to the world
point ``affine @ k`` at its centre, as in MONAI (``AffineBox``) and nibabel.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["WorldBoxToImaged", "image_boxes_to_world", "world_boxes_to_image"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _axis_map(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(world axis of each image axis, spacing of each image axis)`` of a ``(D+1, D+1)`` affine."""
    linear = affine[:-1, :-1]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    axis = np.abs(direction).argmax(axis=0)
    if len(set(axis.tolist())) != len(axis):  # 45-degree ties: fall back to the identity pairing
        axis = np.arange(len(axis))
    return axis, spacing


def _as_affine(affine: np.ndarray | torch.Tensor, lps: bool) -> np.ndarray:
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if lps:
        if a.shape != (4, 4):
            raise ValueError(f"LPS world coordinates need a 3D (4x4) affine, got {a.shape}")
        a = _LPS_TO_RAS @ a  # voxel -> RAS -> LPS world (the sign flips are their own inverse)
    return a


def world_boxes_to_image(
    boxes: np.ndarray | torch.Tensor, affine: np.ndarray | torch.Tensor, lps: bool = False
) -> np.ndarray:
    """World corner boxes ``(N, 2D)`` (mm, ``xyzxyz``) -> voxel corner boxes of the image with ``affine``.

    Args:
        boxes: world boxes in MONAI standard (corner) mode.
        affine: voxel -> world (RAS) affine of the image, ``(D+1, D+1)``.
        lps: the world boxes are in ITK's LPS world (LUNA16) while ``affine`` is RAS (nibabel/MONAI).

    Returns:
        float64 ``(N, 2D)`` voxel boxes (corner mode).
    """
    a = _as_affine(affine, lps)
    b = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
    dims = a.shape[0] - 1
    b = b.reshape(-1, 2 * dims)
    centre_w = (b[:, :dims] + b[:, dims:]) / 2
    size_w = b[:, dims:] - b[:, :dims]
    centre_v = (np.linalg.inv(a) @ np.c_[centre_w, np.ones(len(b))].T).T[:, :dims]
    axis, spacing = _axis_map(a)
    size_v = size_w[:, axis] / spacing
    return np.c_[centre_v - size_v / 2, centre_v + size_v / 2]


def image_boxes_to_world(
    boxes: np.ndarray | torch.Tensor, affine: np.ndarray | torch.Tensor, lps: bool = False
) -> np.ndarray:
    """Voxel corner boxes -> world corner boxes (mm); the inverse of :func:`world_boxes_to_image`."""
    a = _as_affine(affine, lps)
    b = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
    dims = a.shape[0] - 1
    b = b.reshape(-1, 2 * dims)
    centre_v = (b[:, :dims] + b[:, dims:]) / 2
    size_v = b[:, dims:] - b[:, :dims]
    centre_w = (a @ np.c_[centre_v, np.ones(len(b))].T).T[:, :dims]
    axis, spacing = _axis_map(a)
    size_w = np.empty_like(size_v)
    size_w[:, axis] = size_v * spacing
    return np.c_[centre_w - size_w / 2, centre_w + size_w / 2]


class WorldBoxToImaged(MapTransform):
    """Dictionary transform: world corner boxes -> voxel boxes of the reference image's current affine.

    Use after ``Orientationd``/``Spacingd`` on the image (the MetaTensor's affine then describes the grid
    the network sees). See the module docstring for why not MONAI's ``AffineBoxToImageCoordinated``.

    Args:
        box_keys: keys of ``(N, 2D)`` world boxes in standard (corner) mode.
        box_ref_image_keys: key of the image (a MONAI ``MetaTensor``) whose affine is used.
        lps: world boxes in ITK's LPS convention (LUNA16).
    """

    def __init__(self, box_keys: KeysCollection, box_ref_image_keys: str, lps: bool = False) -> None:
        super().__init__(box_keys)
        self.ref = box_ref_image_keys
        self.lps = lps

    def __call__(self, data):
        d = dict(data)
        image = d[self.ref]
        if not isinstance(image, MetaTensor):
            raise ValueError(f"WorldBoxToImaged: {self.ref!r} must be a MONAI MetaTensor with an affine")
        for key in self.key_iterator(d):
            boxes = torch.as_tensor(d[key])
            converted = world_boxes_to_image(boxes, image.affine, self.lps)
            d[key] = torch.as_tensor(
                converted, dtype=boxes.dtype if boxes.is_floating_point() else torch.float32
            )
        return d
