"""Operating points against thresholds counted by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfocal.metrics.operating_point import (
    OperatingPoint,
    apply_operating_point,
    choose_operating_point,
    operating_point_report,
)

# Hand count, positive when score >= t:
#   t    0.9  0.8  0.7  0.6  0.4  0.3  0.2  0.1
#   TPR  .25  .5   .5   .75  1    1    1    1
#   FPR  0    0    .25  .25  .25  .5   .75  1
#   J    .25  .5   .25  .5   .75  .5   .25  0      -> Youden at 0.4
SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
LABELS = np.array([0, 0, 0, 1, 1, 0, 1, 1])


def two_column(scores: np.ndarray) -> np.ndarray:
    return np.stack([1 - scores, scores], axis=1)


def test_youden_threshold():
    point = choose_operating_point(two_column(SCORES), LABELS, rule="youden")
    assert point.threshold == pytest.approx(0.4)
    assert point.val_sensitivity == 1.0 and point.val_specificity == 0.75


@pytest.mark.parametrize("target, threshold, sens", [(0.75, 0.6, 0.75), (0.5, 0.8, 0.5), (1.0, 0.4, 1.0)])
def test_target_sensitivity_threshold(target, threshold, sens):
    point = choose_operating_point(torch.from_numpy(SCORES), LABELS, "sensitivity", target_sensitivity=target)
    assert point.threshold == pytest.approx(threshold)
    assert point.val_sensitivity == sens


def test_apply_and_report_at_argmax_and_chosen():
    point = OperatingPoint("youden", 0.4)
    assert apply_operating_point(two_column(SCORES), point).tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    report = operating_point_report(two_column(SCORES), LABELS, point)
    assert report["argmax"]["accuracy"] == 6 / 8
    assert report["argmax"]["sensitivity"] == 0.75 and report["argmax"]["specificity"] == 0.75
    assert report["chosen"]["accuracy"] == 7 / 8
    assert report["chosen"]["balanced_accuracy"] == pytest.approx(0.875)


def test_multiclass_argmax_only_and_roundtrip():
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    point = choose_operating_point(probs, [1, 0], rule="argmax")
    assert point.threshold is None
    assert apply_operating_point(probs, point).tolist() == [1, 0]
    with pytest.raises(
        ValueError,
        match=r"needs a binary task \(a threshold on the positive class\), got probabilities \(2, 3\); "
        "multi-class tasks use rule='argmax'",
    ):
        choose_operating_point(probs, [1, 0], rule="youden")
    assert OperatingPoint.from_dict(OperatingPoint("youden", 0.4).to_dict()) == OperatingPoint("youden", 0.4)
    with pytest.raises(ValueError, match="expected one of"):
        choose_operating_point(probs, [1, 0], rule="best")


def test_chosen_point_carries_its_validation_figures():
    """``validation``: classification_scores of the chosen decisions on the data it was chosen on, and n."""
    probs = np.array([0.1, 0.35, 0.4, 0.8, 0.2, 0.9])
    labels = np.array([0, 1, 0, 1, 0, 1])
    point = choose_operating_point(probs, labels, rule="youden")
    assert point.threshold == pytest.approx(0.35)  # all positives in, one negative (0.4) out of three
    assert point.validation == pytest.approx(
        {
            "accuracy": 5 / 6,
            "balanced_accuracy": (1 + 2 / 3) / 2,
            "f1_macro": point.validation["f1_macro"],
            "sensitivity": 1.0,
            "specificity": 2 / 3,
            "n": 6.0,
        }
    )
    assert point.validation["f1_macro"] == pytest.approx((0.8 + 6 / 7) / 2)
    again = OperatingPoint.from_dict(point.to_dict())
    assert again == point and again.validation == point.validation
    with pytest.raises(ValueError, match=r"operating point: unknown keys \['auc'\]"):
        OperatingPoint.from_dict({"rule": "youden", "auc": 0.9})
