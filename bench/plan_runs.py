"""What the plan-driven benchmarks share: running ``medfocal`` commands one thread each, durable JSON-line
records that a killed run resumes from, and mean ± std cells.

Used by ``classification_plan.py`` and ``segmentation_losses.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["append_record", "done_keys", "mean_std", "medfocal"]


def medfocal(*args: str, cwd: Path, log: Path) -> None:
    """``python -m medfocal.cli ARGS`` in ``cwd`` with one thread and low priority, output to ``log``.

    Raises:
        RuntimeError: a non-zero exit, naming the folder and the log.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("a") as f:
        f.write(f"\n$ medfocal {' '.join(args)}\n")
        f.flush()
        run = subprocess.run(
            ["nice", "-n", "10", sys.executable, "-m", "medfocal.cli", *args],
            cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"medfocal {args[0]} failed in {cwd} (exit {run.returncode}); see {log}")


def done_keys(out: Path, fields: tuple[str, ...] = ("set", "arm", "seed")) -> set[tuple[Any, ...]]:
    """The ``fields`` of every record already in ``out`` (runs to skip with ``--resume``)."""
    if not out.exists():
        return set()
    return {tuple(r[k] for k in fields) for r in map(json.loads, out.read_text().splitlines()) if r}


def append_record(out: Path, record: dict[str, Any]) -> None:
    """One JSON line, flushed and fsynced: a finished run survives a kill of the benchmark."""
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def mean_std(values: list[float], digits: int = 3) -> str:
    """``mean ± sample std`` of the finite values (the mean alone for one, ``–`` for none)."""
    v = np.asarray([x for x in values if x == x], float)
    if len(v) == 0:
        return "–"
    return f"{v.mean():.{digits}f}" if len(v) == 1 else f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"
