"""Lesion-wise evaluation in `medfocal evaluate`: hand-made lesions (a split one, a missed small one, a
false-positive one), pooled by size, and the normalised surface Dice."""

from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest

from medfocal.cli import main
from medfocal.inference.evaluate import evaluate_folders


def _save(folder, name, array):
    folder.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), folder / name)


@pytest.fixture
def folders(tmp_path):
    gt = np.zeros((40, 40, 20), np.uint8)
    gt[2:7, 2:7, 2:7] = 1  # A: 125 mm³ (>= 100)
    gt[20:22, 20:22, 10:12] = 1  # B: 8 mm³ (< 10), missed
    gt[30:33, 5:8, 5:8] = 1  # C: 27 mm³ (10-100), found
    pred = np.zeros_like(gt)
    pred[2:4, 2:7, 2:7] = 1  # A found as two components of 50 mm³ each (split: no false positive)
    pred[5:7, 2:7, 2:7] = 1
    pred[30:33, 5:8, 5:8] = 1  # C exactly
    pred[10:13, 30:33, 10:12] = 1  # D: 18 mm³, a false-positive lesion
    _save(tmp_path / "gt", "case.nii.gz", gt)
    _save(tmp_path / "pred", "case.nii.gz", pred)
    _save(tmp_path / "gt", "perfect.nii.gz", gt)
    _save(tmp_path / "pred", "perfect.nii.gz", gt)
    return tmp_path / "pred", tmp_path / "gt"


def test_lesion_table_pools_cases_by_size(folders):
    pred, gt = folders
    result = evaluate_folders(pred, gt)
    table = {r["size"]: r for r in result.lesions if r["label"] == 1}
    # 2 cases x 3 lesions; the perfect case detects all 3, the other 2 of 3
    assert table["all"]["lesions"] == 6 and table["all"]["detected"] == 5
    assert table["all"]["sensitivity"] == pytest.approx(5 / 6)
    # predicted components: 4 + 3, of which 6 overlap a lesion (D does not)
    assert table["all"]["predicted"] == 7 and table["all"]["precision"] == pytest.approx(6 / 7)
    assert table["all"]["f1"] == pytest.approx(2 * (5 / 6) * (6 / 7) / (5 / 6 + 6 / 7))
    assert table["all"]["fp_per_case"] == pytest.approx(0.5)
    assert (table["<10"]["lesions"], table["<10"]["detected"]) == (2, 1)  # B missed once
    assert table["10-100"]["sensitivity"] == 1.0 and table[">=100"]["sensitivity"] == 1.0
    rows = {r["case"]: r for r in result.rows}
    assert (rows["case"]["lesions_gt"], rows["case"]["lesions_detected"]) == (3, 2)
    assert (rows["case"]["lesions_pred"], rows["case"]["lesions_fp"]) == (4, 1)
    assert rows["perfect"]["nsd"] == 1.0 and rows["case"]["nsd"] < 1.0
    written = list(csv.DictReader(result.lesions_path.open()))
    assert {r["size"] for r in written} == {"<10", "10-100", ">=100", "all"}


def test_nsd_is_nan_when_the_label_is_absent_from_both(tmp_path):
    empty = np.zeros((10, 10, 10), np.uint8)
    _save(tmp_path / "gt", "a.nii.gz", empty)
    _save(tmp_path / "pred", "a.nii.gz", empty)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", labels=[1], output="")
    assert math.isnan(result.rows[0]["nsd"]) and math.isnan(result.rows[0]["dice"])


def test_cli_prints_the_lesion_table(folders, capsys):
    pred, gt = folders
    assert main(["evaluate", "-p", str(pred), "-g", str(gt)]) == 0
    out = capsys.readouterr().out
    assert "lesion-wise" in out and "10-100" in out and (pred / "evaluation_lesions.csv").is_file()
