"""Writers of small test inputs for tests/data (NIfTI with oblique affines, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

OBLIQUE = np.array(
    [
        [-1.2, 0.1, 0.0, 10.0],
        [0.05, 0.9, 0.2, -5.0],
        [0.0, -0.1, 2.5, 3.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = OBLIQUE, dtype=None) -> Path:
    """Save ``data`` as NIfTI (nibabel only writes the test inputs; medfocal reads through MONAI)."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data), affine)
    if dtype is not None:
        img.set_data_dtype(dtype)
    nib.save(img, path)
    return path


def write_png(path: Path, data: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(data, dtype=np.uint8)).save(path)
    return path


def lesion_case(shape=(20, 18, 12), seed=0, n_classes=3) -> tuple[np.ndarray, np.ndarray]:
    """A float image with bright blobs and the matching label map of ``n_classes`` classes."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for c in range(1, n_classes):
        centre = rng.integers(3, np.array(shape) - 3)
        sl = tuple(slice(int(x) - 2, int(x) + 2) for x in centre)
        label[sl] = c
    image = rng.normal(0, 0.1, shape).astype(np.float32) + label.astype(np.float32)
    return image, label
