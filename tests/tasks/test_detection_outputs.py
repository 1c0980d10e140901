"""Detection output rows: boxes.csv columns and order, JSON, LUNA16 rows (LPS centres), per-class counts."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
import torch

import medfocal.tasks.detection_outputs as outputs
from medfocal.tasks.detection_outputs import (
    boxes_to_rows,
    counts_per_class,
    detections_to_json,
    luna16_rows,
)


def test_rows_2d_sorted_by_score_with_class_names():
    rows = boxes_to_rows(
        "a.jpg",
        torch.tensor([[0, 0, 4, 4], [1, 2, 3, 5.0]]),
        torch.tensor([0, 2]),
        torch.tensor([0.2, 0.9]),
        ["RBC", "WBC", "Platelets"],
        score_threshold=0.1,
    )
    assert [list(r) for r in rows] == [list(outputs.BOX_COLUMNS_2D)] * 2
    assert rows[0] == {
        "image": "a.jpg",
        "label": "Platelets",
        "score": 0.9,
        "x1": 1.0,
        "y1": 2.0,
        "x2": 3.0,
        "y2": 5.0,
    }
    assert rows[1]["label"] == "RBC"
    assert boxes_to_rows("a.jpg", [[0, 0, 4, 4]], [0], [0.05], ["RBC"], score_threshold=0.1) == []


def test_rows_3d_columns_and_empty_input():
    rows = boxes_to_rows("ct.nii.gz", [[1, 2, 3, 4, 5, 6]], [0], [0.5], ["nodule"])
    assert list(rows[0]) == list(outputs.BOX_COLUMNS_3D)
    assert (rows[0]["z1"], rows[0]["z2"]) == (3.0, 6.0)
    assert boxes_to_rows("x", np.zeros((0, 6)), [], [], ["nodule"]) == []


def test_bad_inputs():
    with pytest.raises(ValueError, match="label 3 is not a class index in \\[0, 2\\)"):
        boxes_to_rows("a", [[0, 0, 1, 1]], [3], [0.5], ["a", "b"])
    with pytest.raises(ValueError, match="boxes, labels and scores differ in length: 1, 1, 2"):
        boxes_to_rows("a", [[0, 0, 1, 1]], [0], [0.5, 0.4], ["a"])


def test_json_is_serialisable():
    d = detections_to_json("a", [[0, 0, 1, 1.5]], [1], [0.25], ["x", "y"], coordinates="pixels")
    assert json.loads(json.dumps(d)) == {
        "image": "a",
        "coordinates": "pixels",
        "box_mode": "xyxy",
        "boxes": [[0.0, 0.0, 1.0, 1.5]],
        "labels": ["y"],
        "scores": [0.25],
    }


def test_luna16_rows_are_lps_centres():
    rows = luna16_rows("1.2.3", [[10, -20, 30, 14, -10, 40.0]], [0.7])
    assert rows == [
        {"seriesuid": "1.2.3", "coordX": -12.0, "coordY": 15.0, "coordZ": 35.0, "probability": 0.7}
    ]
    assert luna16_rows("s", [[0, 0, 0, 2, 2, 2.0]], [0.1], ras_to_lps=False)[0]["coordX"] == 1.0


def test_counts_per_class():
    counts = counts_per_class([0, 0, 1, 2, 2], [0.9, 0.4, 0.8, 0.6, 0.55], ["RBC", "WBC", "Platelets"])
    assert counts == {"RBC": 1, "WBC": 1, "Platelets": 2}


def test_docstring_example():
    result = doctest.testmod(outputs, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
