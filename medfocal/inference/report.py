"""Per-case inference report: connected components, volume in ml and max probability per class.

Volumes use the voxel volume of the *input* grid, ``|det(affine[:3, :3])|`` mm^3, divided by 1000
for ml. Components are 26-connected (3D) / 8-connected (2D) (``scipy.ndimage.label``).

Example:
    >>> import numpy as np
    >>> label = np.zeros((4, 4, 4), np.uint8); label[0, 0, 0] = 1; label[3, 3, 3] = 1
    >>> case_statistics(label, np.eye(4) * 10, ["lesion"])["lesion_components"]
    2
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfocal.inference.writer import atomic_path

__all__ = ["case_statistics", "format_summary", "read_report", "voxel_volume_ml", "write_csv"]


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in ml: ``|det(affine[:3, :3])| / 1000`` (2D: ``|det(affine[:2, :2])|`` mm^2)."""
    affine = np.asarray(affine, dtype=np.float64)
    n = affine.shape[0] - 1
    return float(abs(np.linalg.det(affine[:n, :n]))) / 1000.0


def _components(mask: np.ndarray) -> int:
    from scipy import ndimage

    if not mask.any():
        return 0
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    return int(ndimage.label(mask, structure=structure)[1])


def case_statistics(
    label: np.ndarray,
    affine: np.ndarray | None,
    foreground_names: Sequence[str],
    probabilities: np.ndarray | None = None,
    activation: str = "softmax",
) -> dict[str, Any]:
    """Columns ``<name>_components``, ``<name>_volume_ml``, ``<name>_max_prob`` for labels 1..K.

    Args:
        label: integer map in the input's geometry.
        affine: its voxel-to-world affine (``None``, e.g. PNG: ``<name>_pixels`` instead of ml).
        foreground_names: names of labels 1..K.
        probabilities: ``(C, *spatial)``; softmax channel ``k`` belongs to label ``k``, sigmoid channel
            ``k`` to label ``k + 1``.
    """
    row: dict[str, Any] = {}
    for k, name in enumerate(foreground_names, start=1):
        mask = label == k
        row[f"{name}_components"] = _components(mask)
        if affine is None:
            row[f"{name}_pixels"] = int(mask.sum())
        else:
            row[f"{name}_volume_ml"] = round(float(mask.sum()) * voxel_volume_ml(affine), 6)
        if probabilities is not None:
            channel = k if activation == "softmax" else k - 1
            row[f"{name}_max_prob"] = round(float(probabilities[channel].max()), 6)
    return row


def write_csv(
    rows: Sequence[dict[str, Any]], path: str | Path, first: Sequence[str] = ("case", "status")
) -> Path:
    """Write rows (union of their keys; ``first`` columns first) atomically."""
    path = Path(path)
    columns: list[str] = [c for c in first if any(c in r for r in rows)]
    for r in rows:
        columns += [c for c in r if c not in columns]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            )
    return path


def read_report(path: str | Path) -> dict[str, dict[str, str]]:
    """Rows of an earlier report keyed by case (empty if there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {row["case"]: row for row in csv.DictReader(fh) if row.get("case")}


def format_summary(counts: dict[str, int], seconds: float, failures: Sequence[tuple[str, str]] = ()) -> str:
    """The one-line summary (plus one line per failure)."""
    done = counts.get("ok", 0)
    total = sum(counts.values())
    rate = done / seconds if seconds > 0 and done else 0.0
    line = (
        f"{total} case(s): {done} predicted, {counts.get('skipped', 0)} skipped (already done), "
        f"{counts.get('failed', 0)} failed in {seconds:.1f} s ({rate:.2f} volumes/s)"
    )
    if failures:
        line += "\nfailed:\n" + "\n".join(f"  {case}: {msg}" for case, msg in failures)
    return line
