"""How detections become output rows: ``boxes.csv``, JSON, the LUNA16 submission CSV, counts per class.

Pure functions for the inference plug-in of the detection task (the writers call them and only write).
Input per image: corner boxes ``(N, 2 * dims)`` (``xyxy`` / ``xyzxyz``; what ``DetectionModule.predict_step``
gives as ``boxes_world``: original pixels for 2D photos, world millimetres (RAS) for 3D volumes), labels
``(N,)`` and scores ``(N,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "BOX_COLUMNS_2D",
    "BOX_COLUMNS_3D",
    "LUNA16_COLUMNS",
    "box_columns",
    "boxes_to_rows",
    "counts_per_class",
    "detections_to_json",
    "luna16_rows",
]

BOX_COLUMNS_2D = ("image", "label", "score", "x1", "y1", "x2", "y2")
BOX_COLUMNS_3D = ("image", "label", "score", "x1", "y1", "z1", "x2", "y2", "z2")
LUNA16_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "probability")


def _arrays(boxes: Any, labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def np_(x: Any, dtype) -> np.ndarray:
        return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=dtype)

    b, lab, s = np_(boxes, np.float64), np_(labels, np.int64).reshape(-1), np_(scores, np.float64).reshape(-1)
    b = b.reshape(len(lab), -1) if b.size or len(lab) else b.reshape(0, 4)
    if not (len(b) == len(lab) == len(s)):
        raise ValueError(f"boxes, labels and scores differ in length: {len(b)}, {len(lab)}, {len(s)}")
    if b.shape[1] not in (4, 6):
        raise ValueError(f"boxes must be (N, 4) or (N, 6) corner boxes, got {b.shape}")
    return b, lab, s


def box_columns(spatial_dims: int) -> tuple[str, ...]:
    """The ``boxes.csv`` header for 2D (``x1, y1, x2, y2``) or 3D (``x1, y1, z1, x2, y2, z2``)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
    return BOX_COLUMNS_2D if spatial_dims == 2 else BOX_COLUMNS_3D


def _name(label: int, class_names: Sequence[str]) -> str:
    if not 0 <= label < len(class_names):
        raise ValueError(
            f"label {label} is not a class index in [0, {len(class_names)}) of {list(class_names)}"
        )
    return str(class_names[label])


def boxes_to_rows(
    image: str,
    boxes: Any,
    labels: Any,
    scores: Any,
    class_names: Sequence[str],
    score_threshold: float = 0.0,
    decimals: int = 2,
) -> list[dict[str, Any]]:
    """Rows of ``boxes.csv`` (keys :func:`box_columns`), highest score first; ``label`` is the class name.

    Example::

        >>> boxes_to_rows("a.jpg", [[1, 2, 11, 12.5]], [1], [0.876], ["RBC", "WBC"])
        [{'image': 'a.jpg', 'label': 'WBC', 'score': 0.876, 'x1': 1.0, 'y1': 2.0, 'x2': 11.0, 'y2': 12.5}]
    """
    b, lab, s = _arrays(boxes, labels, scores)
    columns = box_columns(b.shape[1] // 2)[3:]
    rows = []
    for i in np.argsort(-s, kind="stable"):
        if s[i] < score_threshold:
            continue
        row: dict[str, Any] = {
            "image": image,
            "label": _name(int(lab[i]), class_names),
            "score": round(float(s[i]), 4),
        }
        row.update({c: round(float(v), decimals) for c, v in zip(columns, b[i])})
        rows.append(row)
    return rows


def detections_to_json(
    image: str, boxes: Any, labels: Any, scores: Any, class_names: Sequence[str], coordinates: str
) -> dict[str, Any]:
    """One image's detections as a JSON-ready dict: ``{"image", "coordinates", "box_mode", "boxes", ...}``.

    ``coordinates`` says what the numbers are (``"pixels"`` or ``"world_mm_ras"``); ``box_mode`` is
    ``"xyxy"`` or ``"xyzxyz"``.
    """
    b, lab, s = _arrays(boxes, labels, scores)
    return {
        "image": image,
        "coordinates": coordinates,
        "box_mode": "xyxy" if b.shape[1] == 4 else "xyzxyz",
        "boxes": b.round(4).tolist(),
        "labels": [_name(int(k), class_names) for k in lab],
        "scores": s.round(6).tolist(),
    }


def luna16_rows(
    seriesuid: str, boxes_world: Any, scores: Any, ras_to_lps: bool = True
) -> list[dict[str, Any]]:
    """Rows of the LUNA16 submission CSV (:data:`LUNA16_COLUMNS`): box centres and probabilities.

    Args:
        seriesuid: the scan's series UID (the file name without suffix in LUNA16).
        boxes_world: ``(N, 6)`` world corner boxes in mm.
        scores: ``(N,)`` probabilities.
        ras_to_lps: the boxes are in RAS world (nibabel/MONAI affines) and LUNA16 expects ITK's LPS world
            (``annotations.csv``): x and y change sign.
    """
    b, _, s = _arrays(boxes_world, np.zeros(len(np.asarray(scores).reshape(-1))), scores)
    if b.shape[1] != 6:
        raise ValueError(f"LUNA16 rows need 3D boxes (N, 6), got {b.shape}")
    centres = (b[:, :3] + b[:, 3:]) / 2
    if ras_to_lps:
        centres = centres * np.array([-1.0, -1.0, 1.0])
    order = np.argsort(-s, kind="stable")
    return [
        {
            "seriesuid": seriesuid,
            "coordX": round(float(centres[i, 0]), 3),
            "coordY": round(float(centres[i, 1]), 3),
            "coordZ": round(float(centres[i, 2]), 3),
            "probability": round(float(s[i]), 6),
        }
        for i in order
    ]


def counts_per_class(
    labels: Any, scores: Any, class_names: Sequence[str], score_threshold: float = 0.5
) -> dict[str, int]:
    """Objects per class name with score >= ``score_threshold`` (the cell counts of ``report.csv``)."""
    lab = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels, dtype=np.int64).reshape(
        -1
    )
    s = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64).reshape(
        -1
    )
    kept = lab[s >= score_threshold]
    if len(kept) and (kept.min() < 0 or kept.max() >= len(class_names)):
        raise ValueError(f"labels {sorted(set(kept.tolist()))} outside [0, {len(class_names)})")
    counts = np.bincount(kept, minlength=len(class_names))
    return {str(n): int(c) for n, c in zip(class_names, counts)}
