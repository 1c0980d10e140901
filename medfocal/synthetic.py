"""Small synthetic, class-imbalanced datasets in the layouts of the public ones.

Used by the demo (``medfocal demo``), the notebooks and the test suite, so that nothing needs a
download. The data are not clinical: they imitate what matters for the losses and the I/O code —
tiny lesions (well under 2 % of the voxels), anisotropic spacing, oblique and non-RAS affines,
several MRI-like channels, and rare classes.

Example:
    >>> import tempfile
    >>> from medfocal.synthetic import make_lesion_dataset
    >>> root = make_lesion_dataset(tempfile.mkdtemp(), n_train=2, n_test=1, shape=(24, 24, 16))
    >>> sorted(p.name for p in root.iterdir())
    ['dataset.json', 'imagesTr', 'imagesTs', 'labelsTr', 'labelsTs']
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "make_classification_npz",
    "make_lesion_dataset",
    "make_lesion_images_2d",
    "oblique_affine",
    "synthetic_lesion_volume",
]


def oblique_affine(
    spacing: Sequence[float], angles_deg: Sequence[float] = (12.0, -8.0, 20.0), flip_x: bool = True
) -> np.ndarray:
    """A 4x4 voxel-to-world affine with rotation, anisotropic spacing, a non-RAS axis flip and an offset."""
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    if flip_x:
        rot = rot @ np.diag([-1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([float(s) for s in spacing])
    affine[:3, 3] = [31.5, -17.25, 8.0]
    return affine


def synthetic_lesion_volume(
    shape: Sequence[int],
    spacing: Sequence[float],
    rng: np.random.Generator,
    n_channels: int = 1,
    n_classes: int = 2,
    n_lesions: tuple[int, int] = (1, 4),
    lesion_radius_mm: tuple[float, float] = (2.5, 5.0),
) -> tuple[np.ndarray, np.ndarray]:
    """One case: an MRI-like image ``(*shape, n_channels)`` float32 and a label map ``shape`` uint8.

    The image is a smooth "organ" ellipsoid with a bias field and noise; each lesion is an
    ellipsoid (a sphere in millimetres) whose class (1 .. n_classes-1) sets its brightness per channel.
    """
    shape = tuple(int(s) for s in shape)
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), axis=-1)
    centre = (np.asarray(shape) - 1) / 2.0
    organ = (((grid - centre) / (np.asarray(shape) * 0.42)) ** 2).sum(-1) <= 1.0
    label = np.zeros(shape, dtype=np.uint8)
    n = int(rng.integers(n_lesions[0], n_lesions[1] + 1))
    for _ in range(n):
        radius_vox = rng.uniform(*lesion_radius_mm) / spacing_arr
        margin = np.ceil(radius_vox).astype(int) + 2
        for _attempt in range(20):
            c = np.array([rng.integers(m, s - m) for m, s in zip(margin, shape)], dtype=np.float32)
            if organ[tuple(c.astype(int))]:
                break
        inside = (((grid - c) / radius_vox.astype(np.float32)) ** 2).sum(-1) <= 1.0
        cls = int(rng.integers(1, n_classes)) if n_classes > 2 else 1
        label[inside & organ] = cls
    bias = 1.0 + 0.15 * np.sin(grid[..., 0] / shape[0] * math.pi) * np.cos(grid[..., 1] / shape[1] * math.pi)
    channels = []
    for ch in range(n_channels):
        img = np.where(organ, 1.0, 0.15).astype(np.float32)
        for cls in range(1, n_classes):
            # each class is bright in channel 0; later channels separate the classes by contrast
            contrast = 1.2 + 0.6 * cls if ch == 0 else 1.0 + ((cls + ch) % 3) * 0.8
            img = np.where(label == cls, contrast, img)
        img = img * bias + rng.normal(0.0, 0.12, size=shape)
        channels.append((img * 400.0 + 50.0).astype(np.float32))
    return np.stack(channels, axis=-1), label


def make_lesion_dataset(
    root: str | Path,
    n_train: int = 8,
    n_test: int = 2,
    shape: Sequence[int] = (48, 48, 32),
    spacing: Sequence[float] = (1.2, 0.9, 2.5),
    n_channels: int = 1,
    n_classes: int = 2,
    lesion_radius: tuple[float, float] = (2.5, 5.0),
    seed: int = 0,
    oblique: bool = True,
    layout: str = "decathlon",
) -> Path:
    """Write a Decathlon-style folder of small 3D lesion cases and return its path.

    Layout (``layout="decathlon"``)::

        root/dataset.json
        root/imagesTr/case_000.nii.gz   (x, y, z) float32, or (x, y, z, c) when n_channels > 1
        root/labelsTr/case_000.nii.gz   uint8 class indices
        root/imagesTs/case_008.nii.gz   held-out cases (listed under "test" in dataset.json)
        root/labelsTs/case_008.nii.gz   their ground truth, for ``medfocal evaluate``

    ``layout="nnunet"`` writes one file per channel instead (``case_000_0000.nii.gz``, ``..._0001``).
    Every case has its own slightly different oblique, non-RAS affine with the given spacing.
    """
    import nibabel as nib

    if layout not in ("decathlon", "nnunet"):
        raise ValueError(f"layout must be 'decathlon' or 'nnunet', not {layout!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    training, test = [], []
    for i in range(n_train + n_test):
        image, label = synthetic_lesion_volume(
            shape, spacing, rng, n_channels=n_channels, n_classes=n_classes, lesion_radius_mm=lesion_radius
        )
        angles = (12.0 + 3 * i, -8.0, 20.0 - 2 * i) if oblique else (0.0, 0.0, 0.0)
        affine = oblique_affine(spacing, angles, flip_x=oblique)
        split = "Tr" if i < n_train else "Ts"
        name = f"case_{i:03d}"
        img_rel = f"./images{split}/{name}.nii.gz"
        lbl_rel = f"./labels{split}/{name}.nii.gz"
        if layout == "decathlon" or n_channels == 1:
            data = image[..., 0] if n_channels == 1 else image
            nib.save(nib.Nifti1Image(data, affine), root / img_rel)
        else:
            for ch in range(n_channels):
                nib.save(
                    nib.Nifti1Image(image[..., ch], affine), root / f"images{split}/{name}_{ch:04d}.nii.gz"
                )
        lbl_img = nib.Nifti1Image(label, affine)
        lbl_img.set_data_dtype(np.uint8)
        nib.save(lbl_img, root / lbl_rel)
        if split == "Tr":
            training.append({"image": img_rel, "label": lbl_rel})
        else:
            test.append(img_rel)
    labels = {"0": "background"}
    labels.update({str(c): ("lesion" if n_classes == 2 else f"lesion_{c}") for c in range(1, n_classes)})
    meta = {
        "name": "medfocal-synthetic-lesions",
        "description": "Synthetic tiny-lesion MRI-like volumes (not clinical data)",
        "tensorImageSize": "4D" if n_channels > 1 else "3D",
        "modality": {str(c): f"MRI{c}" for c in range(n_channels)},
        "labels": labels,
        "numTraining": n_train,
        "numTest": n_test,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def _ellipse_mask(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.08, 0.22) * h, rng.uniform(0.08, 0.22) * w
    t = rng.uniform(0, math.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def make_lesion_images_2d(
    root: str | Path, n: int = 8, size: tuple[int, int] = (64, 64), rgb: bool = True, seed: int = 0
) -> Path:
    """Write paired folders ``images/case_000.png`` and ``masks/case_000.png`` (mask values {0, 255}).

    Dermoscopy-like: skin-toned background with texture, one darker elliptical lesion per image.
    """
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    skin = np.array([224.0, 172.0, 140.0])
    lesion = np.array([110.0, 70.0, 50.0])
    for i in range(n):
        mask = _ellipse_mask(size, rng)
        base = skin + rng.normal(0, 8, size=(*size, 3))
        img = np.where(mask[..., None], lesion + rng.normal(0, 10, size=(*size, 3)), base)
        img = np.clip(img, 0, 255).astype(np.uint8)
        if not rgb:
            img = img.mean(-1).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"case_{i:03d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"case_{i:03d}.png")
    return root


def make_classification_npz(
    path: str | Path,
    n: tuple[int, int, int] = (60, 20, 20),
    shape: Sequence[int] = (28, 28),
    n_classes: int = 3,
    imbalance: Sequence[float] = (0.7, 0.2, 0.1),
    rgb: bool = False,
    seed: int = 0,
) -> Path:
    """Write a MedMNIST-style ``.npz`` (``{train,val,test}_images`` uint8, ``_labels`` (N, 1) uint8).

    Class ``k`` images hold a bright blob whose size grows with ``k`` on a noisy background, so the
    task is learnable; ``imbalance`` gives the class frequencies. Works for 2D and 3D ``shape``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(imbalance) != n_classes:
        raise ValueError(f"imbalance has {len(imbalance)} entries, expected n_classes={n_classes}")
    rng = np.random.default_rng(seed)
    probs = np.asarray(imbalance, dtype=np.float64) / np.sum(imbalance)
    shape = tuple(int(s) for s in shape)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), axis=-1)
    arrays: dict[str, np.ndarray] = {}
    for split, count in zip(("train", "val", "test"), n):
        labels = rng.choice(n_classes, size=count, p=probs)
        # every class appears at least once per split, so stratification and AUROC are defined
        labels[:n_classes] = np.arange(n_classes)[: min(count, n_classes)]
        images = np.empty((count, *shape), dtype=np.float32)
        for j, k in enumerate(labels):
            centre = rng.uniform(0.35, 0.65, size=len(shape)) * np.asarray(shape)
            radius = (0.12 + 0.08 * k) * min(shape)
            blob = (((grid - centre) / radius) ** 2).sum(-1) <= 1.0
            images[j] = 60 + rng.normal(0, 18, size=shape) + 120 * blob
        images = np.clip(images, 0, 255).astype(np.uint8)
        if rgb:
            images = np.stack([images, (images * 0.8).astype(np.uint8), (images * 0.6).astype(np.uint8)], -1)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return path
