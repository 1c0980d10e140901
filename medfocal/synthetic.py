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
    "make_box_images_2d",
    "make_classification_npz",
    "make_lesion_dataset",
    "make_lesion_images_2d",
    "make_nodule_volumes",
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


# ----------------------------------------------------------------------------------------------- detection
_VOC_COLOURS = {"red_disc": (200, 40, 40), "green_ellipse": (40, 170, 60), "blue_dot": (40, 60, 210)}
# radius range in pixels (x, y semi-axes drawn independently for ellipses)
_VOC_RADII = {"red_disc": (6.0, 9.0), "green_ellipse": (8.0, 12.0), "blue_dot": (3.0, 4.5)}


def _voc_xml(name: str, size: tuple[int, int], objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    parts = [
        "<annotation>",
        "  <folder>JPEGImages</folder>",
        f"  <filename>{name}</filename>",
        f"  <size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>",
    ]
    for cls, (xmin, ymin, xmax, ymax) in objects:
        parts += [
            "  <object>",
            f"    <name>{cls}</name><difficult>0</difficult>",
            f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def make_box_images_2d(
    root: str | Path,
    n: tuple[int, int, int] = (8, 4, 0),
    size: tuple[int, int] = (96, 80),
    classes: Sequence[str] = ("red_disc", "green_ellipse", "blue_dot"),
    objects_per_image: tuple[int, int] = (2, 5),
    seed: int = 0,
) -> Path:
    """Write a Pascal VOC folder of RGB images with coloured discs and ellipses of 2-3 classes.

    Layout: ``JPEGImages/img_000.png`` (PNG, so pixels are exact), ``Annotations/img_000.xml`` (VOC,
    1-based inclusive pixel boxes: the tight box of the drawn pixels), ``ImageSets/Main/{train,val,test}.txt``
    with ``n = (train, val, test)`` images. ``size`` is ``(width, height)``. Objects do not overlap.
    Classes differ in colour and size (``blue_dot`` small, rare by construction: one draw in three is
    re-drawn as the common class). Returns ``root``.
    """
    from PIL import Image

    root = Path(root)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ids: list[str] = []
    for i in range(sum(n)):
        img = np.empty((height, width, 3), dtype=np.float32)
        img[:] = (235.0, 215.0, 200.0)
        img += rng.normal(0, 6, size=img.shape)
        occupied = np.zeros((height, width), dtype=bool)
        objects: list[tuple[str, tuple[int, int, int, int]]] = []
        for _ in range(int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))):
            cls = str(classes[int(rng.integers(len(classes)))])
            if cls == classes[-1] and len(classes) > 2 and rng.random() < 0.33:
                cls = str(classes[0])
            lo, hi = _VOC_RADII.get(cls, (5.0, 9.0))
            rx, ry = rng.uniform(lo, hi), rng.uniform(lo, hi) * (0.6 if "ellipse" in cls else 1.0)
            for _attempt in range(30):
                cx, cy = rng.uniform(rx + 1, width - rx - 2), rng.uniform(ry + 1, height - ry - 2)
                mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
                if not (mask & occupied).any():
                    break
            else:
                continue
            occupied |= np.pad(mask, 2)[:-4, :-4] | np.pad(mask, 2)[4:, 4:] | mask
            img[mask] = np.asarray(_VOC_COLOURS.get(cls, (90, 90, 90)), dtype=np.float32) + rng.normal(
                0, 6, size=(int(mask.sum()), 3)
            )
            rows, cols = np.nonzero(mask)
            objects.append(
                (cls, (int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1, int(rows.max()) + 1))
            )
        name = f"img_{i:03d}"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "JPEGImages" / f"{name}.png")
        (root / "Annotations" / f"{name}.xml").write_text(_voc_xml(f"{name}.png", (width, height), objects))
        ids.append(name)
    start = 0
    for split, count in zip(("train", "val", "test"), n):
        if count:
            (root / "ImageSets/Main" / f"{split}.txt").write_text(
                "\n".join(ids[start : start + count]) + "\n"
            )
        start += count
    return root


def make_nodule_volumes(
    root: str | Path,
    n: tuple[int, int, int] = (4, 2, 0),
    shape: Sequence[int] = (48, 48, 24),
    spacing: Sequence[float] = (0.8, 0.8, 1.5),
    radius_mm: tuple[float, float] = (2.5, 6.0),
    nodules_per_volume: tuple[int, int] = (1, 3),
    oblique: bool = True,
    seed: int = 0,
) -> Path:
    """Write small CT-like volumes with spherical nodules and MONAI's box JSON (the LUNA16 split format).

    Layout: ``images/vol_000.nii.gz`` (HU: lung parenchyma about -850, nodules about +40, noise) and
    ``dataset.json``::

        {"labels": {"0": "nodule"},
         "training":   [{"image": "images/vol_000.nii.gz", "box": [[x, y, z, w, h, d]], "label": [0]}],
         "validation": [...], "test": [...]}

    Boxes are ``cccwhd`` in world millimetres of the NIfTI (RAS) affine: a nodule of radius ``r`` mm
    centred at world point ``c`` has box ``[*c, 2r, 2r, 2r]``; the nodules are spheres in millimetres, so
    this holds for any orientation. With ``oblique`` each volume gets its own rotated, x-flipped (non-RAS)
    affine (:func:`oblique_affine`). ``n = (train, validation, test)`` volumes. Returns ``root``.
    """
    import nibabel as nib

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), axis=-1)
    entries: list[dict[str, object]] = []
    for i in range(sum(n)):
        angles = (10.0 + 4 * i, -7.0, 15.0 - 3 * i) if oblique else (0.0, 0.0, 0.0)
        affine = oblique_affine(spacing, angles, flip_x=oblique)
        volume = -850.0 + rng.normal(0, 40, size=shape)
        boxes: list[list[float]] = []
        centres: list[np.ndarray] = []
        for _ in range(int(rng.integers(nodules_per_volume[0], nodules_per_volume[1] + 1))):
            r = float(rng.uniform(*radius_mm))
            r_vox = r / spacing_arr
            margin = np.ceil(r_vox).astype(int) + 2
            for _attempt in range(30):
                c = np.array([rng.uniform(m, s - 1 - m) for m, s in zip(margin, shape)])
                if all(np.linalg.norm((c - o) * spacing_arr) > r + 2 * radius_mm[1] + 2 for o in centres):
                    break
            else:
                continue
            centres.append(c)
            inside = (((grid - c.astype(np.float32)) / r_vox.astype(np.float32)) ** 2).sum(-1) <= 1.0
            volume[inside] = 40.0 + rng.normal(0, 20, size=int(inside.sum()))
            world = affine[:3, :3] @ c + affine[:3, 3]
            boxes.append([float(v) for v in world] + [2 * r] * 3)
        name = f"vol_{i:03d}"
        nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), root / "images" / f"{name}.nii.gz")
        entries.append({"image": f"images/{name}.nii.gz", "box": boxes, "label": [0] * len(boxes)})
    meta: dict[str, object] = {"name": "medfocal-synthetic-nodules", "labels": {"0": "nodule"}}
    start = 0
    for key, count in zip(("training", "validation", "test"), n):
        meta[key] = entries[start : start + count]
        start += count
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root
