"""``evaluate --roi``: metrics inside a region of interest (DRIVE's field of view); 0/255 image masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfocal.cli.evaluate import main as main_evaluate
from medfocal.inference import evaluate_folders


def _png(path, array):
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _drive_like(tmp_path):
    """A 20x20 case: vessel in the field of view (left half), false positives outside it."""
    gt = np.zeros((20, 20), np.uint8)
    gt[2:18, 4] = 255  # 16 vessel pixels inside the field of view, stored as 0/255 (as DRIVE's GIFs)
    fov = np.zeros_like(gt)
    fov[:, :10] = 255
    pred = np.zeros_like(gt)
    pred[2:18, 4] = 1  # every vessel pixel found
    pred[2:10, 15] = 1  # 8 false positives outside the field of view
    for name, array in (("pred", pred), ("gt", gt), ("roi", fov)):
        (tmp_path / name).mkdir()
        _png(tmp_path / name / "c1.png", array)
    return tmp_path / "pred", tmp_path / "gt", tmp_path / "roi"


def test_roi_scores_inside_the_region_only(tmp_path):
    pred, gt, roi = _drive_like(tmp_path)
    whole = evaluate_folders(pred, gt, output="")
    inside = evaluate_folders(pred, gt, output="", roi=roi)
    # the 0/255 ground truth reads as label 1 (no stray label 255)
    assert [r["label"] for r in whole.rows] == [1]
    assert whole.rows[0]["dice"] == pytest.approx(2 * 16 / (24 + 16))
    assert whole.rows[0]["lesions_fp"] == 1
    assert inside.rows[0]["dice"] == pytest.approx(1.0)
    assert inside.rows[0]["lesions_fp"] == 0
    assert inside.warnings == []


def test_roi_warns_on_ground_truth_outside_and_refuses_bad_regions(tmp_path):
    pred, gt, roi = _drive_like(tmp_path)
    fov = np.zeros((20, 20), np.uint8)
    fov[:, :10] = 1
    fov[2:6, 4] = 0  # 4 vessel pixels fall outside
    _png(roi / "c1.png", fov)
    res = evaluate_folders(pred, gt, output="", roi=roi)
    assert res.rows[0]["dice"] == pytest.approx(1.0)
    assert any("outside the region of interest" in w and "c1 (4 voxels)" in w for w in res.warnings)
    _png(roi / "c1.png", np.zeros((10, 10)))
    with pytest.raises(ValueError, match=r"c1\.png: region mask of shape \(10, 10\)"):
        evaluate_folders(pred, gt, output="", roi=roi)
    _png(roi / "c1.png", np.zeros((20, 20)))
    with pytest.raises(ValueError, match="empty region mask"):
        evaluate_folders(pred, gt, output="", roi=roi)
    (roi / "c1.png").unlink()
    with pytest.raises(FileNotFoundError, match="no region mask for 1 case"):
        evaluate_folders(pred, gt, output="", roi=roi)


def test_cli_roi(tmp_path, capsys):
    pred, gt, roi = _drive_like(tmp_path)
    assert main_evaluate(["-p", str(pred), "-g", str(gt), "--roi", str(roi), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "1.000" in out and "0.800" not in out
    assert main_evaluate(["-p", str(pred), "-g", str(gt), "--roi", str(tmp_path / "nowhere")]) == 2
    assert "region-of-interest folder not found" in capsys.readouterr().err


def test_roi_on_volumes_checks_the_grid(tmp_path):
    """A NIfTI brain mask: scored inside it; a mask on another grid (affine) is refused."""
    import nibabel as nib

    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    gt = np.zeros((8, 8, 4), np.uint8)
    gt[2:4, 2:4, 1] = 1
    pred = gt.copy()
    pred[7, 7, 3] = 1  # one false positive outside the brain
    brain = np.ones_like(gt)
    brain[6:, 6:, :] = 0
    for name, array, aff in (("pred", pred, affine), ("gt", gt, affine), ("roi", brain, affine)):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(array, aff), tmp_path / name / "c.nii.gz")
    res = evaluate_folders(tmp_path / "pred", tmp_path / "gt", output="", roi=tmp_path / "roi")
    assert res.rows[0]["dice"] == pytest.approx(1.0)
    nib.save(nib.Nifti1Image(brain, np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "roi" / "c.nii.gz")
    with pytest.raises(ValueError, match=r"c\.nii\.gz: region mask's affine differs"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", output="", roi=tmp_path / "roi")


def test_masks_are_read_once_unless_over_the_memory_budget(tmp_path, monkeypatch):
    from medfocal.inference import evaluate as evaluate_module

    pred, gt, roi = _drive_like(tmp_path)
    reads: list[str] = []
    real = evaluate_module.load_mask

    def counting(path, threshold=None):
        reads.append(Path(path).parent.name)
        return real(path, threshold)

    monkeypatch.setattr(evaluate_module, "load_mask", counting)
    once = evaluate_folders(pred, gt, output="", roi=roi, cleanup=True)
    n_cases = len(list(gt.glob("*.png")))
    assert n_cases >= 1 and sorted(reads) == sorted(["gt", "pred", "roi"] * n_cases)  # each file once
    reads.clear()
    monkeypatch.setattr(evaluate_module, "KEEP_MASK_BYTES", 0)
    twice = evaluate_folders(pred, gt, output="", roi=roi, cleanup=True)
    assert sorted(reads) == sorted(["gt", "pred", "roi"] * 2 * n_cases)
    for part in ("rows", "summary", "cleanup", "lesions"):  # repr: NaN (no lesion) equals itself there
        assert getattr(once, part) and repr(getattr(once, part)) == repr(getattr(twice, part))
