"""``medfocal cv``: train a config on every cross-validation fold and summarise the validation metrics.

Example::

    medfocal cv --config plan.yaml --folds 5 --out cv/          # sequential on this machine
    medfocal cv --config plan.yaml --folds 5 --only 2 -- --trainer.devices=1   # one fold per GPU process
    medfocal infer -c cv/ -i imagesTs -o predictions           # the folds' best checkpoints as an ensemble
    medfocal evaluate -p cv/oof -g cv/oof_labels --cleanup     # post-processing chosen out of fold
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medfocal.cli._options import add_signature_options, new_parser

__all__ = ["HELP", "main", "parser"]

HELP = "Cross-validation: fit each fold, summarise per-fold validation metrics."


def parser() -> argparse.ArgumentParser:
    """The ``medfocal cv`` parser: the parameters of :func:`medfocal.tasks.cv.run_cv`."""
    from medfocal.tasks.cv import run_cv

    p = new_parser(
        "cv",
        "Runs `medfocal fit` once per fold (--data.init_args.fold=k), validates each fold's best checkpoint "
        "again and writes cv_summary.json/.csv (per fold, mean and std) after every fold, so an interrupted "
        "run resumes where it stopped. Arguments after `--` go to every fit.",
        "exit status: 0 all folds done, 2 a config or argument problem.",
    )
    add_signature_options(
        p,
        run_cv,
        skip=("extra_args",),
        flags={"config": ("-c", "--config"), "out_dir": ("-o", "--out")},
        overrides={"only": {"nargs": "+", "type": int}},
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``medfocal cv``: exit 0 when every fold is done, 2 on a config or argument problem."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = vars(parser().parse_args(argv))
    from medfocal.tasks.cv import run_cv

    try:
        summary = run_cv(**args, extra_args=extra)
    except (FileNotFoundError, ValueError) as err:
        print(f"medfocal cv: error: {err}", file=sys.stderr)
        return 2
    print(f"cross-validation summary: {summary.get('summary_csv', args['out_dir'])}")
    from pathlib import Path

    from medfocal.tasks.cv import OOF_DIR, OOF_LABELS_DIR, OOF_ROI_DIR

    out = Path(args["out_dir"])
    if (out / OOF_LABELS_DIR).is_dir():
        roi = f" --roi {out / OOF_ROI_DIR}" if (out / OOF_ROI_DIR).is_dir() else ""
        print(
            f"out-of-fold predictions: {out / OOF_DIR}; choose post-processing on them with\n"
            f"  medfocal evaluate -p {out / OOF_DIR} -g {out / OOF_LABELS_DIR}{roi} --cleanup"
        )
    return 0
