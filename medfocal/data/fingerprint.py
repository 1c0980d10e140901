"""Dataset fingerprint: the numbers ``medfocal plan`` derives a training recipe from.

Segmentation (Decathlon, CSV, paired folders, case folders): per case the spacing and shape (on the RAS
grid for 3D volumes), per-channel intensity percentiles inside the foreground (label > 0), the label
values, voxels per class and the sizes of the connected components of each class (``scipy.ndimage``,
full connectivity), plus a modality guess. Classification (MedMNIST npz, ImageFolder, CSV): image
size, channels, dimensionality, class counts per split.

Images are read with medfocal's own transforms (:func:`medfocal.data.transforms.inference_transforms`,
no intensity change), so the fingerprint sees what training will see. Large datasets are sampled
(``max_cases``, evenly spaced, deterministic).

Example::

    fp = compute_fingerprint("drive/training")
    fp.save("plan.fingerprint.json"); print_fingerprint(fp)

Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 18:203-211, 2021 (the dataset fingerprint and its rules).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medfocal.data.autolayout import find_layout
from medfocal.data.layouts import CSVLayout, DecathlonLayout, ImageFolderLayout, Layout, MedMNISTLayout
from medfocal.data.transforms import MASK_KEYS

__all__ = ["Fingerprint", "compute_fingerprint", "guess_task", "print_fingerprint"]

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
_MRI_WORDS = ("mr", "flair", "t1", "t2", "adc", "dwi", "pd")
_SAMPLES_PER_CASE = 20000


@dataclass
class Fingerprint:
    """What ``plan`` needs to know about a dataset (JSON-serialisable; see the module docstring).

    Segmentation fields: ``spacings``/``shapes`` per case read, ``intensity`` per channel
    (``p00_5, p50, p99_5, mean, std`` inside the foreground), ``zero_fraction`` (share of exactly-zero
    voxels: skull-stripped MRI, black borders), ``label_values`` (raw stored values),
    ``class_fractions`` (voxel share per class index), ``components`` per class index (``per_case``,
    ``median``, ``p10``, ``p90``, ``min``, ``max`` voxels and ``median_mm``).
    Classification fields: ``image_shape``, ``class_counts`` (training split), ``split_sizes``.
    """

    task: str
    layout: str
    source: str
    spatial_dims: int
    in_channels: int
    modality: str
    num_cases: int
    cases_read: int = 0
    file_suffix: str = ""
    class_names: list[str] = field(default_factory=list)
    spacings: list[list[float]] = field(default_factory=list)
    shapes: list[list[int]] = field(default_factory=list)
    intensity: list[dict[str, float]] = field(default_factory=list)
    zero_fraction: float = 0.0
    label_values: list[int] = field(default_factory=list)
    class_fractions: list[float] = field(default_factory=list)
    components: dict[str, dict[str, float]] = field(default_factory=dict)
    #: the record key of the region masks (``fov``, ``mask``, ``brainmask``), None without
    region_mask_key: str | None = None
    image_shape: list[int] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def median_spacing(self) -> list[float]:
        """Median spacing per axis (mm; 1.0 for photos)."""
        return [float(v) for v in np.median(np.asarray(self.spacings, dtype=float), axis=0)]

    @property
    def has_region_mask(self) -> bool:
        """Whether the records carry region masks (field of view, brain mask)."""
        return self.region_mask_key is not None

    @property
    def median_shape(self) -> list[int]:
        """Median shape per axis (voxels)."""
        return [round(v) for v in np.median(np.asarray(self.shapes, dtype=float), axis=0)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        out = asdict(self)
        out["has_region_mask"] = self.has_region_mask
        if self.spacings:
            out["median_spacing"], out["median_shape"] = self.median_spacing, self.median_shape
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        """Inverse of :meth:`to_dict` (derived keys ignored)."""
        derived = ("median_spacing", "median_shape", "has_region_mask")
        return cls(**{k: v for k, v in data.items() if k not in derived})

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (temporary file + ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(self.to_dict(), handle, indent=2)
        os.replace(tmp, path)
        return path


def guess_task(layout: Layout) -> str:
    """``"classification"`` for npz/ImageFolder/CSV with non-image labels, else ``"segmentation"``."""
    if isinstance(layout, (MedMNISTLayout, ImageFolderLayout)):
        return "classification"
    if isinstance(layout, CSVLayout):
        first = layout.records()[0]["label"]
        return "segmentation" if isinstance(first, str) and Path(first).suffix else "classification"
    return "segmentation"


def _first_path(image: Any) -> str:
    return str(image[0] if isinstance(image, list) else image)


def _suffix(path: str) -> str:
    low = path.lower()
    return ".nii.gz" if low.endswith(".nii.gz") else Path(low).suffix


def _declared_modality(layout: Layout) -> str | None:
    if not isinstance(layout, DecathlonLayout):
        return None
    meta = json.loads(Path(layout.json_path).read_text())
    names = " ".join(str(v) for v in (meta.get("modality") or meta.get("channel_names") or {}).values())
    low = names.lower()
    if "ct" in low.split() or low.strip() == "ct":
        return "ct"
    if any(w in low for w in _MRI_WORDS):
        return "mri"
    return None


def _guess_modality(suffix: str, channels: int, declared: str | None, low_value: float) -> str:
    if suffix in PHOTO_SUFFIXES:
        return "rgb" if channels == 3 else "grey"
    if declared:
        return declared
    return "ct" if low_value < -500 else "mri"  # HU air is -1000; MRI intensities are >= 0 or z-scored


def _evenly(items: list, n: int) -> list:
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


def _read_case(record: dict[str, Any], dims: int, photo: bool) -> tuple[np.ndarray, np.ndarray, list[float]]:
    from medfocal.data.transforms import PreprocessingSpec, inference_transforms

    spec = PreprocessingSpec(
        modality="generic",
        spatial_dims=dims,
        orientation="" if photo else "RAS",
        reader="PILReader" if photo else None,
    )
    item = inference_transforms(spec, ("image", "label"))(
        {"image": record["image"], "label": record["label"]}
    )
    image, label = item["image"], item["label"]
    spacing = [1.0] * dims if photo else [float(v) for v in image.pixdim[:dims]]
    return image.numpy(), label.numpy()[0], spacing


def _component_stats(sizes: list[float], cases: int, voxel_mm: float) -> dict[str, float]:
    if not sizes:
        return {"per_case": 0.0}
    arr = np.asarray(sizes, dtype=float)
    return {
        "per_case": len(arr) / cases,
        "median": float(np.median(arr)),
        "p10": float(np.percentile(arr, 10)),
        "p90": float(np.percentile(arr, 90)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "median_mm": float(np.median(arr) * voxel_mm),
    }


def _segmentation(layout: Layout, records: list[dict[str, Any]], max_cases: int) -> Fingerprint:
    labelled = [r for r in records if "label" in r and r.get("split") != "test"]
    if not labelled:
        raise ValueError(f"{layout.describe()}: no labelled training cases to fingerprint")
    suffix = _suffix(_first_path(labelled[0]["image"]))
    photo = suffix in PHOTO_SUFFIXES
    dims = 2 if photo else 3
    rng = np.random.default_rng(0)
    spacings, shapes, counts = [], [], np.zeros(0)
    samples: list[list[np.ndarray]] = []
    comps: dict[int, list[float]] = {}
    zeros, total, low = 0, 0, np.inf
    values: set[int] = set()
    chosen = _evenly(labelled, max_cases)
    for record in chosen:
        image, label, spacing = _read_case(record, dims, photo)
        spacings.append(spacing)
        shapes.append([int(s) for s in label.shape])
        lab = np.rint(label).astype(np.int64)
        values |= {int(v) for v in np.unique(lab)}
        fg = lab > 0
        if not fg.any():
            fg = np.any(image != 0, axis=0)
        for c in range(image.shape[0]):
            if len(samples) <= c:
                samples.append([])
            voxels = image[c][fg]
            take = min(len(voxels), _SAMPLES_PER_CASE)
            samples[c].append(rng.choice(voxels, take, replace=False) if take else voxels)
        zeros += int((image == 0).all(axis=0).sum())
        total += int(np.prod(lab.shape))
        low = min(low, float(np.percentile(image, 1)))
        counts = np.pad(counts, (0, max(0, lab.max() + 1 - len(counts))))
        counts[: lab.max() + 1] += np.bincount(lab.ravel())
        structure = ndimage.generate_binary_structure(dims, dims)
        for value in np.unique(lab[lab > 0]):
            components, _n = ndimage.label(lab == value, structure)
            comps.setdefault(int(value), []).extend(np.bincount(components.ravel())[1:].tolist())
    intensity = []
    for chunks in samples:
        v = np.concatenate(chunks).astype(np.float64)
        p = np.percentile(v, [0.5, 50, 99.5]) if len(v) else np.zeros(3)
        intensity.append(
            {
                "p00_5": float(p[0]),
                "p50": float(p[1]),
                "p99_5": float(p[2]),
                "mean": float(v.mean()) if len(v) else 0.0,
                "std": float(v.std()) if len(v) else 1.0,
            }
        )
    voxel_mm = float(np.prod(np.median(np.asarray(spacings), axis=0)))
    # binary masks stored as {0, 255} (or JPEG-blurred) are one foreground class
    binary_photo = photo and max(values) > 1 and (len(values) == 2 or max(values) >= 128)
    if binary_photo:
        fg_count = counts[1:].sum()
        counts = np.asarray([counts[0], fg_count])
        merged = [s for k in comps for s in comps[k]] if len(values) == 2 else []
        comps = {1: merged} if merged else {1: _photo_components(chosen, dims)}
    declared = layout.class_names() or []
    n_classes = max(len(counts), len(declared), 2)
    counts = np.pad(counts, (0, n_classes - len(counts)))
    return Fingerprint(
        task="segmentation",
        layout=type(layout).__name__,
        source=layout.describe(),
        spatial_dims=dims,
        in_channels=len(intensity),
        modality=_guess_modality(suffix, len(intensity), _declared_modality(layout), low),
        num_cases=len(labelled),
        cases_read=len(chosen),
        file_suffix=suffix,
        class_names=list(declared) or ["background"] + [f"class_{i}" for i in range(1, n_classes)],
        spacings=spacings,
        shapes=shapes,
        intensity=intensity,
        zero_fraction=zeros / max(total, 1),
        label_values=sorted(values),
        class_fractions=[float(c) for c in counts / max(counts.sum(), 1)],
        components={str(k): _component_stats(v, len(chosen), voxel_mm) for k, v in sorted(comps.items())},
        region_mask_key=next((k for k in MASK_KEYS if k in labelled[0]), None),
        split_sizes={
            "train": sum(1 for r in labelled if r.get("split") == "train"),
            "val": sum(1 for r in labelled if r.get("split") == "val"),
            "unsplit": sum(1 for r in labelled if r.get("split") is None),
        },
    )


def _photo_components(records: list[dict[str, Any]], dims: int) -> list[float]:
    """Component sizes of JPEG-like masks binarised at 127 (many stored values)."""
    sizes: list[float] = []
    for record in records:
        _, label, _ = _read_case(record, dims, True)
        components, _ = ndimage.label(label > 127, ndimage.generate_binary_structure(dims, dims))
        sizes.extend(np.bincount(components.ravel())[1:].tolist())
    return sizes


def _classification(layout: Layout, records: list[dict[str, Any]], max_cases: int) -> Fingerprint:
    labels = [r["label"] for r in records if r.get("split") in ("train", None)]
    names = layout.class_names()
    if labels and isinstance(labels[0], str):
        names = names or sorted(set(labels))
        labels = [names.index(v) if v in names else int(v) for v in labels]
    labels_arr = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels_arr, minlength=len(names or []))
    split_sizes = {s: sum(1 for r in records if r.get("split") == s) for s in ("train", "val", "test")}
    split_sizes["unsplit"] = sum(1 for r in records if r.get("split") is None)
    if isinstance(layout, MedMNISTLayout):
        images = layout.arrays()["train_images"]
        dims = layout.spatial_dims()
        channels = layout.in_channels() or 1
        shape = list(images.shape[1 : 1 + dims])
        sample = images[:: max(1, len(images) // 256)].astype(np.float64)
        suffix = ".npz"
    else:
        from medfocal.data.checks import _loader

        suffix = _suffix(_first_path(records[0]["image"]))
        # the loader of check-data and training: NRRD, MetaImage and DICOM series through SimpleITK too
        loader = _loader("PILReader" if suffix in PHOTO_SUFFIXES else None)
        arrays = [np.asarray(loader(_first_path(r["image"]))) for r in _evenly(records, min(max_cases, 32))]
        dims = arrays[0].ndim - 1
        channels = int(arrays[0].shape[0])
        shape = [int(v) for v in np.median([a.shape[1:] for a in arrays], axis=0)]
        sample = np.concatenate([a.ravel()[:: max(1, a.size // 4096)] for a in arrays]).astype(np.float64)
    intensity = [
        {
            "p00_5": float(np.percentile(sample, 0.5)),
            "p50": float(np.median(sample)),
            "p99_5": float(np.percentile(sample, 99.5)),
            "mean": float(sample.mean()),
            "std": float(sample.std()),
        }
    ]
    photo = suffix in PHOTO_SUFFIXES or (suffix == ".npz" and dims == 2)
    return Fingerprint(
        task="classification",
        layout=type(layout).__name__,
        source=layout.describe(),
        spatial_dims=dims,
        in_channels=channels,
        modality=("rgb" if channels == 3 else "grey") if photo else "generic",
        num_cases=len(labels),
        cases_read=len(labels),
        file_suffix=suffix,
        class_names=list(names) if names else [str(i) for i in range(max(len(counts), 2))],
        intensity=intensity,
        image_shape=shape,
        class_counts=[int(c) for c in counts],
        split_sizes=split_sizes,
    )


def compute_fingerprint(
    data: str | Path | Layout, task: str | None = None, max_cases: int = 40
) -> Fingerprint:
    """Fingerprint a dataset path (layout auto-detected, see :func:`medfocal.data.autolayout.find_layout`).

    Args:
        data: a path or a layout object.
        task: ``"segmentation"`` or ``"classification"``; default guessed from the layout.
        max_cases: at most this many segmentation cases are read (evenly spaced).

    Raises:
        FileNotFoundError / ValueError: from layout detection, or a dataset without labelled cases.
    """
    layout = find_layout(data)
    records = layout.records()
    if not records:
        raise ValueError(f"{layout.describe()}: the layout lists no images")
    task = task or guess_task(layout)
    if task == "classification":
        return _classification(layout, records, max_cases)
    if task != "segmentation":
        raise ValueError(f"task: expected 'segmentation' or 'classification', got {task!r}")
    return _segmentation(layout, records, max_cases)


def print_fingerprint(fp: Fingerprint, console: Any = None) -> None:
    """Print the fingerprint as a two-column ``rich`` table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Fingerprint of {fp.source}", show_header=True)
    table.add_column("property")
    table.add_column("value")
    rows = [
        ("task", fp.task),
        ("layout", fp.layout),
        ("modality (guess)", fp.modality),
        ("cases (read)", f"{fp.num_cases} ({fp.cases_read})"),
        ("dims x channels", f"{fp.spatial_dims}D x {fp.in_channels}"),
        ("classes", ", ".join(fp.class_names)),
    ]
    if fp.task == "segmentation":
        rows += [
            ("median spacing", str([round(v, 3) for v in fp.median_spacing])),
            ("median shape", str(fp.median_shape)),
            ("class fractions", ", ".join(f"{v:.4f}" for v in fp.class_fractions)),
            ("zero fraction", f"{fp.zero_fraction:.3f}"),
        ]
        for c, st in enumerate(fp.intensity):
            rows.append(
                (f"channel {c} fg p0.5/p50/p99.5", f"{st['p00_5']:.4g} / {st['p50']:.4g} / {st['p99_5']:.4g}")
            )
        for k, st in fp.components.items():
            rows.append(
                (
                    f"class {k} lesions/case, median size",
                    f"{st['per_case']:.2f}, {st.get('median', 0):.0f} vox",
                )
            )
    else:
        rows += [
            ("image shape", str(fp.image_shape)),
            ("class counts (train)", str(fp.class_counts)),
            ("splits", str(fp.split_sizes)),
        ]
    for key, value in rows:
        table.add_row(key, value)
    (console or Console()).print(table)
