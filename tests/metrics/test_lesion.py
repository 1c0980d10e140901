"""Lesion-wise metrics against hand-made masks with hand-counted expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medfocal.metrics.lesion import (
    lesion_counts,
    lesion_counts_per_class,
    normalised_surface_dice,
    size_bin_names,
    summarise_lesions,
)


def _case() -> tuple[np.ndarray, np.ndarray]:
    """GT: big lesion (144 px), small lesion (4 px, missed), medium lesion (25 px, predicted split in two
    10 px parts); prediction adds a 9 px false-positive lesion."""
    gt = np.zeros((40, 40), np.uint8)
    pred = np.zeros((40, 40), np.uint8)
    gt[1:13, 1:13] = 1
    pred[1:13, 1:13] = 1
    gt[36:38, 36:38] = 1  # small, missed
    gt[20:25, 20:25] = 1  # medium, split
    pred[20:25, 20:22] = 1
    pred[20:25, 23:25] = 1
    pred[30:33, 2:5] = 1  # false positive, 9 px
    return pred, gt


def test_bin_names():
    assert size_bin_names((10, 100)) == ["<10", "10-100", ">=100"]
    with pytest.raises(ValueError, match="increasing positive"):
        size_bin_names((100, 10))


def test_missed_small_split_and_false_positive():
    pred, gt = _case()
    c = lesion_counts(pred, gt)
    assert c.gt_total == {"<10": 1, "10-100": 1, ">=100": 1}
    assert c.gt_detected == {"<10": 0, "10-100": 1, ">=100": 1}
    assert c.pred_total == {"<10": 1, "10-100": 2, ">=100": 1}
    assert c.pred_tp == {"<10": 0, "10-100": 2, ">=100": 1}
    assert c.false_positives() == 1
    s = summarise_lesions([c])
    assert s["all"]["sensitivity"] == pytest.approx(2 / 3)
    assert s["all"]["precision"] == pytest.approx(3 / 4)
    assert s["all"]["f1"] == pytest.approx(12 / 17)
    assert s["all"]["fp_per_case"] == 1.0
    assert s["<10"]["sensitivity"] == 0.0 and s["<10"]["precision"] == 0.0 and s["<10"]["f1"] == 0.0
    assert s[">=100"]["f1"] == 1.0


def test_iou_threshold_makes_split_halves_false_positives():
    pred, gt = _case()
    s = summarise_lesions([lesion_counts(pred, gt, min_iou=0.5)])  # each half: IoU 10/25 = 0.4
    assert s["all"]["sensitivity"] == pytest.approx(1 / 3)
    assert s["all"]["precision"] == pytest.approx(1 / 4)
    assert s["all"]["fp_per_case"] == 3.0


def test_spacing_bins_in_mm_and_pooling_over_cases():
    pred, gt = _case()
    c = lesion_counts(torch.from_numpy(pred), gt, spacing=(2.0, 2.0))  # sizes x4 mm²
    assert c.gt_total == {"<10": 0, "10-100": 1, ">=100": 2}
    empty = lesion_counts(np.zeros_like(gt), np.zeros_like(gt), spacing=(2.0, 2.0))
    s = summarise_lesions([c, empty])
    assert s["all"]["fp_per_case"] == 0.5
    assert math.isnan(s["<10"]["sensitivity"])


def test_3d_connectivity_and_per_class():
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[1, 1, 1] = 1
    gt[2, 2, 2] = 1  # touches the first one by a corner: one lesion under full connectivity
    gt[4, 4, 4] = 2
    pred = np.zeros_like(gt)
    pred[1, 1, 1] = 1
    assert lesion_counts(pred == 1, gt == 1).gt_total["<10"] == 1
    assert lesion_counts(pred == 1, gt == 1, connectivity=1).gt_total["<10"] == 2
    per = lesion_counts_per_class(pred, gt, classes=[1, 2])
    assert per[1].gt_detected["<10"] == 1 and per[2].gt_detected["<10"] == 0


def test_shape_mismatch_message():
    with pytest.raises(ValueError, match=r"prediction shape \(4, 4\) differs from ground truth \(4, 5\)"):
        lesion_counts(np.zeros((4, 4)), np.zeros((4, 5)))


def test_normalised_surface_dice():
    gt = np.zeros((40, 40), np.uint8)
    gt[2:6, 2:6] = 1
    gt[30:34, 30:34] = 1
    pred = np.zeros_like(gt)
    pred[2:6, 2:6] = 1
    # boundary: 12 px per 4x4 square; the shared square matches on both sides, the other does not
    assert normalised_surface_dice(pred, gt, tolerance_mm=1.0) == pytest.approx(24 / 36)
    assert normalised_surface_dice(gt, gt, tolerance_mm=0.0) == 1.0
    shifted = np.roll(gt, 1, axis=1)
    assert normalised_surface_dice(shifted, gt, tolerance_mm=1.0) == 1.0
    assert normalised_surface_dice(shifted, gt, tolerance_mm=1.0, spacing=(1.0, 3.0)) < 1.0
    assert normalised_surface_dice(np.zeros_like(gt), np.zeros_like(gt), 1.0) == 1.0
    assert normalised_surface_dice(np.zeros_like(gt), gt, 1.0) == 0.0


def _brute_force_hits(pred, target, min_iou):
    """Per lesion and per component, with one full-size mask each: the definition, slowly."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(target.ndim, target.ndim)
    g_lab, n_g = ndimage.label(target, structure)
    p_lab, n_p = ndimage.label(pred, structure)
    g_hit, p_hit = np.zeros(n_g, bool), np.zeros(n_p, bool)
    for i in range(n_g):
        for j in range(n_p):
            a, b = g_lab == i + 1, p_lab == j + 1
            inter = (a & b).sum()
            if inter and inter / (a | b).sum() > min_iou:
                g_hit[i] = p_hit[j] = True
    return g_lab, p_lab, g_hit, p_hit


@pytest.mark.parametrize("min_iou", [0.0, 0.2])
def test_matching_equals_the_brute_force_definition_on_random_masks(min_iou):
    rng = np.random.default_rng(3)
    for _ in range(4):
        target = rng.random((24, 20, 6)) > 0.93
        pred = rng.random((24, 20, 6)) > 0.9
        counts = lesion_counts(pred, target, size_bins=[2, 4], min_iou=min_iou)
        g_lab, p_lab, g_hit, p_hit = _brute_force_hits(pred, target, min_iou)
        g_size = np.bincount(g_lab.ravel())[1:]
        p_size = np.bincount(p_lab.ravel())[1:]
        for name, lo, hi in (("<2", 0, 2), ("2-4", 2, 4), (">=4", 4, np.inf)):
            in_g, in_p = (g_size >= lo) & (g_size < hi), (p_size >= lo) & (p_size < hi)
            assert counts.gt_total[name] == in_g.sum() and counts.pred_total[name] == in_p.sum()
            assert counts.gt_detected[name] == (g_hit & in_g).sum(), name
            assert counts.pred_tp[name] == (p_hit & in_p).sum(), name
