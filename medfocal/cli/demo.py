"""``medfocal demo``: train, infer and evaluate on generated data; options from ``run_demo``.

Example::

    medfocal demo --epochs 200 --out /tmp/demo -- --trainer.accelerator=gpu
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medfocal.cli._options import add_signature_options, new_parser

__all__ = ["HELP", "main", "parser"]

HELP = "Train, infer and evaluate on a generated dataset (no download)."


def parser() -> argparse.ArgumentParser:
    """The ``medfocal demo`` parser: the parameters of ``run_demo`` plus ``medfocal fit`` arguments."""
    from medfocal.demo import run_demo
    from medfocal.presets import list_presets

    p = new_parser(
        "demo",
        "Generate a small class-imbalanced 3D dataset, train on it (medfocal fit), predict the held-out "
        "volumes (medfocal infer) and score them (medfocal evaluate).",
        f"presets for --config: {', '.join(list_presets())}",
    )
    add_signature_options(
        p, run_demo, skip=("shape", "extra_args", "progress"), flags={"out_dir": ("--out",)}
    )
    p.add_argument(
        "extra_args", nargs="*", metavar="FIT_ARGS", help="extra `medfocal fit` arguments, after --"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``medfocal demo``: exit 0 when the demo ran end to end."""
    from medfocal.demo import print_summary, run_demo

    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    print_summary(run_demo(**vars(args)))
    return 0
