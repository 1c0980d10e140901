"""Batch inference split over machines: part ``K`` of ``N`` of a folder, and the merged report.

nnU-Net's habit (``-num_parts N -part_id K``): ``N`` processes (GPUs, machines, SLURM array tasks) run
``medfocal infer ... --num-parts N --part-id K`` on the same input and output folders. The sorted cases
are dealt round-robin, so the parts cover every case exactly once whatever order the processes start in;
each part writes its own durable report (``report.part-K-of-N.csv``), and the part that finishes last
(all ``N`` part reports complete) writes the merged ``report.csv``; :func:`merge_part_reports` does the
same by hand.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from medfocal.inference.report import read_report, write_csv

__all__ = ["merge_part_reports", "part_report_name", "select_part"]

T = TypeVar("T")


def select_part(cases: Sequence[T], num_parts: int, part_id: int) -> list[T]:
    """Cases ``part_id, part_id + N, part_id + 2N, ...`` of the (sorted) ``cases``.

    Raises:
        ValueError: ``num_parts < 1`` or ``part_id`` outside ``0..num_parts-1``.
    """
    if num_parts < 1:
        raise ValueError(f"num_parts: expected >= 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise ValueError(f"part_id: expected 0..{num_parts - 1} for num_parts={num_parts}, got {part_id}")
    return list(cases)[part_id::num_parts]


def part_report_name(report_name: str, num_parts: int, part_id: int) -> str:
    """``report.csv`` -> ``report.part-2-of-4.csv`` (the name itself when ``num_parts == 1``)."""
    if num_parts == 1:
        return report_name
    stem, dot, suffix = report_name.rpartition(".")
    return (
        f"{stem}.part-{part_id}-of-{num_parts}.{suffix}"
        if dot
        else f"{report_name}.part-{part_id}-of-{num_parts}"
    )


def merge_part_reports(
    output_dir: str | Path, report_name: str, num_parts: int, expected: Sequence[str] | None = None
) -> Path | None:
    """Write ``output_dir/report_name`` from the ``num_parts`` part reports, if all are complete.

    Args:
        output_dir: the shared output folder.
        report_name: the merged report's name (``report.csv``, ``predictions.csv``).
        num_parts: how many parts the folder was split into.
        expected: every case id of the input; the merge waits until each has a row.

    Returns:
        the merged report's path, or None while a part report is missing or incomplete.

    Raises:
        ValueError: a case reported by two parts (the parts were not of the same input).
    """
    output_dir = Path(output_dir)
    rows: dict[str, dict[str, str]] = {}
    for part in range(num_parts):
        path = output_dir / part_report_name(report_name, num_parts, part)
        if not path.is_file():
            return None
        for case, row in read_report(path).items():
            if case in rows:
                raise ValueError(f"{path}: case {case!r} is also in another part's report")
            rows[case] = row
    if expected is not None and any(case not in rows for case in expected):
        return None
    order = list(expected) if expected is not None else sorted(rows, key=_natural)
    return write_csv([rows[c] for c in order if c in rows], output_dir / report_name)


def _natural(text: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
