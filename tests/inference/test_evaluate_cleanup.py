"""``evaluate --cleanup``: the predictions scored as they are and after infer's clean-ups (hand counts)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from medfocal.cli.evaluate import main as main_evaluate
from medfocal.inference import evaluate_folders
from medfocal.inference.cleanup import clean_labels


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _folders(tmp_path):
    """Two cases of a 30x30 lesion (label 1) predicted exactly, plus 5-pixel specks far from it (case a:
    two, case b: one); label 2 is a pair of blobs predicted exactly (keeping the largest loses one)."""
    for case, specks in (("a", 2), ("b", 1)):
        gt = np.zeros((64, 64), np.uint8)
        gt[5:35, 5:35] = 1
        gt[50:54, 40:44] = 2  # 16 px
        gt[50:53, 55:58] = 2  # 9 px
        pred = gt.copy()
        for i in range(specks):
            pred[45 + 6 * i, 2:7] = 1  # 5 px each, 10+ px from the lesion
        _png(tmp_path / "pred" / f"{case}.png", pred)
        _png(tmp_path / "gt" / f"{case}.png", gt)
    return tmp_path / "pred", tmp_path / "gt"


def test_clean_labels_by_hand():
    label = np.zeros((10, 10), np.uint8)
    label[0:3, 0:3] = 1  # 9 px
    label[6, 6] = 1  # 1 px
    label[8:10, 0:2] = 2  # 4 px
    label[8, 8] = 2  # 1 px
    largest = clean_labels(label.copy(), [1, 2], keep_largest=True)
    assert (largest == 1).sum() == 9 and (largest == 2).sum() == 4
    small = clean_labels(label.copy(), [1], min_size=2)  # label 2 not listed: untouched
    assert (small == 1).sum() == 9 and (small == 2).sum() == 5
    assert clean_labels(label.copy(), [1, 2]).tolist() == label.tolist()  # no option: unchanged


def test_cleanup_table_and_choice(tmp_path):
    pred, gt = _folders(tmp_path)
    out = str(tmp_path / "e" / "evaluation.csv")
    res = evaluate_folders(pred, gt, labels=[1, 2], output=out, cleanup=True, plot=False)
    by = {(r["label"], r["metric"]): r for r in res.cleanup}
    # label 1: 900 px lesion; case a 10 px of specks, case b 5 px
    dice_a, dice_b = 2 * 900 / (910 + 900), 2 * 900 / (905 + 900)
    assert by[(1, "dice")]["as_predicted"] == pytest.approx((dice_a + dice_b) / 2)
    assert by[(1, "dice")]["keep_largest"] == pytest.approx(1.0)
    assert by[(1, "dice")]["min_size_10"] == pytest.approx(1.0)  # 5-px specks are under 10
    assert by[(1, "hd95_mm")]["keep_largest"] == pytest.approx(0.0)
    # label 2: keeping the largest loses the 9 px blob: Dice 2*16/(16+25); min-size 100 removes both
    assert by[(2, "dice")]["as_predicted"] == pytest.approx(1.0)
    assert by[(2, "dice")]["keep_largest"] == pytest.approx(32 / 41)
    assert by[(2, "dice")]["min_size_100"] == pytest.approx(0.0)
    text = res.cleanup_text
    assert "label 1: infer --keep-largest raises the mean Dice" in text
    assert "label 2: no clean-up raises the mean Dice" in text
    rows = list(csv.DictReader(res.cleanup_path.open()))
    assert res.cleanup_path.name == "evaluation_cleanup.csv" and len(rows) == 4
    # the scores as predicted are those of a run without cleanup
    plain = evaluate_folders(pred, gt, labels=[1, 2], output="")
    assert plain.cleanup == [] and plain.cleanup_text == ""
    assert [r["dice"] for r in plain.rows] == [r["dice"] for r in res.rows]


def test_cli_cleanup(tmp_path, capsys):
    pred, gt = _folders(tmp_path)
    assert main_evaluate(["-p", str(pred), "-g", str(gt), "--cleanup", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "infer --keep-largest raises the mean Dice" in out and "clean-up:" in out
