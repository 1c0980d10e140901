"""``medfocal infer``: predict a folder (or file, or CSV list) with a checkpoint; options from ``Predictor``.

Example::

    medfocal infer -c best.ckpt -i imagesTs/ -o predictions/ --tta --save-probabilities npz
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medfocal.cli._options import add_signature_options, new_parser

__all__ = ["HELP", "main", "parser"]

HELP = "Batch inference over NIfTI/NRRD/MetaImage volumes, DICOM series folders or 2D images."

_EPILOG = """\
Multi-channel cases: either one 4D NIfTI (x, y, z, c) per case, or nnU-Net naming case_0000.nii.gz,
case_0001.nii.gz, ... (channel = 4-digit suffix). A CSV list needs an 'image' column (channels separated
by ';') and may have a 'case' column. DICOM: -i one series folder, or a folder whose subfolders hold one
series each (one case each, named after the folder).

Outputs per case: <case>.nii.gz in the input's geometry (.png for 2D images); NRRD/MetaImage input also
<case>.nrrd / <case>.mha; a DICOM series also <case>_seg.dcm (DICOM SEG, needs medfocal[dicom]).

exit status: 0 every case succeeded, 1 some cases failed (listed on stderr), 2 run-level error."""


def parser() -> argparse.ArgumentParser:
    """The ``medfocal infer`` parser: options of ``Predictor``, ``from_checkpoint`` and ``predict_folder``."""
    from medfocal.inference.predictor import PROBABILITY_FORMATS, Predictor

    p = new_parser(
        "infer",
        "Predict masks (segmentation) or class probabilities (classification) from a medfocal checkpoint. "
        "Masks are uint8 with the input's exact shape and affine; a report CSV is written beside them.",
        _EPILOG,
    )
    add_signature_options(
        p,
        Predictor.from_checkpoint,
        skip=("device",),
        flags={"path": ("-c", "--checkpoint"), "trust": ("--trust-checkpoint",)},
        overrides={
            "path": {
                "metavar": "CKPT",
                "nargs": "+",
                "help": "medfocal checkpoint (.ckpt), exported model (.onnx, .pt), or several checkpoints / "
                "a folder of them / a `medfocal cv` folder: an ensemble (mean of calibrated probabilities)",
            },
            "trust": {"help": "allow a full unpickle if the safe load fails; only for checkpoints you made"},
        },
    )
    add_signature_options(
        p,
        Predictor.predict_folder,
        skip=("report_name",),
        flags={"source": ("-i", "--input"), "output_dir": ("-o", "--output")},
        overrides={
            "save_probabilities": {"nargs": "?", "const": "npz", "choices": PROBABILITY_FORMATS},
            "source": {"metavar": "INPUT"},
            "output_dir": {"metavar": "OUTPUT"},
        },
    )
    add_signature_options(p, Predictor.__init__, skip=("model", "card"))
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads for the model (0: torch's default)"
    )
    return p


def _run_notes(rows: Sequence[dict]) -> list[str]:
    """Warnings that concern the whole run, once each (an output skipped for a missing extra)."""
    notes = (w.strip() for r in rows for w in str(r.get("warnings") or "").split(";"))
    return sorted({w for w in notes if w.startswith("no DICOM SEG")})


def main(argv: Sequence[str] | None = None) -> int:
    """``medfocal infer``: exit 0 if every case succeeded, 1 if some failed, 2 for a run-level error,
    130 when interrupted (the report is written; a second run resumes)."""
    import inspect

    args = vars(parser().parse_args(list(sys.argv[1:] if argv is None else argv)))
    import torch

    from medfocal.inference.predictor import Predictor
    from medfocal.inference.writer import check_output_writable

    threads = args.pop("threads")
    if threads > 0:
        torch.set_num_threads(threads)
    folder = {k: args.pop(k) for k in inspect.signature(Predictor.predict_folder).parameters if k in args}
    try:
        check_output_writable(folder["output_dir"])  # before the (slow) checkpoint load
        predictor = Predictor.from_checkpoint(**args)
        result = predictor.predict_folder(**folder)
    except (FileNotFoundError, ValueError) as err:
        print(f"medfocal infer: error: {err}", file=sys.stderr)
        return 2
    for case, message in result.failures:
        print(f"ERROR {case}: {message}", file=sys.stderr)
    for note in _run_notes(result.rows):
        print(f"medfocal infer: warning: {note}", file=sys.stderr)
    print(result.summary.splitlines()[0])
    print(f"report: {result.report_path}")
    if result.html_path is not None:
        print(f"review page: {result.html_path}")
    return result.exit_code  # 0 all done, 1 some cases failed, 130 interrupted (Ctrl-C; run again to resume)
