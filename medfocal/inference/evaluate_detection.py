"""Score predicted boxes (``medfocal infer``'s ``boxes.csv`` / ``boxes.json``) against box ground truth.

``medfocal evaluate --task detection -p OUT/boxes.csv -g <VOC folder | COCO JSON | box JSON>`` runs
:func:`evaluate_boxes`: mAP@0.5, COCO mAP@[.5:.95] and AP per class, the mean absolute count error per
class (cell counts), and for 3D the FROC sensitivities at 1/8 ... 8 false positives per scan and their
mean (CPM, LUNA16's score), all from :mod:`medfocal.metrics.detection`.

Images are matched by case id (the file name without its image suffix, ``medfocal.io.case_id_of``): the
``image`` column of ``boxes.csv`` against the ground truth's image files. The images scored are the
ground-truth images of ``split`` when given (an image without predictions counts as one where nothing
was found; predictions of other images are ignored), else those of ``boxes.json`` beside the CSV (it
lists images without detections too), else those named in the CSV. 3D boxes are compared in world
millimetres (RAS, as ``infer`` writes them); ``gt_lps`` converts ground truth stored in ITK's LPS world
(LUNA16) first.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfocal.io import atomic_path, case_id_of

__all__ = ["BoxEvaluation", "evaluate_boxes", "read_predicted_boxes"]


@dataclass
class BoxEvaluation:
    """What :func:`evaluate_boxes` computed and wrote.

    Attributes:
        metrics: ``map50``, ``map``, ``ap50/<class>``, ``ap/<class>``, ``count_mae``, ``count_mae/<class>``,
            and for FROC ``froc/<fp>`` and ``cpm``.
        class_names: the classes scored.
        images: the case ids scored.
        metrics_path: JSON of ``metrics`` (NaN as null).
        counts_path: CSV with per image and class the predicted and true counts.
        curves: per class the precision-recall curve at IoU 0.5 (``{"recall", "precision", "scores"}``,
            :func:`medfocal.metrics.detection.precision_recall_curves`; not written to disk).
    """

    metrics: dict[str, float]
    class_names: list[str]
    images: list[str]
    metrics_path: Path
    counts_path: Path
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def summary_text(self) -> str:
        """A small table: AP@0.5, AP@[.5:.95] and count error per class, then the means (and FROC)."""
        m = self.metrics
        header = f"{'class':<16}{'AP@0.5':>9}{'AP@.5:.95':>11}{'count MAE':>11}"
        lines = [f"{len(self.images)} image(s)", header]
        for name in self.class_names:
            lines.append(
                f"{name:<16}{_fmt(m[f'ap50/{name}']):>9}{_fmt(m[f'ap/{name}']):>11}"
                f"{_fmt(m[f'count_mae/{name}']):>11}"
            )
        lines.append(f"{'mean':<16}{_fmt(m['map50']):>9}{_fmt(m['map']):>11}{_fmt(m['count_mae']):>11}")
        if "cpm" in m:
            froc = ", ".join(f"{k.split('/')[1]}: {_fmt(v)}" for k, v in m.items() if k.startswith("froc/"))
            lines.append(f"FROC sensitivity per false positives per image: {froc}; CPM {_fmt(m['cpm'])}")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def read_predicted_boxes(
    path: str | Path,
) -> tuple[dict[str, dict[str, list[Any]]], int, list[str] | None]:
    """Predicted boxes per image from ``boxes.csv``, ``boxes.json`` or their folder.

    Returns:
        ``({image: {"boxes", "labels", "scores"}}, spatial_dims, class_names or None)``; labels are class
        names. With ``boxes.json`` (given, or beside the CSV) images without detections are included.

    Raises:
        FileNotFoundError: no such file or folder without ``boxes.csv``.
        ValueError: a CSV without the box columns.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "boxes.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions not found (expected medfocal infer's boxes.csv)")
    document = path if path.suffix == ".json" else path.with_name("boxes.json")
    if document.is_file():
        data = json.loads(document.read_text())
        images = data.get("images")
        if not isinstance(images, list):
            raise ValueError(f"{document}: expected medfocal infer's boxes.json with an 'images' list")
        out = {
            str(rec["image"]): {"boxes": rec["boxes"], "labels": rec["labels"], "scores": rec["scores"]}
            for rec in images
        }
        dims = 3 if data.get("box_mode") == "xyzxyz" else 2
        return out, dims, data.get("class_names")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        rows = list(reader)
    dims = 3 if "z1" in columns else 2
    axes = ["x1", "y1", "z1", "x2", "y2", "z2"] if dims == 3 else ["x1", "y1", "x2", "y2"]
    missing = [c for c in ("image", "label", "score", *axes) if c not in columns]
    if missing:
        raise ValueError(f"{path}: lacks the columns {missing}; expected medfocal infer's boxes.csv")
    out: dict[str, dict[str, list[Any]]] = {}
    for row in rows:
        entry = out.setdefault(row["image"], {"boxes": [], "labels": [], "scores": []})
        entry["boxes"].append([float(row[a]) for a in axes])
        entry["labels"].append(row["label"])
        entry["scores"].append(float(row["score"]))
    return out, dims, None


