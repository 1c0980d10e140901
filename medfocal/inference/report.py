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
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfocal.inference.writer import atomic_path

__all__ = [
    "STATE_DIR",
    "case_statistics",
    "clear_case_records",
    "format_summary",
    "read_case_records",
    "read_report",
    "record_run",
    "voxel_volume_ml",
    "write_case_record",
    "write_csv",
]

#: hidden folder of a ``medfocal infer`` output folder: ``run.json`` and one record per finished case
STATE_DIR = ".medfocal"
RUN_FILE = "run.json"
_CASES = "cases"


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


def _records(output_dir: str | Path) -> Path:
    return Path(output_dir) / STATE_DIR / _CASES


def write_case_record(output_dir: str | Path, row: dict[str, Any]) -> Path:
    """Write one case's report row durably: ``OUT/.medfocal/cases/<case>.json``, atomically.

    The report CSV is rebuilt from these records, so a run killed at any moment keeps every row it
    finished (and a resumed run reports them with their real fields).
    """
    folder = _records(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{row['case']}.json"
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(row, default=str))
    return final


def read_case_records(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The case records of an output folder keyed by case (unreadable ones, e.g. cut short, are left out)."""
    folder = _records(output_dir)
    out: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):  # a temporary of atomic_path
            continue
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(row, dict) and row.get("case"):
            out[str(row["case"])] = row
    return out


def clear_case_records(output_dir: str | Path) -> None:
    """Forget every case record (``overwrite``: each case is done again)."""
    shutil.rmtree(_records(output_dir), ignore_errors=True)


def format_summary(counts: dict[str, int], seconds: float, failures: Sequence[tuple[str, str]] = ()) -> str:
    """The one-line summary (plus one line per failure); ``counts`` may hold ``"interrupted"``."""
    done = counts.get("ok", 0)
    total = sum(counts.values())
    rate = done / seconds if seconds > 0 and done else 0.0
    line = (
        f"{total} case(s): {done} predicted, {counts.get('skipped', 0)} skipped (already done), "
        f"{counts.get('failed', 0)} failed in {seconds:.1f} s ({rate:.2f} volumes/s)"
    )
    if counts.get("interrupted"):
        line += f"; interrupted: {counts['interrupted']} case(s) not done (run again to resume)"
    if failures:
        line += "\nfailed:\n" + "\n".join(f"  {case}: {msg}" for case, msg in failures)
    return line


def record_run(output_dir: Path, identity: dict[str, Any], overwrite: bool) -> bool:
    """Compare a run's model ``identity`` (``sha256``, ``sha256_of``, ``checkpoint``...) with the one in
    ``OUT/.medfocal/run.json`` and record it there. Returns whether the case records of an earlier run
    are to be resumed (False: none, or ``overwrite``, which also clears them).

    Raises:
        ValueError: another checkpoint made the outputs, and ``overwrite`` is off.
    """
    run_file = output_dir / STATE_DIR / RUN_FILE
    previous: dict[str, Any] | None = None
    if run_file.is_file():
        try:
            previous = json.loads(run_file.read_text())
        except (OSError, ValueError):
            previous = {}
    if previous is not None and not overwrite:
        same = (
            previous.get("sha256") == identity["sha256"]
            and previous.get("sha256_of") == identity["sha256_of"]
        )
        if not same:
            before = previous.get("checkpoint") or f"weights {str(previous.get('sha256'))[:16]}"
            now = identity["checkpoint"] or f"weights {identity['sha256'][:16]}"
            raise ValueError(
                f"{output_dir}: its outputs were made with checkpoint {before} (sha256 "
                f"{str(previous.get('sha256'))[:16]}...), this run uses {now} (sha256 "
                f"{identity['sha256'][:16]}...); pass overwrite=True (--overwrite) to redo every case, "
                "or choose another output folder"
            )
    if overwrite:
        clear_case_records(output_dir)
    run_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_file) as tmp:
        tmp.write_text(json.dumps(identity, indent=2))
    return previous is not None and not overwrite
