"""The box prediction head: RetinaNet detections -> boxes in the input's coordinates, tables and counts.

Per case: the card's detector (:func:`medfocal.tasks.detection_builder.build_detector` around the
checkpoint's network, ``card.task_options["detector"]``) runs on the preprocessed image (the card's
``preprocessing``; a 2D ``zoom`` of ``task_options["boxes"]`` is applied here, as in training, and
undone on the boxes); boxes go back to the input: pixels of the original picture (2D, ``x`` = column,
``y`` = row, 0-based continuous edges as VOC after its 1-based offset) or world millimetres in the RAS
convention of nibabel/MONAI through the preprocessed volume's affine (3D, right for oblique volumes,
:func:`medfocal.data.boxes.geometry.image_boxes_to_world`).

Files in the output folder (all written atomically):

- ``boxes/<case>.json`` per case (the record of a finished case: resume skips it);
- ``boxes.csv``: every detection of every case, columns ``image, label, score, x1, y1, x2, y2``
  (3D: ``x1, y1, z1, x2, y2, z2`` in mm), ``label`` the class name, highest score first per image;
- ``boxes.json``: the same per image, with ``coordinates`` and ``box_mode``;
- 3D: ``luna16_submission.csv`` (``seriesuid, coordX, coordY, coordZ, probability``, LPS world as
  LUNA16's ``annotations.csv``);
- with ``HeadOptions.overlays`` (2D): ``overlays/<case>.png``, the picture with its counted boxes.

``report.csv`` gets per case ``count_<class>`` (detections with score >= the card's ``count_threshold``)
and ``count_total``. The tables are rebuilt after every case (so they are complete whatever the runner
calls) and by :meth:`DetectionHead.finalize` from the per-case files.
"""

from __future__ import annotations

import csv
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfocal.card import ModelCard
from medfocal.inference.cases import Case
from medfocal.inference.heads.base import HeadOptions, Network, Prediction, PredictionHead
from medfocal.io import atomic_path
from medfocal.tasks.detection_outputs import (
    LUNA16_COLUMNS,
    box_columns,
    boxes_to_rows,
    counts_per_class,
    detections_to_json,
    luna16_rows,
)

__all__ = ["BOXES_CSV", "BOXES_JSON", "LUNA16_CSV", "BoxPrediction", "DetectionHead", "draw_boxes"]

BOXES_CSV = "boxes.csv"
BOXES_JSON = "boxes.json"
LUNA16_CSV = "luna16_submission.csv"
_CASE_FOLDER = "boxes"
_OVERLAY_FOLDER = "overlays"
# one colour per class index (cycled), readable on smears and CT windows
_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