def _ground_truth(
    gt: str | Path, class_names: list[str] | None, image_root: str | Path | None, split: str | None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], int, bool]:
    """``({case id: (corner boxes, labels)}, class names, dims, world)`` of a box layout."""
    from monai.data.box_utils import convert_box_to_standard_mode

    from medfocal.data.boxes import detect_box_layout

    layout = detect_box_layout(gt, class_names, image_root)
    if split is not None and split not in layout.splits:
        raise ValueError(f"{gt}: no split {split!r}; the ground truth has {sorted(layout.splits)}")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, records in layout.splits.items():
        if split is not None and name != split:
            continue
        for rec in records:
            boxes = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 2 * layout.spatial_dims)
            if len(boxes) and layout.box_mode not in ("xyxy", "xyzxyz"):
                boxes = np.asarray(convert_box_to_standard_mode(boxes, mode=layout.box_mode), np.float64)
            out[case_id_of(rec.image)] = (boxes, np.asarray(rec.labels, dtype=np.int64))
    return out, list(layout.class_names), layout.spatial_dims, layout.world_coordinates


def _lps_to_ras(boxes: np.ndarray) -> np.ndarray:
    """Corner boxes in LPS world -> RAS world (x and y change sign, so their min and max swap)."""
    out = boxes.copy()
    out[:, [0, 3]] = -boxes[:, [3, 0]]
    out[:, [1, 4]] = -boxes[:, [4, 1]]
    return out


def evaluate_boxes(
    pred: str | Path,
    gt: str | Path,
    output: str | Path | None = None,
    class_names: list[str] | None = None,
    image_root: str | Path | None = None,
    split: str | None = None,
    gt_lps: bool = False,
    froc: bool | None = None,
    froc_iou: float = 0.1,
    count_threshold: float = 0.5,
) -> BoxEvaluation:
    """Score predicted boxes against ground truth (see the module docstring).

    Args:
        pred: ``boxes.csv`` / ``boxes.json`` of ``medfocal infer``, or its output folder.
        gt: ground truth: a Pascal VOC folder, a COCO JSON or MONAI's box JSON (3D, world mm).
        output: folder for ``metrics.json`` and ``counts.csv`` (default: the predictions' folder).
        class_names: classes to score (default: the ground truth's; predicted names must be among them).
        image_root: folder the image paths of a COCO / box JSON are relative to (default: the JSON's).
        split: score exactly the ground-truth images of this split (``train``, ``val``, ``test``).
        gt_lps: 3D ground truth in ITK's LPS world (LUNA16), predictions in RAS (as ``infer`` writes them).
        froc: compute FROC and CPM (default: for 3D).
        froc_iou: IoU from which a detection hits a box for FROC (0.1 as MONAI's LUNA16 tutorial).
        count_threshold: score from which a detection counts as an object (count error).

    Raises:
        FileNotFoundError: missing predictions or ground truth.
        ValueError: images without ground truth, unknown class names, 2D vs 3D mismatch.
    """
    from medfocal.metrics.detection import evaluate_detections, precision_recall_curves

    predicted, dims, _ = read_predicted_boxes(pred)
    truth, names, gt_dims, world = _ground_truth(gt, class_names, image_root, split)
    if dims != gt_dims and predicted:
        raise ValueError(f"{pred}: {dims}D boxes, but the ground truth {gt} is {gt_dims}D")
    # a split: exactly its images (missing predictions: nothing found); else every predicted image
    images = list(truth) if split is not None else list(predicted)
    unknown = [c for c in images if c not in truth]
    if unknown:
        raise ValueError(
            f"{gt}: no ground truth for predicted image(s) {unknown[:5]}"
            f"{f' (+{len(unknown) - 5} more)' if len(unknown) > 5 else ''}; "
            f"ground-truth case ids look like {list(truth)[:3]}"
        )
    index = {n: k for k, n in enumerate(names)}
    pb, pl, ps, gb, gl = [], [], [], [], []
    for image in images:
        entry = predicted.get(image, {"boxes": [], "labels": [], "scores": []})
        bad = sorted({str(n) for n in entry["labels"] if n not in index})
        if bad:
            raise ValueError(f"{pred}: image {image!r} has labels {bad}, not classes of {gt}: {names}")
        pb.append(np.asarray(entry["boxes"], dtype=np.float64).reshape(-1, 2 * gt_dims))
        pl.append(np.asarray([index[n] for n in entry["labels"]], dtype=np.int64))
        ps.append(np.asarray(entry["scores"], dtype=np.float64))
        boxes, labels = truth[image]
        gb.append(_lps_to_ras(boxes) if gt_lps and world and len(boxes) else boxes)
        gl.append(labels)
    use_froc = (gt_dims == 3) if froc is None else bool(froc)
    metrics = evaluate_detections(
        pb, pl, ps, gb, gl, names, froc=use_froc, froc_iou=froc_iou, count_threshold=count_threshold
    )
    folder = Path(output) if output is not None else Path(pred if Path(pred).is_dir() else Path(pred).parent)
    folder.mkdir(parents=True, exist_ok=True)
    metrics_path, counts_path = folder / "metrics.json", folder / "counts.csv"
    plain = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    with atomic_path(metrics_path) as tmp:
        tmp.write_text(json.dumps({"images": len(images), "metrics": plain}, indent=1))
    with atomic_path(counts_path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "class", "predicted", "true"])
        for image, labels, scores, truth_labels in zip(images, pl, ps, gl):
            kept = np.bincount(labels[scores >= count_threshold], minlength=len(names))
            true = np.bincount(truth_labels, minlength=len(names))
            for k, name in enumerate(names):
                writer.writerow([image, name, int(kept[k]), int(true[k])])
    curves = precision_recall_curves(pb, pl, ps, gb, gl, names, iou_threshold=0.5)
    return BoxEvaluation(metrics, names, images, metrics_path, counts_path, curves)
