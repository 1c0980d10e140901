"""``medfocal infer`` and ``medfocal evaluate``: thin argument parsers over the Python API.

Examples::

    medfocal infer -c best.ckpt -i imagesTs/ -o predictions/ --tta --save-probabilities npz
    medfocal evaluate -p predictions/ -g labelsTs/ --labels 1 2 -o metrics.csv
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["evaluate_parser", "infer_parser", "main_evaluate", "main_infer"]


def infer_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medfocal infer",
        description=(
            "Predict masks (segmentation) or class probabilities (classification) from a medfocal "
            "checkpoint. "
            "Masks are uint8 NIfTI with the input's exact shape and affine; a report CSV is written "
            "beside them."
        ),
        epilog=(
            "Multi-channel cases: either one 4D NIfTI (x, y, z, c) per case, or nnU-Net naming "
            "case_0000.nii.gz, case_0001.nii.gz, ... (channel = 4-digit suffix). A CSV list needs an 'image' "
            "column (channels separated by ';') and may have a 'case' column."
        ),
    )
    p.add_argument("-c", "--checkpoint", required=True, help="medfocal checkpoint (.ckpt)")
    p.add_argument("-i", "--input", required=True, help="folder of images, a single image, or a .csv list")
    p.add_argument("-o", "--output", required=True, help="output folder (must not be an input folder)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1) (default 0.5)"
    )
    p.add_argument("--sw-batch-size", type=int, default=2, help="windows per forward pass (default 2)")
    p.add_argument(
        "--roi-size", type=int, nargs="+", default=None, help="window size (default: checkpoint's)"
    )
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (2^dims passes)")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on GPU")
    p.add_argument("--keep-largest", action="store_true", help="keep the largest component of each class")
    p.add_argument("--min-size", type=int, default=0, help="remove components smaller than N voxels")
    p.add_argument(
        "--save-probabilities",
        nargs="?",
        const="npz",
        default=None,
        choices=("npz", "nifti"),
        help="also write probabilities: npz (default, float16) or nifti (float32, channels last)",
    )
    p.add_argument("--num-workers", type=int, default=1, help="loader processes (0: a background thread)")
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads for the model (0: torch's default)"
    )
    p.add_argument("--overwrite", action="store_true", help="redo cases whose outputs already exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full unpickling if the safe (weights_only) load fails; only for checkpoints you made",
    )
    return p


def main_infer(argv: Sequence[str] | None = None) -> int:
    """``medfocal infer``: exit 0 if every case succeeded, 1 if some failed, 2 for a run-level error."""
    args = infer_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    import torch

    from medfocal.inference.predictor import Predictor

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        predictor = Predictor.from_checkpoint(
            args.checkpoint,
            device=args.device,
            trust=args.trust_checkpoint,
            overlap=args.overlap,
            tta=args.tta,
            amp=False if args.no_amp else None,
            sw_batch_size=args.sw_batch_size,
            roi_size=args.roi_size,
            keep_largest=args.keep_largest,
            min_size=args.min_size,
        )
        result = predictor.predict_folder(
            args.input,
            args.output,
            overwrite=args.overwrite,
            save_probabilities=args.save_probabilities,
            num_workers=args.num_workers,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"medfocal infer: error: {err}", file=sys.stderr)
        return 2
    for case, message in result.failures:
        print(f"ERROR {case}: {message}", file=sys.stderr)
    print(result.summary.splitlines()[0])
    print(f"report: {result.report_path}")
    return 0 if result.ok else 1


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medfocal evaluate",
        description=(
            "Dice, IoU, HD95, average symmetric surface distance (mm, from the affine) and volume difference "
            "per case and class (MONAI metrics). Writes a per-case CSV, a summary CSV (mean, std, median) "
            "and a box plot PNG."
        ),
    )
    p.add_argument("-p", "--pred", required=True, help="folder of predicted masks")
    p.add_argument("-g", "--gt", required=True, help="folder of ground-truth masks (same file names)")
    p.add_argument(
        "--labels", type=int, nargs="+", default=None, help="labels to score (default: all > 0 seen)"
    )
    p.add_argument("-o", "--output", default=None, help="per-case CSV (default PRED/evaluation.csv)")
    p.add_argument("--no-plot", action="store_true", help="skip the box plot PNG")
    return p


def main_evaluate(argv: Sequence[str] | None = None) -> int:
    """``medfocal evaluate``: exit 0 on success, 2 for missing files or mismatched geometry."""
    args = evaluate_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from medfocal.inference.evaluate import evaluate_folders

    try:
        result = evaluate_folders(
            args.pred, args.gt, labels=args.labels, output=args.output, plot=not args.no_plot
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"medfocal evaluate: error: {err}", file=sys.stderr)
        return 2
    print(result.summary_text)
    print(f"per case: {result.csv_path}\nsummary: {result.summary_path}")
    if result.plot_path is not None:
        print(f"box plot: {result.plot_path}")
    return 0