@dataclass
class BoxPrediction(Prediction):
    """One image's detections in the input's coordinates (``probabilities`` holds the scores).

    Attributes:
        boxes: float64 ``(N, 2 * dims)`` corner boxes: pixels (2D) or world mm, RAS (3D).
        labels: int64 ``(N,)`` class indices into the card's class names.
        scores: float64 ``(N,)`` sigmoid scores.
        coordinates: ``"pixels"`` or ``"world_mm_ras"``.
        source: the input file.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    coordinates: str = "pixels"
    source: str = ""


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    scores: np.ndarray | None = None,
    width: int = 2,
) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` copy of ``image`` (``(H, W)`` or ``(H, W, C)``) with pixel boxes drawn.

    Boxes are ``xyxy`` with 0-based continuous edges (the pixel ``k`` covers ``[k, k + 1)``), one colour
    per class, the class name (and score) written above each box.
    """
    from PIL import Image, ImageDraw

    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        lo, hi = float(pixels.min(initial=0)), float(pixels.max(initial=1))
        pixels = np.clip((pixels - lo) / max(hi - lo, 1e-8) * 255, 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for i, (box, label) in enumerate(zip(np.asarray(boxes, dtype=np.float64), np.asarray(labels))):
        colour = _COLOURS[int(label) % len(_COLOURS)]
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
        text = class_names[int(label)] if int(label) < len(class_names) else str(int(label))
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        draw.text((x1 + 2, max(0.0, y1 - 11)), text, fill=colour)
    return np.asarray(picture)


class DetectionHead(PredictionHead):
    """Boxes, labels and scores per image; tables, counts and overlays (see the module docstring).

    Test-time mirroring is not used (boxes of mirrored passes are not averaged): :meth:`tta_flips` gives
    the plain pass only.

    Raises:
        ValueError: a card without ``task_options["detector"]`` (not written by ``DetectionModule``).
    """

    report_name = "report.csv"

    def __init__(self, card: ModelCard, options: HeadOptions, transforms: Any = None) -> None:
        super().__init__(card, options, transforms)
        settings = card.task_options.get("detector")
        if not isinstance(settings, dict) or "anchor_shapes" not in settings:
            raise ValueError(
                f"{card.path or '<model card>'}: task_options lacks 'detector' (anchors, box selector); "
                "the checkpoint was not written by medfocal.tasks.DetectionModule"
            )
        self.settings = dict(settings)
        self.zoom = (card.task_options.get("boxes") or {}).get("zoom")
        self.count_threshold = float(card.task_options.get("count_threshold", 0.5))
        self.dims = int(card.spatial_dims or len(self.settings["anchor_shapes"][0]))
        self._detectors: dict[int, Any] = {}
        self._cases: dict[str, Case] = {}  # the cases of this run, in order (from output_paths)
        self._records: dict[str, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    # ---- the network pass -----------------------------------------------------------------------
    def _detector(self, network: Network) -> Any:
        """The card's detector around ``network`` (built once per network)."""
        detector = self._detectors.get(id(network))
        if detector is None:
            from medfocal.tasks.detection_builder import build_detector

            if not isinstance(network, torch.nn.Module):
                raise ValueError(
                    f"boxes need the checkpoint's torch network (RetinaNet), got {type(network).__name__}"
                )
            settings = dict(self.settings)
            roi = self.options.roi_size
            settings["roi_size"] = list(roi) if roi is not None else None
            settings["sw_batch_size"] = self.options.sw_batch_size
            settings["sw_overlap"] = self.options.overlap
            detector = build_detector(network, **settings).eval()
            self._detectors[id(network)] = detector
        return detector

    def _zoomed(self, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """``x`` zoomed as training's ``ZoomBoxd`` (area mode, size rounded) and the per-axis factor."""
        if self.zoom is None or float(self.zoom) == 1.0:
            return x, np.ones(self.dims)
        from monai.transforms import Zoom

        size = np.asarray(x.shape[2:], dtype=np.float64)
        factor = np.round(size * float(self.zoom)) / size
        zoomed = Zoom(zoom=factor.tolist(), mode="area", keep_size=False)(x[0])
        return torch.as_tensor(zoomed).unsqueeze(0), factor

    def tta_flips(self, x: torch.Tensor) -> list[tuple[int, ...]]:
        return [()]

    def run(self, network: Network, x: torch.Tensor) -> torch.Tensor:
        """``(1, N, 2 * dims + 2)``: per detection its corner box in voxels of the preprocessed (unzoomed)
        image, its class index and its score."""
        detector = self._detector(network)
        zoomed, factor = self._zoomed(x)
        detector.training = False
        found = detector(zoomed, use_inferer=self.options.roi_size is not None)[0]
        boxes = found["boxes"].float() / torch.as_tensor(np.tile(factor, 2), dtype=torch.float32).to(x.device)
        labels = found["labels"].float().reshape(-1, 1)
        scores = found[detector.pred_score_key].float().reshape(-1, 1)
        return torch.cat([boxes, labels, scores], dim=1).unsqueeze(0)

    # ---- back to the input --------------------------------------------------------------------
    def finish(self, case: Case, image: Any, output: torch.Tensor) -> BoxPrediction:
        """Boxes in pixels of the input picture (2D) or world mm (3D, through the image's affine)."""
        out = output.detach().cpu().double().numpy().reshape(-1, 2 * self.dims + 2)
        boxes, labels, scores = out[:, : 2 * self.dims], out[:, -2].round().astype(np.int64), out[:, -1]
        coordinates = "pixels"
        affine = None
        if self.dims == 3:
            from medfocal.data.boxes.geometry import image_boxes_to_world

            affine = np.asarray(torch.as_tensor(image.affine).cpu(), dtype=np.float64)
            boxes = image_boxes_to_world(boxes, affine)
            coordinates = "world_mm_ras"
        counts = counts_per_class(labels, scores, self.card.class_names, self.count_threshold)
        return BoxPrediction(
            case.case_id,
            scores,
            affine=affine,
            statistics=counts,
            boxes=boxes,
            labels=labels,
            scores=scores,
            coordinates=coordinates,
            source=str(case.paths[0]),
        )

    def report_row(self, prediction: Prediction) -> dict[str, Any]:
        counts = dict(prediction.statistics)
        row = {f"count_{name}": int(n) for name, n in counts.items()}
        row["count_total"] = int(sum(counts.values()))
        return row

    # ---- files ----------------------------------------------------------------------------------
    def output_paths(self, case: Case, output_dir: Path, save_probabilities: str | None) -> list[Path]:
        self._cases[case.case_id] = case
        paths = [Path(output_dir) / _CASE_FOLDER / f"{case.case_id}.json"]
        if self.options.overlays and self.dims == 2:
            paths.append(Path(output_dir) / _OVERLAY_FOLDER / f"{case.case_id}.png")
        return paths

    def write(self, case: Case, prediction: Prediction, paths: list[Path]) -> None:
        if not isinstance(prediction, BoxPrediction):
            raise ValueError(f"{case.source}: expected a BoxPrediction, got {type(prediction).__name__}")
        record = detections_to_json(
            case.case_id,
            prediction.boxes,
            prediction.labels,
            prediction.scores,
            self.card.class_names,
            prediction.coordinates,
        )
        record["source"] = prediction.source
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(paths[0]) as tmp:
            tmp.write_text(json.dumps(record, indent=1))
        if len(paths) > 1:
            self._write_overlay(case, prediction, paths[1])
        # the tables of all cases (boxes.csv, boxes.json) are written once by finalize; the per-case
        # JSON above is the durable record a killed run resumes from

    def _write_overlay(self, case: Case, prediction: BoxPrediction, path: Path) -> None:
        from PIL import Image

        keep = prediction.scores >= self.count_threshold
        with Image.open(case.paths[0]) as img:
            pixels = np.asarray(img.convert("RGB"))
        boxes, labels, scores = prediction.boxes[keep], prediction.labels[keep], prediction.scores[keep]
        picture = draw_boxes(pixels, boxes, labels, self.card.class_names, scores)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Image.fromarray(picture).save(tmp, format="PNG")

    def finalize(self, output_dir: Path, rows: list[dict[str, Any]]) -> list[Path]:
        """Rebuild ``boxes.csv``, ``boxes.json`` (and the LUNA16 CSV) from the per-case files of this run."""
        with self._lock:
            self._records = self._read_records(Path(output_dir))
            return self._write_tables(Path(output_dir), self._records)

    def _read_records(self, output_dir: Path) -> dict[str, dict[str, Any]]:
        records = {}
        for case_id in self._cases:
            path = output_dir / _CASE_FOLDER / f"{case_id}.json"
            if path.is_file():
                records[case_id] = json.loads(path.read_text())
        return records

    def _write_tables(self, output_dir: Path, records: dict[str, dict[str, Any]]) -> list[Path]:
        """The tables of every case of this run that has its per-case file, in case order."""
        ordered = [records[c] for c in self._cases if c in records]
        index = {name: k for k, name in enumerate(self.card.class_names)}
        names = list(self.card.class_names)
        rows: list[dict[str, Any]] = []
        luna: list[dict[str, Any]] = []
        for rec in ordered:
            boxes = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 2 * self.dims)
            labels = np.asarray([index[n] for n in rec["labels"]], dtype=np.int64)
            rows += boxes_to_rows(rec["image"], boxes, labels, rec["scores"], names)
            if self.dims == 3:
                luna += luna16_rows(rec["image"], boxes, rec["scores"])
        paths = [output_dir / BOXES_CSV, output_dir / BOXES_JSON]
        _write_table(paths[0], box_columns(self.dims), rows)
        document = {
            "coordinates": "world_mm_ras" if self.dims == 3 else "pixels",
            "box_mode": "xyzxyz" if self.dims == 3 else "xyxy",
            "class_names": names,
            "images": ordered,
        }
        with atomic_path(paths[1]) as tmp:
            tmp.write_text(json.dumps(document, indent=1))
        if self.dims == 3:
            paths.append(output_dir / LUNA16_CSV)
            _write_table(paths[-1], LUNA16_COLUMNS, luna)
        return paths


def _write_table(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
