"""Compare predicted masks with ground truth: Dice, IoU, HD95, surface distance, volume difference.

MONAI's metric functions (the functional core of ``DiceMetric`` and ``MeanIoU``) are applied per case
and per label; HD95, the symmetric average surface distance and the normalised surface Dice are
MONAI's definitions computed from one shared edge-distance pass
(:func:`medfocal.metrics.lesion.surface_metrics`), with distances in mm from the voxel spacing of the
affine.

Conventions for empty masks (those of nnU-Net's ``evaluate_folder`` and of MONAI's ``DiceMetric(
ignore_empty=True)``): a label absent from both prediction and ground truth of a case has Dice = IoU =
NaN (undefined, not 1) and is left out of the means (the summary's ``n`` counts the cases scored,
``n_nan`` those left out); one side empty -> Dice = IoU = 0; distances NaN unless both sides hold the
label (reported as NaN rather than infinity).

Region of interest (``roi``): a folder of region masks named like the ground truth (DRIVE's field of
view, a brain mask) restricts every metric to the voxels inside (non-zero): both masks are set to
background outside, so Dice, IoU, distances, volumes and lesions are those of the region, as retinal
vessel papers report DRIVE inside its field of view. Ground-truth foreground outside the region is
reported as a warning (it is not scored).

A 2D image mask (PNG, GIF, ...) holding only the values 0 and 255 is read as 0/1: image editors and
datasets such as DRIVE store binary masks that way.

Bad input is refused, naming the file: non-integer values (a probability map or a mask saved as
0.5 floats; ``threshold`` binarises them on purpose), negative values (-1) and unreadable files. Labels
outside the scored ones (``labels``) are reported in :attr:`EvaluationResult.warnings`, never silently
scored or dropped.

Example:
    >>> res = evaluate_folders("predictions/", "labelsTs/", labels=[1])  # doctest: +SKIP
    >>> print(res.summary_text)                                           # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfocal.inference.cleanup import clean_labels
from medfocal.inference.report import voxel_volume_ml, write_csv
from medfocal.io import NIFTI_SUFFIXES, PHOTO_SUFFIXES, atomic_path, case_id_of, spacing_of
from medfocal.metrics.lesion import (
    DEFAULT_BINS,
    LesionCounts,
    lesion_counts,
    summarise_lesions,
    surface_metrics,
)

__all__ = ["METRICS", "EvaluationResult", "evaluate_case", "evaluate_folders", "load_mask", "parse_regions"]

METRICS = (
    "dice",
    "iou",
    "nsd",
    "hd95_mm",
    "asd_mm",
    "volume_pred_ml",
    "volume_gt_ml",
    "volume_diff_ml",
)
#: per-case lesion counts written beside the metrics (pooled over cases in the lesion table, not averaged)
LESION_COUNTS = ("lesions_gt", "lesions_detected", "lesions_pred", "lesions_fp")
_AFFINE_ATOL = 1e-3
#: ``--min-size`` values (voxels) that ``cleanup`` tries beside ``--keep-largest``
CLEANUP_MIN_SIZES = (10, 100)


@dataclass
class EvaluationResult:
    """Per-case rows (one per case and label), summary rows (mean/std/median per label) and file paths."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    csv_path: Path | None
    summary_path: Path | None
    plot_path: Path | None
    warnings: list[str] = field(default_factory=list)
    #: lesion-wise detection per label and size bin (``label``, ``size``, ``lesions``, ``detected``,
    #: ``predicted``, ``sensitivity``, ``precision``, ``f1``, ``fp_per_case``)
    lesions: list[dict[str, Any]] = field(default_factory=list)
    lesions_path: Path | None = None
    #: the review page (``evaluate_folders(html=True)``)
    html_path: Path | None = None
    #: ``cleanup=True``: per label/region and metric, the mean as predicted and after each clean-up of
    #: ``medfocal infer`` (``label``, ``metric``, ``as_predicted``, ``keep_largest``, ``min_size_<n>``)
    cleanup: list[dict[str, Any]] = field(default_factory=list)
    cleanup_path: Path | None = None

    @property
    def cleanup_text(self) -> str:
        """The clean-up table and, per label, which clean-up raises its mean Dice (empty without)."""
        if not self.cleanup:
            return ""
        ways = [k for k in self.cleanup[0] if k not in ("label", "metric")]
        lines = [f"{'clean-up':<12}{'metric':<10}" + "".join(f"{w:>16}" for w in ways)]
        for r in self.cleanup:
            lines.append(f"{r['label']!s:<12}{r['metric']:<10}" + "".join(f"{r[w]:>16.3f}" for w in ways))
        for r in (r for r in self.cleanup if r["metric"] == "dice" and isinstance(r["label"], int)):
            finite = [w for w in ways if r[w] == r[w]]
            best = max(finite, key=lambda w: (r[w], w == "as_predicted")) if finite else "as_predicted"
            if best == "as_predicted":
                lines.append(f"label {r['label']}: no clean-up raises the mean Dice on these cases")
            else:
                option = "--keep-largest" if best == "keep_largest" else f"--min-size {best.split('_')[-1]}"
                lines.append(
                    f"label {r['label']}: infer {option} raises the mean Dice {r['as_predicted']:.3f} -> "
                    f"{r[best]:.3f} on these cases (choose on validation cases, never on test)"
                )
        return "\n".join(lines)

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
        if self.lesions:
            lines.append(
                f"{'lesion-wise':<12}{'size':>8}{'lesions':>9}{'sens':>7}{'prec':>7}{'F1':>7}{'FP/case':>9}"
            )
            for r in self.lesions:
                lines.append(
                    f"{r['label']!s:<12}{r['size']:>8}{int(r['lesions']):>9}{r['sensitivity']:>7.3f}"
                    f"{r['precision']:>7.3f}{r['f1']:>7.3f}{r['fp_per_case']:>9.2f}"
                )
        return "\n".join(lines)


