"""``medfocal export``: a checkpoint's network as ONNX or TorchScript, with its model card inside.

Example::

    medfocal export -c runs/medfocal/version_0/checkpoints/best.ckpt -o model.onnx
    medfocal infer -c model.onnx -i imagesTs/ -o predictions/      # onnxruntime, same masks
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from medfocal.cli._options import add_signature_options, new_parser

__all__ = ["HELP", "main", "parser"]

HELP = "Export a checkpoint to ONNX (.onnx) or TorchScript (.pt) with its model card."

_FORMATS = {".onnx": "export_onnx", ".pt": "export_torchscript", ".ts": "export_torchscript"}


def parser() -> argparse.ArgumentParser:
    """The ``medfocal export`` parser: the parameters of :func:`medfocal.export.export_onnx`."""
    from medfocal.export import export_onnx

    p = new_parser(
        "export",
        "The format follows the output's suffix: .onnx (onnxruntime; extra medfocal[onnx]) or .pt "
        "(TorchScript). Batch and spatial axes are dynamic; the model card (preprocessing, classes, patch "
        "size, temperature) is stored in the file, so `medfocal infer -c FILE` needs nothing else.",
        "exit status: 0 success, 2 unreadable checkpoint, unknown suffix or missing extra.",
    )
    add_signature_options(
        p,
        export_onnx,
        skip=("opset",),
        flags={"checkpoint": ("-c", "--checkpoint"), "out_path": ("-o", "--output")},
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``medfocal export``: exit 0 on success, 2 on an error (one line on stderr)."""
    args = vars(parser().parse_args(list(sys.argv[1:] if argv is None else argv)))
    import medfocal.export as export
    from medfocal._optional import MissingExtraError

    out = Path(args["out_path"])
    name = _FORMATS.get(out.suffix.lower())
    if name is None:
        print(
            f"medfocal export: error: {out}: unknown format {out.suffix!r}; use .onnx or .pt",
            file=sys.stderr,
        )
        return 2
    try:
        written = getattr(export, name)(**args)
    except (MissingExtraError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"medfocal export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {written}")
    return 0
