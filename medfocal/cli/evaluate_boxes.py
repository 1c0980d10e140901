"""``medfocal evaluate --task detection``: score ``boxes.csv`` against box ground truth.

Options come from :func:`medfocal.inference.evaluate_detection.evaluate_boxes`; ``medfocal evaluate``
hands its arguments here when ``--task detection`` is given.

Example::

    medfocal evaluate --task detection -p OUT/boxes.csv -g data/bccd --split val
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medfocal.cli._options import add_signature_options, new_parser

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The parser of ``medfocal evaluate --task detection``: the parameters of ``evaluate_boxes``."""
    from medfocal.inference.evaluate_detection import evaluate_boxes

    p = new_parser(
        "evaluate --task detection",
        "Boxes of `medfocal infer` vs ground truth (Pascal VOC folder, COCO JSON or MONAI box JSON): "
        "mAP@0.5, mAP@[.5:.95], AP and count error per class; FROC and CPM for 3D. Writes metrics.json "
        "and counts.csv.",
        "exit status: 0 success, 2 missing files or mismatched images/classes.",
    )
    add_signature_options(
        p,
        evaluate_boxes,
        flags={"pred": ("-p", "--pred"), "gt": ("-g", "--gt"), "output": ("-o", "--output")},
        overrides={"class_names": {"nargs": "+", "type": str}},
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 on success, 2 for missing files or images/classes that do not match the ground truth."""
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from medfocal.inference.evaluate_detection import evaluate_boxes

    try:
        result = evaluate_boxes(**vars(args))
    except (FileNotFoundError, ValueError) as err:
        print(f"medfocal evaluate: error: {err}", file=sys.stderr)
        return 2
    print(result.summary_text)
    print(f"metrics: {result.metrics_path}\ncounts per image: {result.counts_path}")
    return 0
