"""Box checks and summaries: every box inside its image, of positive size, with a known label.

Used by ``medfocal check-data`` on detection layouts, and by the datamodule before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data.box_utils import convert_box_to_standard_mode

from medfocal.data.boxes.geometry import world_boxes_to_image
from medfocal.data.boxes.layouts import BoxRecord
from medfocal.data.boxes.transforms import BoxPreprocessing
from medfocal.data.checks import CaseSummary

__all__ = ["box_summary", "check_record", "format_box_summary", "validate_boxes"]


def validate_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    image_size: Sequence[int] | None = None,
    name: str = "image",
    tolerance: float = 0.5,
) -> list[str]:
    """Problems of one image's corner-mode boxes (``xyxy`` / ``xyzxyz``), one line each; empty when valid.

    Checks: the array is ``(N, 2 * dims)`` and finite; every box has positive size (``max > min`` on each
    axis); labels are integers in ``[0, num_classes)``, one per box; with ``image_size`` (spatial size,
    in the boxes' axis order) every box lies inside ``[0, size]`` up to ``tolerance`` pixels.

    Example::

        >>> validate_boxes(np.array([[5, 5, 3, 9.0]]), np.array([0]), 1, (10, 10), "a.jpg")
        ['a.jpg: box 0 [5.0, 5.0, 3.0, 9.0] has non-positive size on axis 0 (min 5.0 >= max 3.0)']
    """
    problems: list[str] = []
    boxes = np.asarray(boxes, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 6):
        return [f"{name}: boxes have shape {boxes.shape}, expected (N, 4) for 2D or (N, 6) for 3D"]
    dims = boxes.shape[1] // 2
    if len(labels) != len(boxes):
        problems.append(f"{name}: {len(boxes)} boxes but {len(labels)} labels")
    for i, box in enumerate(boxes):
        shown = [round(float(v), 3) for v in box]
        if not np.isfinite(box).all():
            problems.append(f"{name}: box {i} {shown} is not finite")
            continue
        for axis in range(dims):
            lo, hi = box[axis], box[axis + dims]
            if hi <= lo:
                problems.append(
                    f"{name}: box {i} {shown} has non-positive size on axis {axis} (min {lo} >= max {hi})"
                )
            if image_size is not None and (lo < -tolerance or hi > image_size[axis] + tolerance):
                problems.append(
                    f"{name}: box {i} {shown} leaves the image on axis {axis} (size {image_size[axis]})"
                )
    for i, label in enumerate(labels):
        if not float(label).is_integer() or not 0 <= int(label) < num_classes:
            problems.append(f"{name}: label {label} of box {i} is not a class index in [0, {num_classes})")
    return problems


def box_summary(
    records: Sequence[BoxRecord], class_names: Sequence[str], box_mode: str = "xyxy"
) -> dict[str, dict[str, float]]:
    """Per class: box count, images containing it, and box size (median, min, max of the mean side).

    Sizes are in the records' units (pixels for VOC/COCO; millimetres for world boxes in ``cccwhd``);
    ``box_mode`` is the records' MONAI box mode (``"xyxy"``, ``"xyzxyz"``, ``"cccwhd"``...).
    Returns ``{class_name: {"boxes", "images", "size_median", "size_min", "size_max"}}``.
    """
    out: dict[str, dict[str, float]] = {}
    per_class_sizes: dict[int, list[float]] = {k: [] for k in range(len(class_names))}
    per_class_images: dict[int, int] = {k: 0 for k in range(len(class_names))}
    for rec in records:
        boxes = np.asarray(rec.boxes, dtype=np.float64)
        if boxes.size == 0:
            continue
        dims = boxes.shape[1] // 2
        corner = convert_box_to_standard_mode(boxes, mode=box_mode)
        sides = corner[:, dims:] - corner[:, :dims]
        for k in set(int(v) for v in rec.labels):
            if k in per_class_images:
                per_class_images[k] += 1
        for label, side in zip(rec.labels, sides.mean(axis=1)):
            if int(label) in per_class_sizes:
                per_class_sizes[int(label)].append(float(side))
    for k, name in enumerate(class_names):
        sizes = np.asarray(per_class_sizes[k])
        out[str(name)] = {
            "boxes": int(sizes.size),
            "images": per_class_images[k],
            "size_median": float(np.median(sizes)) if sizes.size else float("nan"),
            "size_min": float(sizes.min()) if sizes.size else float("nan"),
            "size_max": float(sizes.max()) if sizes.size else float("nan"),
        }
    return out


def format_box_summary(summary: dict[str, dict[str, float]]) -> str:
    """A small text table of :func:`box_summary` (class, boxes, images, median/min/max size)."""
    lines = [f"{'class':<16}{'boxes':>8}{'images':>8}{'size med':>10}{'min':>8}{'max':>8}"]
    for name, s in summary.items():
        lines.append(
            f"{name:<16}{s['boxes']:>8d}{s['images']:>8d}{s['size_median']:>10.1f}{s['size_min']:>8.1f}"
            f"{s['size_max']:>8.1f}"
        )
    return "\n".join(lines)


def _count_text(labels: np.ndarray, class_names: Sequence[str]) -> str:
    counts = np.bincount(np.asarray(labels, dtype=np.int64).reshape(-1), minlength=len(class_names))
    parts = [f"{class_names[k] if k < len(class_names) else k} {int(c)}" for k, c in enumerate(counts) if c]
    return ", ".join(parts) if parts else "no boxes"


def check_record(
    record: BoxRecord,
    split: str | None,
    spec: BoxPreprocessing,
    class_names: Sequence[str],
    full: bool = True,
) -> tuple[CaseSummary, list[str]]:
    """Check one annotated image; its ``check-data`` summary row and its problems (one line each).

    Boxes are converted from ``spec.box_mode`` to corner mode and checked with :func:`validate_boxes`.
    With ``full`` the image header is read: its size replaces the annotation's (a mismatch is a problem),
    and world boxes (3D box JSON) are mapped through its affine (``spec.affine_lps_to_ras`` for LUNA16's
    LPS world) so that they too are checked to lie inside the volume.
    """
    from medfocal.data.checks import _read_header
    from medfocal.io import spacing_of

    name = record.image
    problems: list[str] = []
    boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 2 * spec.spatial_dims)
    if len(boxes) and spec.box_mode not in ("xyxy", "xyzxyz"):
        boxes = np.asarray(convert_box_to_standard_mode(boxes, mode=spec.box_mode), dtype=np.float64)
    size = None if spec.world_coordinates else record.size
    shape = record.size
    channels = spacing = None
    exists = Path(name).is_file()
    if not exists:
        problems.append(f"{name}: image file not found (listed in the annotations of split {split!r})")
    elif full:
        try:
            header = _read_header(name, spec.spatial_dims)
        except Exception as err:  # unreadable files are a data problem, reported not raised
            problems.append(f"{name}: cannot read the image ({' '.join(str(err).split())[:200]})")
        else:
            shape, channels = tuple(int(v) for v in header.shape), header.channels
            if record.size is not None and not spec.world_coordinates and tuple(record.size) != shape:
                problems.append(
                    f"{name}: the annotation gives size {list(record.size)}, the image is {list(shape)}"
                )
            size = shape
            if header.affine is not None and spec.spatial_dims == 3:
                spacing = tuple(round(v, 4) for v in spacing_of(header.affine, 3))
                if spec.world_coordinates and len(boxes):
                    boxes = world_boxes_to_image(boxes, header.affine, lps=spec.affine_lps_to_ras)
    problems += validate_boxes(boxes, record.labels, len(class_names), size, name=name)
    summary = CaseSummary(
        case=record.id,
        split=split,
        image=name,
        channels=channels,
        shape=tuple(shape) if shape is not None else None,
        spacing=spacing,
        label=_count_text(record.labels, class_names),
    )
    return summary, problems
