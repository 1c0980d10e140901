"""Detection data: box layouts (VOC, COCO, MONAI box JSON), box checks, box-aware transforms, datamodule."""

from __future__ import annotations

from medfocal.data.boxes.checks import box_summary, check_record, format_box_summary, validate_boxes
from medfocal.data.boxes.datamodule import DetectionDataModule, detection_collate
from medfocal.data.boxes.layouts import (
    BoxLayout,
    BoxRecord,
    detect_box_layout,
    read_box_json,
    read_coco,
    read_voc,
)
from medfocal.data.boxes.transforms import BoxPreprocessing, detection_transforms

__all__ = [
    "BoxLayout",
    "BoxPreprocessing",
    "BoxRecord",
    "DetectionDataModule",
    "box_summary",
    "check_record",
    "detect_box_layout",
    "detection_collate",
    "detection_transforms",
    "format_box_summary",
    "read_box_json",
    "read_coco",
    "read_voc",
    "validate_boxes",
]
