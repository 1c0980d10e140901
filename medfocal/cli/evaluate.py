"""``medfocal evaluate``: score predicted masks against ground truth; options from ``evaluate_folders``.

Example::

    medfocal evaluate -p predictions/ -g labelsTs/ --labels 1 2 -o metrics.csv
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medfocal.cli._options import add_signature_options, new_parser

__all__ = ["HELP", "main", "parser"]

HELP = "Dice/IoU/NSD/HD95 and lesion-wise detection by size, predictions vs ground truth."


def parser() -> argparse.ArgumentParser:
    """The ``medfocal evaluate`` parser: the parameters of :func:`medfocal.inference.evaluate_folders`."""
    from medfocal.inference.evaluate import METRICS, evaluate_folders

    p = new_parser(
        "evaluate",
        "Per case and class (MONAI metrics, distances in mm from the affine): "
        f"{', '.join(METRICS)}. Writes a per-case CSV, a summary CSV (mean, std, median) and a box plot PNG.",
        "Empty labels: a label absent from both the prediction and the ground truth of a case has Dice and "
        "IoU NaN\n(undefined, as nnU-Net's evaluate_folder and MONAI's DiceMetric(ignore_empty=True) report "
        "it) and is left\nout of the means (summary: n = cases scored, n_nan = cases left out); one side "
        "empty gives Dice 0.\nMasks must hold integer labels >= 0: non-integer values (use --threshold for "
        "probability maps)\nand negative values are errors naming the file; labels present but not scored "
        "are reported as warnings.\nexit status: 0 success, 2 missing files, mismatched geometry or invalid "
        "mask values.",
    )
    p.add_argument(
        "--task",
        choices=("segmentation", "detection"),
        default="segmentation",
        help="segmentation: masks (these options); detection: boxes.csv (see --task detection --help)",
    )
    add_signature_options(
        p,
        evaluate_folders,
        flags={"pred_dir": ("-p", "--pred"), "gt_dir": ("-g", "--gt"), "output": ("-o", "--output")},
        overrides={
            "pred_dir": {"metavar": "PRED"},
            "gt_dir": {"metavar": "GT"},
            "regions": {"nargs": "+", "type": str, "metavar": "NAME=LABELS", "default": None},
        },
    )
    return p


def _split_task(argv: list[str]) -> tuple[str, list[str]]:
    """``--task`` and the other arguments (``detection`` has its own options: ``cli/evaluate_boxes``)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", choices=("segmentation", "detection"), default="segmentation")
    known, rest = pre.parse_known_args(argv)
    return known.task, rest


def main(argv: Sequence[str] | None = None) -> int:
    """``medfocal evaluate``: exit 0 on success, 2 for missing files or mismatched geometry."""
    task, argv = _split_task(list(sys.argv[1:] if argv is None else argv))
    if task == "detection":
        from medfocal.cli.evaluate_boxes import main as evaluate_boxes_main

        return evaluate_boxes_main(argv)
    args = parser().parse_args(argv)
    from medfocal.inference.evaluate import evaluate_folders

    try:
        result = evaluate_folders(**{k: v for k, v in vars(args).items() if k != "task"})
    except (FileNotFoundError, ValueError) as err:
        print(f"medfocal evaluate: error: {err}", file=sys.stderr)
        return 2
    for line in result.warnings:
        print(f"medfocal evaluate: warning: {line}", file=sys.stderr)
    print(result.summary_text)
    if result.cleanup:
        print(result.cleanup_text)
    print(f"per case: {result.csv_path}\nsummary: {result.summary_path}")
    if result.cleanup_path is not None:
        print(f"clean-up: {result.cleanup_path}")
    if result.plot_path is not None:
        print(f"box plot: {result.plot_path}")
    if result.html_path is not None:
        print(f"review page: {result.html_path}")
    return 0
