"""Shared file helpers: image suffixes and case ids, atomic writes, JSON conversion, voxel spacing.

One home for what training (``medfocal.data``), inference (``medfocal.inference``) and the CLI must agree
on, so that ``medfocal fit`` and ``medfocal infer`` find the same files:

- :data:`VOLUME_SUFFIXES` (NIfTI, NRRD, MetaImage), :data:`PHOTO_SUFFIXES` (2D photos),
  :data:`IMAGE_SUFFIXES` (both), :func:`image_suffix`, :func:`strip_suffix` / :func:`case_id_of`;
- :func:`atomic_path` and :func:`remove_stale_temporaries` (write to a temporary, ``os.replace`` it);
- :func:`to_plain` (nested containers, tensors, paths, enums, dataclass-like objects to JSON types);
- :func:`spacing_of` (voxel spacing of an affine, MONAI's ``affine_to_spacing``).

Example:
    >>> from medfocal.io import case_id_of, strip_suffix
    >>> case_id_of("scans/brain_017.nii.gz"), strip_suffix("ct_3.MHA")
    ('brain_017', 'ct_3')
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "PHOTO_SUFFIXES",
    "TMP_PREFIX",
    "VOLUME_SUFFIXES",
    "atomic_path",
    "case_id_of",
    "image_suffix",
    "is_photo",
    "remove_stale_temporaries",
    "spacing_of",
    "strip_suffix",
    "to_plain",
]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
# volumes with a geometry (affine) that MONAI's ITK reader loads; NIfTI first (longest suffix first)
VOLUME_SUFFIXES: tuple[str, ...] = (*NIFTI_SUFFIXES, ".nrrd", ".mha", ".mhd")
PHOTO_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
IMAGE_SUFFIXES: tuple[str, ...] = (*VOLUME_SUFFIXES, *PHOTO_SUFFIXES)

TMP_PREFIX = ".medfocal-tmp-"


def image_suffix(path: str | Path) -> str | None:
    """The image suffix of ``path`` as listed in :data:`IMAGE_SUFFIXES` (lower case), or ``None``."""
    name = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def is_photo(path: str | Path) -> bool:
    """Whether ``path`` is a 2D photo (PNG, JPEG, BMP, TIFF, GIF) rather than a volume."""
    return Path(path).name.lower().endswith(PHOTO_SUFFIXES)


def strip_suffix(name: str | Path) -> str:
    """File name without its image suffix (``case_001.nii.gz`` -> ``case_001``); other names lose ``.x``."""
    name = Path(name).name
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


case_id_of = strip_suffix
"""The case id of an image file: its name without folder and image suffix (same as :func:`strip_suffix`)."""


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (same suffix); on success ``os.replace`` it onto ``final``.

    On any exception the temporary file is removed and the exception propagates; ``final`` is untouched.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("done")
        >>> out.read_text()
        'done'
    """
    final = Path(final)
    suffix = "".join(final.suffixes[-2:]) if final.name.endswith(".nii.gz") else final.suffix
    tmp = final.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name[: -len(suffix) or None]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporaries left by a killed run (``SIGKILL`` skips ``finally``); returns how many."""
    n = 0
    for p in Path(folder).glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n


def to_plain(value: Any) -> Any:
    """Nested containers to JSON types: tuples to lists, tensors/arrays to lists, enums to their value,
    numpy scalars to numbers, objects with ``to_dict()`` to dicts, paths and anything else to ``str``.

    Example:
        >>> import numpy as np
        >>> to_plain({"roi": (64, 64), "w": np.float32(0.5), 3: Path("a")})
        {'roi': [64, 64], 'w': 0.5, '3': 'a'}
    """
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return to_plain(value.to_dict())
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def spacing_of(affine: Any, spatial_dims: int | None = None) -> tuple[float, ...]:
    """Voxel spacing (length of each axis' column of the affine) via MONAI's ``affine_to_spacing``.

    Args:
        affine: ``(d+1, d+1)`` affine (numpy or torch); a 4x4 affine of a 2D image gives 3 values unless
            ``spatial_dims`` is 2.
        spatial_dims: how many spacings to return (default: all of the affine's).
    """
    from monai.data.utils import affine_to_spacing

    affine = np.asarray(affine, dtype=np.float64)
    r = affine.shape[0] - 1
    spacing = affine_to_spacing(affine, r=r)
    return tuple(float(s) for s in np.asarray(spacing)[: spatial_dims or r])