#: bytes of masks the checking pass of :func:`evaluate_folders` keeps for its scoring pass (the rest is
#: read again): 1 GiB holds about a hundred uint8 BraTS-size volumes
KEEP_MASK_BYTES = 1 << 30


def load_mask(path: str | Path, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integer mask and its 4x4 affine (PNG: identity) from a NIfTI or 2D image file.

    Args:
        path: the mask file.
        threshold: binarise a mask with non-integer values (a probability map): ``>= threshold`` is 1.

    Raises:
        ValueError: unreadable file; non-integer values (NaN, 0.5, ...) without ``threshold``; negative
            values. The message names the file and the values found.
    """
    path = Path(path)
    try:
        if path.name.lower().endswith(PHOTO_SUFFIXES):
            from PIL import Image

            with Image.open(path) as im:
                data, affine = np.asarray(im), np.eye(4)
            if data.dtype == np.uint8 and data.max(initial=0) == 255 and np.isin(data, (0, 255)).all():
                data = (data > 0).astype(np.uint8)  # a binary image mask stored as 0/255
        else:
            import nibabel as nib

            img = nib.load(str(path))
            data, affine = np.asarray(img.dataobj), np.asarray(img.affine)
    except Exception as err:
        raise ValueError(f"{path}: unreadable mask ({type(err).__name__}: {err})") from None
    if data.dtype.kind == "f":
        fractional = ~np.isfinite(data) | (data != np.round(data))
        if fractional.any() and threshold is None:
            examples = ", ".join(f"{v:g}" for v in np.unique(data[fractional])[:3])
            raise ValueError(
                f"{path}: mask values must be integer labels, found non-integer values ({examples}, "
                f"stored as {data.dtype}); give --threshold T to binarise a probability map (>= T is label 1)"
            )
        if fractional.any():
            if not np.isfinite(data).all():
                raise ValueError(f"{path}: NaN/Inf values in the mask, cannot threshold them")
            data = (data >= threshold).astype(np.int64)
        else:
            data = data.astype(np.int64)
    elif data.dtype.kind not in "iub":
        raise ValueError(f"{path}: mask of type {data.dtype}, expected integer labels")
    if data.dtype.kind == "i" and data.size and data.min() < 0:
        negative = sorted({int(v) for v in np.unique(data[data < 0])[:3]})
        raise ValueError(f"{path}: negative label values {negative}; expected class indices 0, 1, 2, ...")
    return data, affine


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
    pred: np.ndarray,
    gt: np.ndarray,
    labels: Sequence[int],
    affine: np.ndarray | None = None,
    nsd_tolerance_mm: float = 1.0,
    size_bins: Sequence[float] = DEFAULT_BINS,
    lesions: dict[int | str, LesionCounts] | None = None,
    regions: dict[str, Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """Metrics of one case for each label and region; ``affine`` gives spacing (mm) and voxel volume (ml).

    Args:
        pred, gt: label maps of the same shape.
        labels: label values to score.
        affine: voxel-to-world affine (spacing in mm, voxel volume in ml); identity when None.
        nsd_tolerance_mm: tolerance of the normalised surface Dice (MONAI ``compute_surface_dice``).
        size_bins: lesion size bin edges (mm³ in 3D, mm² in 2D) of the lesion-wise counts.
        lesions: filled with each label's :class:`~medfocal.metrics.lesion.LesionCounts` when given.
        regions: named unions of labels scored after the labels, e.g. BraTS's
            ``{"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}``; their rows carry the name as ``label``.

    Returns:
        one dict per label, then per region, with keys ``label``, :data:`METRICS` and
        :data:`LESION_COUNTS`.
    """
    from monai.metrics import compute_dice, compute_iou

    affine = np.eye(4) if affine is None else np.asarray(affine)
    spacing = _spacing(affine, pred.ndim)
    voxel_ml = voxel_volume_ml(affine) if pred.ndim == 3 else 1e-3
    rows = []
    members: dict[int | str, list[int]] = {int(k): [int(k)] for k in labels}
    members.update({str(k): [int(v) for v in vs] for k, vs in (regions or {}).items()})
    for label, values in members.items():
        p = torch.from_numpy(np.isin(pred, values))[None, None].float()
        g = torch.from_numpy(np.isin(gt, values))[None, None].float()
        p_any, g_any = bool(p.any()), bool(g.any())
        # absent from both: NaN (ignore_empty=True), as nnU-Net; one side empty: 0
        dice = compute_dice(p, g, include_background=True, ignore_empty=False).item()
        iou = compute_iou(p, g, include_background=True, ignore_empty=False).item()
        if not (p_any or g_any):
            dice = iou = math.nan
        # HD95, ASD and NSD (MONAI's definitions) from one edge-distance pass; distances NaN unless
        # both sides hold the label; NSD NaN when absent from both, as Dice
        surface = surface_metrics(p[0, 0], g[0, 0], nsd_tolerance_mm, spacing=spacing)
        hd95, asd = surface["hd95"], surface["asd"]
        nsd = surface["nsd"] if (p_any or g_any) else math.nan
        counts = lesion_counts(p[0, 0].numpy(), g[0, 0].numpy(), spacing=spacing, size_bins=size_bins)
        if lesions is not None:
            lesions[label] = counts
        vp, vg = float(p.sum()) * voxel_ml, float(g.sum()) * voxel_ml
        rows.append(
            {
                "label": label,
                "dice": dice,
                "iou": iou,
                "nsd": nsd,
                "hd95_mm": hd95,
                "asd_mm": asd,
                "volume_pred_ml": vp,
                "volume_gt_ml": vg,
                "volume_diff_ml": vp - vg,
                "lesions_gt": sum(counts.gt_total.values()),
                "lesions_detected": sum(counts.gt_detected.values()),
                "lesions_pred": sum(counts.pred_total.values()),
                "lesions_fp": counts.false_positives(),
            }
        )
    return rows


def _lesion_table(per_label: dict[int, list[LesionCounts]]) -> list[dict[str, Any]]:
    """Pooled lesion-wise scores per label and size bin (``summarise_lesions``), one row each."""
    out = []
    for label, cases in per_label.items():
        for size, scores in summarise_lesions(cases).items():
            out.append({"label": label, "size": size, **scores})
    return out


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
    # foreground mean: each case's mean over labels (not regions), then summarised like a label
    if sum(isinstance(k, int) for k in groups) > 1:
        cases: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            if isinstance(r["label"], int):
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


def _label_warnings(found: dict[int, dict[str, list[str]]], scored: Sequence[int], chosen: bool) -> list[str]:
    """Lines for labels present in the files but not scored (``chosen``) or seen only in predictions."""
    out = []
    for value, where in sorted(found.items()):
        if value == 0:
            continue
        for side in ("prediction", "ground truth"):
            files = where.get(side, [])
            if not files:
                continue
            shown = ", ".join(files[:3]) + (f" (+{len(files) - 3} more)" if len(files) > 3 else "")
            if chosen and value not in scored:
                out.append(
                    f"label {value} in the {side} of {len(files)} case(s) ({shown}) is not among the "
                    f"scored labels {list(scored)}: not scored"
                )
            elif not chosen and side == "prediction" and not where.get("ground truth"):
                out.append(
                    f"label {value} appears in {len(files)} prediction(s) ({shown}) but in no ground truth: "
                    "scored as a class (Dice 0 where predicted); pass --labels to choose the classes"
                )
    return out


def _check_regions(regions: dict[str, Sequence[int]] | Sequence[str] | None) -> dict[str, list[int]]:
    """Regions as ``{name: [labels]}``; a name that is a number, or a region without labels, is refused."""
    if regions is not None and not isinstance(regions, dict):
        regions = parse_regions(regions)
    out: dict[str, list[int]] = {}
    for name, values in (regions or {}).items():
        name = str(name).strip()
        if not name or name.lstrip("-").isdigit():
            raise ValueError(f"regions: a region needs a name that is not a label number, got {name!r}")
        members = sorted({int(v) for v in values})
        if not members or min(members) < 1:
            raise ValueError(f"regions: {name} must list foreground labels (>= 1), got {list(values)}")
        out[name] = members
    return out


def parse_regions(items: Sequence[str] | None) -> dict[str, list[int]]:
    """``["WT=1,2,3,4", "ET=4"]`` -> ``{"WT": [1, 2, 3, 4], "ET": [4]}`` (the ``--regions`` syntax).

    Raises:
        ValueError: an item without ``NAME=`` or with a value that is not an integer label.
    """
    out: dict[str, list[int]] = {}
    for item in items or []:
        name, sep, values = str(item).partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = [int(v) for v in values.replace(" ", "").split(",") if v]
        except ValueError:
            raise ValueError(
                f"--regions: expected NAME=LABEL,LABEL,... (e.g. WT=1,2,3,4), got {item!r}"
            ) from None
    return out


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    labels: Sequence[int] | None = None,
    output: str | Path | None = None,
    plot: bool = True,
    threshold: float | None = None,
    nsd_tolerance_mm: float = 1.0,
    size_bins: Sequence[float] = DEFAULT_BINS,
    html: bool = False,
    images: str | Path | None = None,
    regions: dict[str, Sequence[int]] | Sequence[str] | None = None,
    roi: str | Path | None = None,
    cleanup: bool = False,
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
        threshold: binarise masks holding non-integer values (probability maps) at this value
            (``>= threshold`` is label 1); without it such a mask is an error. Integer-valued masks are
            read as they are.
        nsd_tolerance_mm: tolerance (mm) of the normalised surface Dice.
        size_bins: lesion size bin edges (mm³ in 3D, mm² in 2D) of the lesion-wise table: a lesion is
            a connected component; a ground-truth lesion is detected when a predicted component overlaps
            it; a predicted component overlapping none is a false-positive lesion
            (:mod:`medfocal.metrics.lesion`).
        html: also write ``<stem>.html`` beside the CSV (``pred_dir/evaluation.html`` by default), a
            self-contained review page: the rows worst Dice first, three-plane overlays of each case with
            its prediction (red) and ground truth (green), lesion counts and volumes, box plots.
        images: the input images for the page's overlays (a folder, file or CSV list as
            ``medfocal infer`` takes, case ids = mask names); default: the ground truth as background.
        regions: named unions of labels scored like a label after the labels (rows, summary and
            lesion table carry the name): ``{"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}`` or the
            command line's ``WT=1,2,3,4 TC=1,3,4 ET=4`` (BraTS's whole tumour, core, enhancing).
        roi: a folder of region-of-interest masks named like the ground-truth files (non-zero = inside,
            e.g. DRIVE's field of view): every metric is computed inside the region only (prediction
            and ground truth set to background outside it); ground truth outside is a warning.
        cleanup: also score the predictions after each clean-up ``medfocal infer`` offers, per label:
            ``--keep-largest`` (the largest connected component of each label) and ``--min-size`` 10
            and 100 (voxels), and say which raises the mean Dice; written to
            ``<stem>_cleanup.csv``. Run it on validation predictions and apply the choice to new cases
            (nnU-Net's post-processing choice); never choose on a test set.

    The lesion-wise table (per label and size bin: lesions, detected, sensitivity, precision, F1,
    false-positive lesions per case) goes to ``<stem>_lesions.csv``.

    A label absent from both sides of a case has Dice/IoU NaN and is left out of the means (nnU-Net's
    and MONAI's ``ignore_empty`` convention); labels found in the files but not scored are listed in
    ``warnings``.

    Raises:
        FileNotFoundError: a folder is missing, empty, or predictions are missing for some cases.
        ValueError: a prediction's shape or affine differs from its ground truth (naming both files); a
            mask with non-integer values (without ``threshold``) or negative values (naming the file).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    gt_files = _mask_files(gt_dir)
    pairs = [(pred_dir / g.name, g) for g in gt_files]
    missing = [p.name for p, _ in pairs if not p.is_file()]
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: folder not found")
    if missing:
        raise FileNotFoundError(f"{pred_dir}: no prediction for {len(missing)} case(s): {missing[:5]}")
    roi_dir = Path(roi) if roi is not None else None
    if roi_dir is not None:
        if not roi_dir.is_dir():
            raise FileNotFoundError(f"{roi_dir}: region-of-interest folder not found")
        no_roi = [g.name for _, g in pairs if not (roi_dir / g.name).is_file()]
        if no_roi:
            raise FileNotFoundError(
                f"{roi_dir}: no region mask for {len(no_roi)} case(s): {no_roi[:5]} "
                "(region masks are matched to the ground truth by file name)"
            )
    # a first pass finds the labels and refuses bad files before any output; the masks it read are kept
    # for the scoring pass up to KEEP_MASK_BYTES (beyond that, read again)
    found: dict[int, dict[str, list[str]]] = {}
    outside: list[str] = []
    kept: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    room = KEEP_MASK_BYTES
    for i, (pp, gp) in enumerate(pairs):
        pred, pa = load_mask(pp, threshold)
        gt, ga = load_mask(gp, threshold)
        _check_geometry(pred, pa, gt, ga, pp, gp)
        if roi_dir is not None:
            region = _region(roi_dir / gp.name, gt.shape, ga)
            lost = int(np.count_nonzero(gt[~region]))
            if lost:
                outside.append(f"{case_id_of(gp)} ({lost} voxels)")
            pred, gt = np.where(region, pred, 0), np.where(region, gt, 0)
        if pred.nbytes + gt.nbytes <= room:
            kept[i] = (pred, gt, ga)
            room -= pred.nbytes + gt.nbytes
        for side, array in (("prediction", pred), ("ground truth", gt)):
            for v in np.unique(array):
                found.setdefault(int(v), {}).setdefault(side, []).append(case_id_of(gp))
    chosen = labels is not None
    if labels is None:
        labels = sorted(k for k in found if k > 0)
        if not labels:
            raise ValueError(f"{gt_dir}: no foreground label in ground truth or predictions; pass --labels")
    use = sorted(int(k) for k in labels)
    notes = _label_warnings(found, use, chosen)
    if outside:
        notes.append(
            f"ground-truth foreground outside the region of interest is not scored: {', '.join(outside[:5])}"
            + (f" (+{len(outside) - 5} more cases)" if len(outside) > 5 else "")
        )
    regions = _check_regions(regions)
    rows: list[dict[str, Any]] = []
    ways = {"keep_largest": (True, 0), **{f"min_size_{n}": (False, n) for n in CLEANUP_MIN_SIZES}}
    cleaned_rows: dict[str, list[dict[str, Any]]] = {w: [] for w in ways} if cleanup else {}
    per_label: dict[int | str, list[LesionCounts]] = {label: [] for label in [*use, *regions]}
    for i, (pp, gp) in enumerate(pairs):
        if i in kept:
            pred, gt, ga = kept.pop(i)
        else:
            pred, _ = load_mask(pp, threshold)
            gt, ga = load_mask(gp, threshold)
            if roi_dir is not None:
                region = _region(roi_dir / gp.name, gt.shape, ga)
                pred, gt = np.where(region, pred, 0), np.where(region, gt, 0)
        counts: dict[int | str, LesionCounts] = {}
        for r in evaluate_case(
            pred, gt, use, ga, nsd_tolerance_mm, size_bins, lesions=counts, regions=regions
        ):
            rows.append({"case": case_id_of(gp), **r})
        for label, c in counts.items():
            per_label[label].append(c)
        for way in cleaned_rows:
            largest, min_size = ways[way]
            cleaned = clean_labels(pred.copy(), use, keep_largest=largest, min_size=min_size)
            for r in evaluate_case(cleaned, gt, use, ga, nsd_tolerance_mm, size_bins, regions=regions):
                cleaned_rows[way].append({"case": case_id_of(gp), **r})
    summary = _summarise(rows)
    cleanup_rows = _cleanup_table(summary, {w: _summarise(r) for w, r in cleaned_rows.items()})
    lesion_rows = _lesion_table(per_label)
    lesions_path = cleanup_path = None
    csv_path = summary_path = plot_path = None
    if output != "":
        csv_path = Path(output) if output is not None else pred_dir / "evaluation.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(rows, csv_path, first=("case", "label"))
        stem = csv_path.name[: -len(csv_path.suffix)] if csv_path.suffix else csv_path.name
        summary_path = write_csv(
            summary, csv_path.with_name(f"{stem}_summary.csv"), first=("label", "metric")
        )
        lesions_path = write_csv(
            lesion_rows, csv_path.with_name(f"{stem}_lesions.csv"), first=("label", "size")
        )
        if plot:
            plot_path = _box_plot(rows, [*use, *regions], csv_path.with_name(f"{stem}_boxplot.png"))
        if cleanup_rows:
            cleanup_path = write_csv(
                cleanup_rows, csv_path.with_name(f"{stem}_cleanup.csv"), first=("label",)
            )
    html_path = _review_page(rows, pairs, csv_path or pred_dir / "evaluation.csv", images) if html else None
    return EvaluationResult(
        rows,
        summary,
        csv_path,
        summary_path,
        plot_path,
        notes,
        lesion_rows,
        lesions_path,
        html_path,
        cleanup_rows,
        cleanup_path,
    )


def _cleanup_table(
    summary: list[dict[str, Any]], cleaned: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per label/region: mean Dice and HD95 as predicted and after each clean-up (``[]`` without)."""
    if not cleaned:
        return []
    means = {"as_predicted": summary, **cleaned}
    by = {w: {(r["label"], r["metric"]): r["mean"] for r in rs} for w, rs in means.items()}
    out = []
    for label in dict.fromkeys(r["label"] for r in summary if r["label"] != "mean"):
        for metric in ("dice", "hd95_mm"):
            out.append({"label": label, "metric": metric, **{w: by[w][(label, metric)] for w in means}})
    return out


def _region(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The boolean region of interest in ``path`` (non-zero = inside) on the ground truth's grid
    (``shape``, ``affine``)."""
    region, region_affine = load_mask(path, threshold=0.5)
    if region.shape != tuple(shape):
        raise ValueError(f"{path}: region mask of shape {region.shape}, the ground truth has {tuple(shape)}")
    if not np.allclose(region_affine, affine, atol=_AFFINE_ATOL):
        raise ValueError(
            f"{path}: region mask's affine differs from the ground truth's; resample it to that grid"
        )
    if not region.any():
        raise ValueError(f"{path}: empty region mask (nothing to score inside it)")
    return region > 0


def _review_page(
    rows: list[dict[str, Any]], pairs: list[tuple[Path, Path]], csv_path: Path, images: str | Path | None
) -> Path:
    """``<stem>.html`` beside the CSV: :func:`medfocal.inference.html_report.write_html_report`."""
    from medfocal.inference.html_report import evaluation_cases, write_html_report

    cases = evaluation_cases(pairs, images)
    return write_html_report(rows, csv_path.with_suffix(".html"), cases, title="medfocal evaluation")
