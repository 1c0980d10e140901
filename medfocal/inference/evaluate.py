"""Compare predicted masks with ground truth: Dice, IoU, HD95, surface distance, volume difference.

MONAI's metric functions (the functional core of ``DiceMetric``, ``MeanIoU``,
``HausdorffDistanceMetric(percentile=95)`` and ``SurfaceDistanceMetric(symmetric=True)``) are applied
per case and per label, with distances in mm from the voxel spacing of the affine.

Conventions for empty masks (as in nnU-Net's evaluation, except that Dice of two empty masks is 1):
both empty -> Dice = IoU = 1, distances NaN; one of them empty -> Dice = IoU = 0, distances NaN
(undefined, reported as NaN rather than infinity). Summaries ignore NaN.

Example:
    >>> res = evaluate_folders("predictions/", "labelsTs/", labels=[1])  # doctest: +SKIP
    >>> print(res.summary_text)                                           # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfocal.inference.report import voxel_volume_ml, write_csv
from medfocal.io import NIFTI_SUFFIXES, PHOTO_SUFFIXES, atomic_path, case_id_of, spacing_of

__all__ = ["METRICS", "EvaluationResult", "evaluate_case", "evaluate_folders", "load_mask"]

METRICS = ("dice", "iou", "hd95_mm", "asd_mm", "volume_pred_ml", "volume_gt_ml", "volume_diff_ml")
_AFFINE_ATOL = 1e-3


@dataclass
class EvaluationResult:
    """Per-case rows (one per case and label), summary rows (mean/std/median per label) and file paths."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    csv_path: Path | None
    summary_path: Path | None
    plot_path: Path | None
    #: the review page (``evaluate_folders(html=True)``)
    html_path: Path | None = None

    @property
    def summary_text(self) -> str:
        lines = [f"{'label':<12}{'n':>4}  {'Dice mean±std (median)':<26}{'HD95 mm mean (median)':<24}"]
        by = {(r["label"], r["metric"]): r for r in self.summary}
        for label in dict.fromkeys(r["label"] for r in self.summary):
            d, h = by[(label, "dice")], by[(label, "hd95_mm")]
            lines.append(
                f"{label!s:<12}{d['n']:>4}  {d['mean']:.3f}±{d['std']:.3f} ({d['median']:.3f})      "
                f"{h['mean']:.2f} ({h['median']:.2f})"
            )
        return "\n".join(lines)


def load_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Integer mask and its 4x4 affine (PNG: identity) from a NIfTI or 2D image file."""
    path = Path(path)
    if path.name.lower().endswith(PHOTO_SUFFIXES):
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im), np.eye(4)
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as err:
        raise ValueError(f"{path}: unreadable mask ({type(err).__name__}: {err})") from None
    return np.rint(data).astype(np.int64) if data.dtype.kind == "f" else data, np.asarray(img.affine)


def _spacing(affine: np.ndarray, ndim: int) -> list[float]:
    return list(spacing_of(affine, ndim))


def _check_geometry(
    pred: np.ndarray, pa: np.ndarray, gt: np.ndarray, ga: np.ndarray, pp: Path, gp: Path
) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"{pp}: shape {pred.shape} differs from ground truth {gp} {gt.shape}")
    if not np.allclose(pa, ga, atol=_AFFINE_ATOL):
        raise ValueError(
            f"{pp}: affine differs from ground truth {gp} (max abs difference {np.abs(pa - ga).max():.4g}); "
            "predictions must be in the ground truth's geometry"
        )


def evaluate_case(
    pred: np.ndarray, gt: np.ndarray, labels: Sequence[int], affine: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Metrics of one case for each label; ``affine`` gives spacing (mm) and voxel volume (ml).

    Returns:
        one dict per label with keys ``label`` and :data:`METRICS`.
    """
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
    )

    affine = np.eye(4) if affine is None else np.asarray(affine)
    spacing = _spacing(affine, pred.ndim)
    voxel_ml = voxel_volume_ml(affine) if pred.ndim == 3 else 1e-3
    rows = []
    for label in labels:
        p = torch.from_numpy(np.asarray(pred == label))[None, None].float()
        g = torch.from_numpy(np.asarray(gt == label))[None, None].float()
        p_any, g_any = bool(p.any()), bool(g.any())
        dice = compute_dice(p, g, include_background=True, ignore_empty=False).item()
        iou = compute_iou(p, g, include_background=True, ignore_empty=False).item()
        if p_any and g_any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hd95 = compute_hausdorff_distance(
                    p, g, include_background=True, percentile=95, spacing=spacing
                ).item()
                asd = compute_average_surface_distance(
                    p, g, include_background=True, symmetric=True, spacing=spacing
                ).item()
        else:
            hd95 = asd = math.nan
        vp, vg = float(p.sum()) * voxel_ml, float(g.sum()) * voxel_ml
        rows.append(
            {
                "label": int(label),
                "dice": dice,
                "iou": iou,
                "hd95_mm": hd95,
                "asd_mm": asd,
                "volume_pred_ml": vp,
                "volume_gt_ml": vg,
                "volume_diff_ml": vp - vg,
            }
        )
    return rows


def _mask_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    suffixes = NIFTI_SUFFIXES + PHOTO_SUFFIXES
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.lower().endswith(suffixes) and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(f"{folder}: no mask files (.nii.gz/.nii/.png)")
    return files


