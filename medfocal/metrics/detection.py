"""Detection metrics over lists of predicted and ground-truth boxes (MONAI's COCO matching and FROC).

- :func:`detection_metrics`: AP at IoU 0.5, COCO mAP over IoU 0.50:0.05:0.95 and AP per class
  (``monai.apps.detection.metrics.coco.COCOMetric`` on ``matching_batch``); the means are over the classes
  that have ground truth (MONAI's own mean counts the ``-1`` of absent classes in).
- :func:`froc_metrics`: sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per image (scan) and
  their mean, the competition performance metric (CPM) of LUNA16 (Setio et al., Medical Image Analysis
  42, 2017); a detection is a hit when its IoU with a ground-truth box reaches ``iou_threshold`` (0.1 as
  MONAI's LUNA16 tutorial), one hit per box (``monai.metrics.froc``).
- :func:`count_errors`: per class, the mean absolute difference between predicted (score above a
  threshold) and true object counts per image (cell counting).

Boxes are corner mode (``xyxy`` / ``xyzxyz``), any consistent unit; one array per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou
from monai.metrics.froc import compute_froc_curve_data

__all__ = [
    "FROC_FPS",
    "count_errors",
    "detection_metrics",
    "evaluate_detections",
    "froc_metrics",
    "precision_recall_curves",
]

FROC_FPS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
Arrays = Sequence[np.ndarray]


def _np(values: Arrays, width: int | None = None, dtype=np.float64) -> list[np.ndarray]:
    out = []
    for v in values:
        a = np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=dtype)
        out.append(a.reshape(-1, width) if width else a.reshape(-1))
    return out


def _match(
    iou_thresholds: Sequence[float],
    pred_boxes: Arrays,
    pred_labels: Arrays,
    pred_scores: Arrays,
    gt_boxes: Arrays,
    gt_labels: Arrays,
    max_detections: int,
) -> list[dict[int, dict[str, np.ndarray]]]:
    if not (len(pred_boxes) == len(pred_labels) == len(pred_scores) == len(gt_boxes) == len(gt_labels)):
        raise ValueError(
            f"expected one array per image everywhere, got {len(pred_boxes)} pred boxes, {len(pred_labels)} "
            f"pred labels, {len(pred_scores)} scores, {len(gt_boxes)} gt boxes, {len(gt_labels)} gt labels"
        )
    width = None
    for b in [*pred_boxes, *gt_boxes]:
        shape = np.shape(b)
        if len(shape) == 2 and shape[0]:
            width = shape[1]
            break
    width = width or 4
    return matching_batch(
        iou_fn=box_iou,
        iou_thresholds=list(iou_thresholds),
        pred_boxes=_np(pred_boxes, width),
        pred_classes=_np(pred_labels, dtype=np.int64),
        pred_scores=_np(pred_scores),
        gt_boxes=_np(gt_boxes, width),
        gt_classes=_np(gt_labels, dtype=np.int64),
        max_detections=max_detections,
    )


def detection_metrics(
    pred_boxes: Arrays,
    pred_labels: Arrays,
    pred_scores: Arrays,
    gt_boxes: Arrays,
    gt_labels: Arrays,
    class_names: Sequence[str],
    max_detections: int = 100,
) -> dict[str, float]:
    """AP@0.5 (``map50``), COCO mAP@[.5:.95] (``map``), per class ``ap50/<name>`` and ``ap/<name>``.

    Per-class values are NaN for classes without ground truth; the means skip them (NaN when no class
    has any). AP is COCO's 101-point interpolated precision at recall 0, 0.01, ..., 1.

    Example::

        >>> gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30.]])]
        >>> pred = [np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30.]])]
        >>> m = detection_metrics(pred, [np.zeros(3)], [np.array([.9, .8, .7])], gt, [np.zeros(2)], ["a"])
        >>> round(m["map50"], 4)  # (51 * 1 + 50 * 2/3) / 101
        0.835
    """
    names = [str(n) for n in class_names]
    coco = COCOMetric(
        classes=names,
        iou_list=(0.5,),
        iou_range=(0.5, 0.95, 0.05),
        max_detection=(max_detections,),
        verbose=False,
    )
    results = _match(
        coco.iou_thresholds, pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, max_detections
    )
    values, _ = coco(results)
    suffix_range = f"mAP_IoU_0.50_0.95_0.05_MaxDet_{max_detections}"
    suffix_50 = f"AP_IoU_0.50_MaxDet_{max_detections}"
    has_gt = set(int(v) for g in _np(gt_labels, dtype=np.int64) for v in g)
    out: dict[str, float] = {}
    ap50, ap = [], []
    for k, name in enumerate(names):
        a50 = float(values[f"{name}_{suffix_50}"]) if k in has_gt else float("nan")
        a = float(values[f"{name}_{suffix_range}"]) if k in has_gt else float("nan")
        out[f"ap50/{name}"], out[f"ap/{name}"] = a50, a
        if k in has_gt:
            ap50.append(a50)
            ap.append(a)
    out["map50"] = float(np.mean(ap50)) if ap50 else float("nan")
    out["map"] = float(np.mean(ap)) if ap else float("nan")
    return out


def precision_recall_curves(
    pred_boxes: Arrays,
    pred_labels: Arrays,
    pred_scores: Arrays,
    gt_boxes: Arrays,
    gt_labels: Arrays,
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    max_detections: int = 100,
) -> dict[str, dict[str, np.ndarray]]:
    """Per class the precision-recall curve at one IoU: ``{name: {"recall", "precision", "scores"}}``.

    Detections of all images are ranked by score (the same matching as :func:`detection_metrics`, one
    ground-truth box per detection); point ``i`` is the precision and recall of the ``i + 1`` best.
    Classes without ground truth get empty arrays (recall is undefined).

    Example::

        >>> gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30.]])]
        >>> pred = [np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30.]])]
        >>> scores, labels = [np.array([.9, .8, .7])], [np.zeros(3)]
        >>> c = precision_recall_curves(pred, labels, scores, gt, [np.zeros(2)], ["a"])
        >>> c["a"]["recall"].tolist(), c["a"]["precision"].round(3).tolist()
        ([0.5, 0.5, 1.0], [1.0, 0.5, 0.667])
    """
    results = _match(
        [iou_threshold], pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, max_detections
    )
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, name in enumerate(class_names):
        scores, hits, n_gt = [], [], 0
        for image in results:
            res = image.get(k)
            if res is None:
                continue
            keep = ~res["dtIgnore"][0].astype(bool)
            scores.append(res["dtScores"][keep])
            hits.append(res["dtMatches"][0][keep].astype(bool))
            n_gt += int((~res["gtIgnore"].astype(bool)).sum())
        score = np.concatenate(scores) if scores else np.zeros(0)
        hit = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
        if n_gt == 0:
            out[str(name)] = {"recall": np.zeros(0), "precision": np.zeros(0), "scores": np.zeros(0)}
            continue
        order = np.argsort(-score, kind="stable")
        tp = np.cumsum(hit[order])
        ranks = np.arange(1, len(order) + 1)
        out[str(name)] = {"recall": tp / n_gt, "precision": tp / ranks, "scores": score[order]}
    return out


def froc_metrics(
    pred_boxes: Arrays,
    pred_labels: Arrays,
    pred_scores: Arrays,
    gt_boxes: Arrays,
    gt_labels: Arrays,
    iou_threshold: float = 0.1,
    fps_per_image: Sequence[float] = FROC_FPS,
    max_detections: int = 100,
) -> dict[str, float]:
    """FROC sensitivities ``froc/<fp>`` at ``fps_per_image`` false positives per image and their mean ``cpm``.

    Matching is per class (a detection of the wrong class is a false positive); every image counts in the
    false positives per image, also images without ground truth. Sensitivity between operating points is
    linearly interpolated as in MONAI / CAMELYON / LUNA16 code.
    """
    results = _match(
        [iou_threshold], pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, max_detections
    )
    tp_probs, fp_probs = [], []
    num_targets = sum(len(g) for g in _np(gt_labels, dtype=np.int64))
    for image in results:
        for res in image.values():
            matched = res["dtMatches"][0].astype(bool)
            ignored = res["dtIgnore"][0].astype(bool)
            tp_probs.append(res["dtScores"][matched])
            fp_probs.append(res["dtScores"][~matched & ~ignored])
    tp = np.concatenate(tp_probs) if tp_probs else np.zeros(0)
    fp = np.concatenate(fp_probs) if fp_probs else np.zeros(0)
    out: dict[str, float] = {}
    if num_targets == 0:
        for f in fps_per_image:
            out[f"froc/{f:g}"] = float("nan")
        out["cpm"] = float("nan")
        return out
    # a sentinel below every score: MONAI's curve starts at the second-lowest score
    fps, sens = compute_froc_curve_data(
        np.r_[fp, -1.0].astype(np.float64), np.r_[tp, -1.0].astype(np.float64), num_targets, len(results)
    )
    interp = np.interp(fps_per_image, fps[::-1], sens[::-1])
    for f, s in zip(fps_per_image, interp):
        out[f"froc/{f:g}"] = float(s)
    out["cpm"] = float(np.mean(interp))
    return out


def count_errors(
    pred_labels: Arrays,
    pred_scores: Arrays,
    gt_labels: Arrays,
    class_names: Sequence[str],
    score_threshold: float = 0.5,
) -> dict[str, float]:
    """Mean absolute count error per class ``count_mae/<name>`` (and ``count_mae`` over classes).

    Predicted count of class ``k`` in an image: detections of class ``k`` with score >= ``score_threshold``.
    """
    preds = _np(pred_labels, dtype=np.int64)
    scores = _np(pred_scores)
    gts = _np(gt_labels, dtype=np.int64)
    k = len(class_names)
    errors = np.zeros((len(gts), k))
    for i, (p, s, g) in enumerate(zip(preds, scores, gts)):
        kept = p[s >= score_threshold]
        errors[i] = np.abs(np.bincount(kept, minlength=k)[:k] - np.bincount(g, minlength=k)[:k])
    out = {
        f"count_mae/{name}": float(errors[:, j].mean()) if len(gts) else float("nan")
        for j, name in enumerate(class_names)
    }
    out["count_mae"] = float(errors.mean()) if len(gts) else float("nan")
    return out


def evaluate_detections(
    pred_boxes: Arrays,
    pred_labels: Arrays,
    pred_scores: Arrays,
    gt_boxes: Arrays,
    gt_labels: Arrays,
    class_names: Sequence[str],
    froc: bool = False,
    froc_iou: float = 0.1,
    count_threshold: float = 0.5,
) -> dict[str, float]:
    """All detection metrics of a set of images: :func:`detection_metrics`, :func:`count_errors` and, with
    ``froc``, :func:`froc_metrics` (what ``medfocal evaluate --task detection`` reports)."""
    out = detection_metrics(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, class_names)
    out.update(count_errors(pred_labels, pred_scores, gt_labels, class_names, count_threshold))
    if froc:
        out.update(
            froc_metrics(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, iou_threshold=froc_iou)
        )
    return out
