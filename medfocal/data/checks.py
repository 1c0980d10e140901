"""Input validation before training, and the ``medfocal check-data`` command.

:func:`validate_records` looks at every case of a dataset and collects *all* problems (missing or
unreadable files, image/label shape or affine mismatch, label values outside the declared classes,
NaN/Inf voxels, wrong channel count, empty dataset) before raising one :class:`DataValidationError`
whose message names each file. ``full=False`` reads headers only (NIfTI header, PIL size); ``full=True``
loads the arrays through MONAI ``LoadImage`` (NaN/Inf voxels, label values) and also counts label voxels.
With a :class:`~medfocal.data.check_cache.ContentCache` the arrays of files that passed before (same path,
size and modification time) are not read again: what ``check: quick`` does before training.

Example::

    summaries = validate_records(records, spec, num_classes=2, in_channels=1)   # raises on problems

The command line (``medfocal check-data``) is :mod:`medfocal.cli.check_data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfocal.data.check_cache import ContentCache
from medfocal.data.errors import DataValidationError
from medfocal.data.transforms import PreprocessingSpec, label_transforms
from medfocal.io import PHOTO_SUFFIXES, spacing_of

__all__ = [
    "CaseSummary",
    "DataValidationError",
    "cached_label_counts",
    "label_counts",
    "main_check_data",
    "validate_records",
]


@dataclass
class CaseSummary:
    """What ``check-data`` reports per case."""

    case: str
    split: str | None
    image: str
    channels: int | None = None
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    label_counts: np.ndarray | None = field(default=None, repr=False)
    label: Any = None


@dataclass
class _Header:
    shape: tuple[int, ...]  # spatial, MONAI order (PIL: (W, H))
    channels: int
    affine: np.ndarray | None


def _spacing(affine: np.ndarray | None, dims: int) -> tuple[float, ...] | None:
    return None if affine is None else tuple(round(v, 4) for v in spacing_of(affine, dims))


def _read_header(path: str, spatial_dims: int | None) -> _Header:
    """Header only: nibabel for NIfTI, PIL for photos, MONAI ``LoadImage`` otherwise."""
    low = path.lower()
    if low.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
        dims = spatial_dims or min(3, len(shape))
        channels = int(np.prod(shape[dims:])) if len(shape) > dims else 1
        return _Header(shape[:dims], channels, np.asarray(img.affine, dtype=np.float64))
    if low.endswith(PHOTO_SUFFIXES):
        from PIL import Image

        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            return _Header(tuple(img.size), len(img.getbands()), None)
    return _load_header(path)


def _loader(reader: Any = None) -> Any:
    """MONAI ``LoadImage`` (channel first) that also reads NRRD, MetaImage and DICOM series folders
    (:class:`~medfocal.data.readers.SimpleITKReader`, registered as the training transforms do)."""
    from monai.transforms import LoadImage

    from medfocal.data.readers import resolve_reader, with_simpleitk

    reader = resolve_reader(reader)
    return with_simpleitk(LoadImage(reader=reader, image_only=True, ensure_channel_first=True), reader)


def _load_header(path: str | list[str]) -> _Header:
    img = _loader()(path)
    affine = np.asarray(img.affine, dtype=np.float64) if hasattr(img, "affine") else None
    return _Header(tuple(img.shape[1:]), int(img.shape[0]), affine)


def _load_label(path: Any, spec: PreprocessingSpec) -> torch.Tensor:
    """Label map as the network sees its values (remapped/thresholded), native grid.

    Raises:
        ValueError: stored values that are not integers (unless ``label_threshold`` binarises them).
    """
    from monai.transforms import Compose

    raw = _loader(spec.reader)(path)
    if spec.label_threshold is None:
        values = torch.as_tensor(raw)
        if values.is_floating_point() and not torch.equal(values, torch.round(values)):
            bad = torch.unique(values[values != torch.round(values)])[:3].tolist()
            raise ValueError(f"{path}: label values must be integers, found {bad} (set label_threshold?)")
    return Compose(label_transforms(spec))({"label": raw})["label"]


def label_counts(path: Any, spec: PreprocessingSpec, minlength: int = 0) -> np.ndarray:
    """Voxel count per label value of one label file, after the spec's label mapping.

    Raises:
        ValueError: negative or non-integer values (naming the file).
    """
    label = _load_label(path, spec)
    values = torch.as_tensor(label).reshape(-1)
    if values.numel() and (values.min() < 0 or not torch.equal(values, torch.round(values))):
        raise ValueError(f"{path}: label values must be non-negative integers, got min {float(values.min())}")
    return np.bincount(values.to(torch.int64).numpy(), minlength=minlength)


def _files(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)] if isinstance(value, (str, Path)) else []


def _check_image(
    record: dict, spec: PreprocessingSpec, full: bool, problems: list[str], cache: ContentCache | None = None
) -> _Header | None:
    image = record["image"]
    if isinstance(image, np.ndarray):
        if not np.isfinite(image).all():
            problems.append(f"{record.get('case')}: image array holds NaN/Inf values")
        return _Header(tuple(image.shape[1:]), int(image.shape[0]), None)
    files = _files(image)
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        problems += [f"{f}: missing image file (case {record.get('case')})" for f in missing]
        return None
    headers = []
    for f in files:
        try:
            headers.append(_read_header(f, spec.spatial_dims))
        except Exception as err:  # any reader error means the file cannot be used
            problems.append(f"{f}: unreadable or corrupt image ({type(err).__name__}: {err})")
            return None
    first = headers[0]
    for f, h in zip(files[1:], headers[1:]):
        if h.shape != first.shape:
            problems.append(f"{f}: shape {h.shape} differs from the first channel {files[0]} {first.shape}")
    header = _Header(first.shape, sum(h.channels for h in headers), first.affine)
    if spec.spatial_dims is not None and len(header.shape) != spec.spatial_dims:
        problems.append(
            f"{files[0]}: {len(header.shape)}D image {header.shape} but preprocessing.spatial_dims is "
            f"{spec.spatial_dims} (photos: set preprocessing.modality to rgb, grey, dermoscopy or histology)"
        )
        return None
    if full and not (cache is not None and all(cache.get("image", f) for f in files)):
        try:
            data = _loader(spec.reader)(files if len(files) > 1 else files[0])
        except Exception as err:
            problems.append(f"{files[0]}: unreadable or corrupt image ({type(err).__name__}: {err})")
            return None
        array = torch.as_tensor(data)
        if array.is_floating_point() and not torch.isfinite(array).all():
            bad = int((~torch.isfinite(array)).sum())
            problems.append(
                f"{files[0]}: {bad} NaN/Inf voxels in the image (fix or remove the case; "
                "training on it gives a NaN loss)"
            )
        elif cache is not None:
            for f in files:
                cache.put("image", f, True)
    return header


def _check_label(
    record: dict,
    image: _Header | None,
    spec: PreprocessingSpec,
    num_classes: int | None,
    full: bool,
    affine_atol: float,
    problems: list[str],
    cache: ContentCache | None = None,
) -> np.ndarray | None:
    label = record.get("label")
    files = _files(label)
    if not files:
        is_index = isinstance(label, (int, np.integer))
        if is_index and num_classes is not None and not 0 <= int(label) < num_classes:
            problems.append(f"{record.get('case')}: class index {label} outside 0..{num_classes - 1}")
        return None
    path = files[0]
    if not Path(path).is_file():
        problems.append(f"{path}: missing label file (case {record.get('case')})")
        return None
    try:
        header = _read_header(path, spec.spatial_dims)
    except Exception as err:
        problems.append(f"{path}: unreadable or corrupt label ({type(err).__name__}: {err})")
        return None
    if image is not None:
        if header.shape != image.shape:
            first = _files(record["image"])[0]
            problems.append(f"{path}: shape {header.shape} differs from image {image.shape} ({first})")
        elif header.affine is not None and image.affine is not None:
            diff = float(np.abs(header.affine - image.affine).max())
            if diff > affine_atol:
                problems.append(
                    f"{path}: affine differs from the image's by {diff:.3g} (> tolerance {affine_atol}); "
                    "image and label are not on the same grid"
                )
    if not full:
        return None
    try:
        counts = cached_label_counts(path, spec, cache)
    except Exception as err:
        named = isinstance(err, ValueError) and str(err).startswith(str(path))
        problems.append(
            str(err) if named else f"{path}: unreadable or invalid label ({type(err).__name__}: {err})"
        )
        return None
    if num_classes is not None and len(counts) > num_classes:
        outside = [int(v) for v in np.nonzero(counts)[0] if v >= num_classes]
        if outside:
            problems.append(
                f"{path}: label values {outside} outside the declared classes 0..{num_classes - 1} "
                "(set class_names, or preprocessing.label_map / label_threshold)"
            )
    return counts


def cached_label_counts(path: str, spec: PreprocessingSpec, cache: ContentCache | None) -> np.ndarray:
    """:func:`label_counts` through ``cache`` (read only when the file changed since it was counted)."""
    extra = _label_fingerprint(spec)
    cached = cache.get("label", path, extra) if cache is not None else None
    if cached is not None:
        return np.asarray(cached, dtype=np.int64)
    counts = label_counts(path, spec)
    if cache is not None:
        cache.put("label", path, [int(c) for c in counts], extra)
    return counts


def _label_fingerprint(spec: PreprocessingSpec) -> str:
    """The preprocessing fields that change label values (a cached count is valid under these only)."""
    import json

    fields = {k: getattr(spec, k, None) for k in ("reader", "label_map", "label_threshold", "label_channel")}
    return json.dumps(fields, sort_keys=True, default=str)


def validate_records(
    records: Sequence[dict],
    spec: PreprocessingSpec,
    num_classes: int | None = None,
    in_channels: int | None = None,
    full: bool = True,
    affine_atol: float = 1e-3,
    raise_on_error: bool = True,
    source: str = "dataset",
    cache: ContentCache | None = None,
) -> tuple[list[CaseSummary], list[str]]:
    """Check every record; return per-case summaries and the problems found.

    Args:
        records: items from a layout (``image`` path(s) or array, optional ``label``, ``case``, ``split``).
        spec: preprocessing spec (reader, label mapping, spatial dims).
        num_classes: declared number of classes; ``None`` skips the label range check.
        in_channels: declared channels; ``None`` only requires all cases to agree.
        full: load arrays (NaN/Inf, label values, voxel counts); ``False`` reads headers only.
        affine_atol: largest allowed absolute difference between image and label affines.
        raise_on_error: raise :class:`DataValidationError` listing all problems.
        source: name of the dataset for the empty-dataset message.
        cache: with ``full``, files that passed the content checks before are not read again, and
            files that pass now are remembered (saved at the end).

    Raises:
        DataValidationError: (a ``ValueError``) when problems are found and ``raise_on_error``.
    """
    problems: list[str] = []
    summaries: list[CaseSummary] = []
    if not records:
        problems.append(f"{source}: empty dataset (no cases found)")
    channels_seen: dict[int, str] = {}
    for record in records:
        image = _check_image(record, spec, full, problems, cache)
        counts = _check_label(record, image, spec, num_classes, full, affine_atol, problems, cache)
        name = _files(record["image"])[0] if _files(record["image"]) else str(record.get("case"))
        if image is not None:
            channels_seen.setdefault(image.channels, name)
            if in_channels is not None and image.channels != in_channels:
                problems.append(f"{name}: expected {in_channels} image channel(s), got {image.channels}")
        summaries.append(
            CaseSummary(
                case=str(record.get("case")),
                split=record.get("split"),
                image=name,
                channels=image.channels if image else None,
                shape=image.shape if image else None,
                spacing=_spacing(image.affine, len(image.shape)) if image else None,
                label_counts=counts,
                label=record.get("label") if not _files(record.get("label")) else None,
            )
        )
    if in_channels is None and len(channels_seen) > 1:
        problems.append(
            "cases disagree on the number of channels: "
            + ", ".join(f"{c} in {f}" for c, f in sorted(channels_seen.items()))
        )
    problems += _undeclared_label_problems(summaries, num_classes)
    if cache is not None:
        cache.save()
    if raise_on_error and problems:
        raise DataValidationError(problems)
    return summaries, problems


def _undeclared_label_problems(summaries: list[CaseSummary], num_classes: int | None) -> list[str]:
    """Without declared classes, label values must be the indices 0..K-1 (DRIVE {0, 255} is not)."""
    totals = [s.label_counts for s in summaries if s.label_counts is not None]
    if num_classes is not None or not totals:
        return []
    size = max(len(t) for t in totals)
    present = np.nonzero(sum(np.pad(t, (0, size - len(t))) for t in totals))[0].tolist()
    if present == list(range(len(present))) and len(present) <= 32:
        return []
    shown = present if len(present) <= 8 else [*present[:4], "...", *present[-2:]]
    return [
        f"label values {shown} are not consecutive class indices 0..K-1: declare class_names and set "
        "preprocessing.label_map (e.g. {255: 1}) or preprocessing.label_threshold (JPEG masks: 127)"
    ]


def main_check_data(argv: Sequence[str] | None = None) -> int:
    """Moved to :func:`medfocal.cli.check_data.main` (``medfocal check-data``); kept for older code."""
    from medfocal.cli.check_data import main

    return main(argv)