def _summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["label"], []).append(r)
    # foreground mean: each case's mean over labels, then summarised like a label
    if len(groups) > 1:
        cases: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            cases.setdefault(r["case"], []).append(r)
        groups["mean"] = [
            {
                m: float(np.nanmean([r[m] for r in rs]))
                if not all(math.isnan(r[m]) for r in rs)
                else math.nan
                for m in METRICS
            }
            for rs in cases.values()
        ]
    for label, rs in groups.items():
        for metric in METRICS:
            values = np.asarray([r[metric] for r in rs], dtype=np.float64)
            finite = values[~np.isnan(values)]
            n = int(finite.size)
            out.append(
                {
                    "label": label,
                    "metric": metric,
                    "n": n,
                    "mean": float(finite.mean()) if n else math.nan,
                    "std": float(finite.std()) if n else math.nan,
                    "median": float(np.median(finite)) if n else math.nan,
                    "n_nan": int(values.size - n),
                }
            )
    return out


def _box_plot(rows: list[dict[str, Any]], labels: Sequence[int], path: Path) -> Path:
    # a bare Figure: no pyplot state, so a notebook's inline backend is left alone
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 3)
    for ax, metric, title in zip(
        axes, ("dice", "hd95_mm", "volume_diff_ml"), ("Dice", "HD95 (mm)", "Volume diff (ml)")
    ):
        data = [[r[metric] for r in rows if r["label"] == k and not math.isnan(r[metric])] for k in labels]
        ax.boxplot([d if d else [np.nan] for d in data], showmeans=True)
        ax.set_xticks(range(1, len(labels) + 1), [str(k) for k in labels])
        ax.set_xlabel("label")
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    labels: Sequence[int] | None = None,
    output: str | Path | None = None,
    plot: bool = True,
    html: bool = False,
    images: str | Path | None = None,
) -> EvaluationResult:
    """Score every ground-truth file of ``gt_dir`` against the same-named file in ``pred_dir``.

    Args:
        pred_dir: predicted masks (e.g. the output of ``medfocal infer``; other files are ignored).
        gt_dir: ground-truth masks.
        labels: labels to score; default every value > 0 found in the ground truth or predictions.
        output: per-case CSV path (default ``pred_dir/evaluation.csv``); the summary goes to
            ``<stem>_summary.csv`` and the box plot to ``<stem>_boxplot.png`` beside it; ``""``: no
            files.
        plot: write the box plot PNG.
        html: also write ``<stem>.html`` beside the CSV (``pred_dir/evaluation.html`` by default), a
            self-contained review page: the rows worst Dice first, three-plane overlays of each case with
            its prediction (red) and ground truth (green), lesion counts and volumes, box plots.
        images: the input images for the page's overlays (a folder, file or CSV list as
            ``medfocal infer`` takes, case ids = mask names); default: the ground truth as background.

    Raises:
        FileNotFoundError: a folder is missing, empty, or predictions are missing for some cases.
        ValueError: a prediction's shape or affine differs from its ground truth (naming both files).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    gt_files = _mask_files(gt_dir)
    pairs = [(pred_dir / g.name, g) for g in gt_files]
    missing = [p.name for p, _ in pairs if not p.is_file()]
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: folder not found")
    if missing:
        raise FileNotFoundError(f"{pred_dir}: no prediction for {len(missing)} case(s): {missing[:5]}")
    if labels is None:  # a first pass finds the labels (and refuses bad geometry before any output)
        seen: set[int] = set()
        for pp, gp in pairs:
            pred, pa = load_mask(pp)
            gt, ga = load_mask(gp)
            _check_geometry(pred, pa, gt, ga, pp, gp)
            seen |= {int(v) for v in np.unique(gt)} | {int(v) for v in np.unique(pred)}
        labels = sorted(k for k in seen if k > 0)
        if not labels:
            raise ValueError(f"{gt_dir}: no foreground label in ground truth or predictions; pass --labels")
    use = sorted(int(k) for k in labels)
    rows: list[dict[str, Any]] = []
    for pp, gp in pairs:
        pred, pa = load_mask(pp)
        gt, ga = load_mask(gp)
        _check_geometry(pred, pa, gt, ga, pp, gp)
        for r in evaluate_case(pred, gt, use, ga):
            rows.append({"case": case_id_of(gp), **r})
    summary = _summarise(rows)
    csv_path = summary_path = plot_path = None
    if output != "":
        csv_path = Path(output) if output is not None else pred_dir / "evaluation.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(rows, csv_path, first=("case", "label"))
        stem = csv_path.name[: -len(csv_path.suffix)] if csv_path.suffix else csv_path.name
        summary_path = write_csv(
            summary, csv_path.with_name(f"{stem}_summary.csv"), first=("label", "metric")
        )
        if plot:
            plot_path = _box_plot(rows, use, csv_path.with_name(f"{stem}_boxplot.png"))
    html_path = _review_page(rows, pairs, csv_path or pred_dir / "evaluation.csv", images) if html else None
    return EvaluationResult(rows, summary, csv_path, summary_path, plot_path, html_path=html_path)


def _review_page(
    rows: list[dict[str, Any]], pairs: list[tuple[Path, Path]], csv_path: Path, images: str | Path | None
) -> Path:
    """``<stem>.html`` beside the CSV: :func:`medfocal.inference.html_report.write_html_report`."""
    from medfocal.inference.html_report import evaluation_cases, write_html_report

    cases = evaluation_cases(pairs, images)
    return write_html_report(rows, csv_path.with_suffix(".html"), cases, title="medfocal evaluation")
