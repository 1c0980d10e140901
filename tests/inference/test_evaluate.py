from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest

from medfocal.cli.evaluate import main as main_evaluate
from medfocal.inference import evaluate_case, evaluate_folders

AFFINE = np.diag([2.0, 1.0, 3.0, 1.0])  # voxel 6 mm^3


def _save(path, data, affine=AFFINE):
    img = nib.Nifti1Image(np.asarray(data, dtype=np.uint8), affine)
    nib.save(img, path)


def _pair():
    gt = np.zeros((6, 6, 4), np.uint8)
    pred = np.zeros_like(gt)
    gt[1:3, 1:3, 1] = 1  # 4 voxels
    pred[1:3, 1:4, 1] = 1  # 6 voxels, 4 shared
    gt[5, 5, 3] = 2  # label 2 missed entirely
    return pred, gt


def test_numbers_against_hand_computation():
    pred, gt = _pair()
    one, two = evaluate_case(pred, gt, [1, 2], AFFINE)
    assert one["dice"] == pytest.approx(2 * 4 / (6 + 4))
    assert one["iou"] == pytest.approx(4 / 6)
    # the extra pred voxels (axis 1, spacing 1 mm) lie 1 mm from the gt surface
    assert one["hd95_mm"] == pytest.approx(1.0, abs=0.05)
    assert one["volume_pred_ml"] == pytest.approx(6 * 6 / 1000)
    assert one["volume_diff_ml"] == pytest.approx((6 - 4) * 6 / 1000)
    assert two["dice"] == 0.0 and math.isnan(two["hd95_mm"]) and math.isnan(two["asd_mm"])
    # absent from both sides: undefined (NaN), as nnU-Net and MONAI DiceMetric(ignore_empty=True)
    empty = evaluate_case(np.zeros_like(gt), np.zeros_like(gt), [1])[0]
    assert math.isnan(empty["dice"]) and math.isnan(empty["iou"]) and math.isnan(empty["hd95_mm"])
    # predicted where the ground truth is empty: 0, not NaN
    false_positive = evaluate_case(pred, np.zeros_like(gt), [1])[0]
    assert false_positive["dice"] == 0.0 and false_positive["iou"] == 0.0


def test_anisotropic_spacing_from_affine():
    gt = np.zeros((12, 3, 3), np.uint8)
    pred = np.zeros_like(gt)
    gt[2, 1, 1] = 1
    pred[2:5, 1, 1] = 1  # two voxels further along x
    for spacing in (1.0, 2.5):
        row = evaluate_case(pred, gt, [1], np.diag([spacing, 1.0, 1.0, 1.0]))[0]
        # directed distances pred -> gt are 0, s, 2s; HD95 is their 95th percentile (gt -> pred: 0)
        assert row["hd95_mm"] == pytest.approx(np.percentile([0.0, spacing, 2 * spacing], 95), rel=1e-5)
        assert row["asd_mm"] == pytest.approx((0 + spacing + 2 * spacing + 0) / 4, rel=1e-5)


def test_folders_csv_summary_plot_and_cli(tmp_path, capsys):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    pred, gt = _pair()
    _save(pred_dir / "a.nii.gz", pred)
    _save(gt_dir / "a.nii.gz", gt)
    _save(pred_dir / "b.nii.gz", gt)
    _save(gt_dir / "b.nii.gz", gt)
    (pred_dir / "report.csv").write_text("case,status\n")  # unrelated files are ignored
    res = evaluate_folders(pred_dir, gt_dir)
    assert [(r["case"], r["label"]) for r in res.rows] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    by = {(r["label"], r["metric"]): r for r in res.summary}
    assert by[(1, "dice")]["mean"] == pytest.approx((0.8 + 1.0) / 2)
    assert by[(1, "dice")]["median"] == pytest.approx(0.9)
    assert by[(1, "dice")]["std"] == pytest.approx(0.1)
    assert by[(2, "hd95_mm")]["n"] == 1 and by[(2, "hd95_mm")]["n_nan"] == 1
    assert ("mean", "dice") in by
    assert res.plot_path.is_file() and res.plot_path.read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(res.csv_path.open()))
    assert rows[1]["hd95_mm"] == "nan"

    out = tmp_path / "m" / "metrics.csv"
    assert main_evaluate(["-p", str(pred_dir), "-g", str(gt_dir), "--labels", "1", "-o", str(out)]) == 0
    assert out.is_file() and (tmp_path / "m" / "metrics_summary.csv").is_file()
    assert "Dice" in capsys.readouterr().out


def test_geometry_mismatch_refused(tmp_path, capsys):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    pred, gt = _pair()
    _save(gt_dir / "a.nii.gz", gt)
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    _save(pred_dir / "a.nii.gz", pred, shifted)
    with pytest.raises(
        ValueError, match=r"pred/a\.nii\.gz: affine differs from ground truth .*gt/a\.nii\.gz"
    ):
        evaluate_folders(pred_dir, gt_dir, labels=[1])
    _save(pred_dir / "a.nii.gz", pred[:, :, :3])
    with pytest.raises(ValueError, match=r"shape \(6, 6, 3\) differs from ground truth"):
        evaluate_folders(pred_dir, gt_dir)
    assert main_evaluate(["-p", str(pred_dir), "-g", str(gt_dir)]) == 2
    assert "differs from ground truth" in capsys.readouterr().err
    (pred_dir / "a.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no prediction for 1 case"):
        evaluate_folders(pred_dir, gt_dir)


def _folders(tmp_path, pred, gt, pred_dtype=np.uint8, gt_dtype=np.uint8):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir(exist_ok=True)
    gt_dir.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(pred, dtype=pred_dtype), AFFINE), pred_dir / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(gt, dtype=gt_dtype), AFFINE), gt_dir / "a.nii.gz")
    return pred_dir, gt_dir


def test_a_label_absent_from_both_sides_is_left_out_of_the_mean(tmp_path):
    # case a: label 1 perfect, label 2 absent from both -> the mean row is Dice 1 over one label, and
    # label 2's summary counts no case (it used to count Dice 1 for label 2)
    gt = _pair()[1]
    gt[gt == 2] = 0
    pred_dir, gt_dir = _folders(tmp_path, gt, gt)
    res = evaluate_folders(pred_dir, gt_dir, labels=[1, 2], output="")
    by = {(r["label"], r["metric"]): r for r in res.summary}
    assert by[(2, "dice")]["n"] == 0 and by[(2, "dice")]["n_nan"] == 1
    assert by[("mean", "dice")]["mean"] == 1.0
    # a mean row where label 2 is predicted but absent from the ground truth: 0 counts (a false positive)
    pred2 = gt.copy()
    pred2[0, 0, 0] = 2
    pred_dir, gt_dir = _folders(tmp_path, pred2, gt)
    res = evaluate_folders(pred_dir, gt_dir, labels=[1, 2], output="")
    by = {(r["label"], r["metric"]): r for r in res.summary}
    assert by[("mean", "dice")]["mean"] == pytest.approx(0.5)


def test_float_ground_truth_with_fractions_is_an_error_naming_the_file(tmp_path, capsys):
    gt = _pair()[1]
    lesion = gt > 0
    # lesion stored as 0.5: rint made it 0 and Dice 0 was reported silently
    pred_dir, gt_dir = _folders(tmp_path, lesion, lesion * 0.5, gt_dtype=np.float32)
    with pytest.raises(
        ValueError,
        match=r"gt/a\.nii\.gz: mask values must be integer labels, found "
        r"non-integer values \(0\.5, stored as float32\); give --threshold",
    ):
        evaluate_folders(pred_dir, gt_dir, output="")
    assert main_evaluate(["-p", str(pred_dir), "-g", str(gt_dir), "-o", ""]) == 2
    assert "gt/a.nii.gz: mask values must be integer labels" in capsys.readouterr().err
    # with --threshold, a probability map is binarised on purpose: >= 0.5 is the lesion
    res = evaluate_folders(pred_dir, gt_dir, output="", threshold=0.5)
    assert res.rows[0]["dice"] == pytest.approx(1.0)
    # integer values stored as floats are read as they are
    pred_dir, gt_dir = _folders(tmp_path, lesion, lesion * 2.0, gt_dtype=np.float64)
    res = evaluate_folders(pred_dir, gt_dir, labels=[1, 2], output="")
    assert [r["dice"] for r in res.rows] == [0.0, 0.0]  # gt label 2.0 read as 2, predicted as 1


def test_negative_labels_are_an_error_and_unscored_labels_are_reported(tmp_path, capsys):
    pred, gt = _pair()
    bad_gt = gt.astype(np.int16)
    bad_gt[0, 0, 0] = -1
    pred_dir, gt_dir = _folders(tmp_path, pred, bad_gt, gt_dtype=np.int16)
    with pytest.raises(ValueError, match=r"gt/a\.nii\.gz: negative label values \[-1\]"):
        evaluate_folders(pred_dir, gt_dir, labels=[1], output="")
    # 7 in the prediction, outside the scored labels: reported, not scored
    pred7 = pred.copy()
    pred7[5, 5, 0] = 7
    pred_dir, gt_dir = _folders(tmp_path, pred7, gt)
    res = evaluate_folders(pred_dir, gt_dir, labels=[1, 2], output="")
    assert [r["label"] for r in res.rows] == [1, 2]
    assert res.warnings == [
        "label 7 in the prediction of 1 case(s) (a) is not among the scored labels [1, 2]: not scored"
    ]
    # without --labels, a label found only in predictions is scored but reported
    res = evaluate_folders(pred_dir, gt_dir, output="")
    assert [r["label"] for r in res.rows] == [1, 2, 7] and res.rows[2]["dice"] == 0.0
    assert res.warnings and res.warnings[0].startswith(
        "label 7 appears in 1 prediction(s) (a) but in no ground"
    )
    assert main_evaluate(["-p", str(pred_dir), "-g", str(gt_dir), "--labels", "1", "-o", ""]) == 0
    err = capsys.readouterr().err
    assert "warning: label 2 in the ground truth of 1 case(s) (a) is not among the scored labels [1]" in err
    assert "warning: label 7 in the prediction" in err


def test_regions_are_scored_as_unions_of_labels(tmp_path, capsys):
    """BraTS-style composite regions: WT = 1+2, a region's Dice is the Dice of the label unions, its
    lesion row pools both labels, and it stays out of the per-label foreground mean."""
    pred, gt = _pair()  # label 1: 6 predicted / 4 true voxels, 4 shared; label 2: one true voxel, missed
    pred[5, 0, 0] = 2  # and one false-positive label-2 voxel, apart from the rest
    rows = evaluate_case(pred, gt, [1, 2], AFFINE, regions={"WT": [1, 2]})
    assert [r["label"] for r in rows] == [1, 2, "WT"]
    union_p, union_g = np.isin(pred, [1, 2]), np.isin(gt, [1, 2])
    expected = 2 * (union_p & union_g).sum() / (union_p.sum() + union_g.sum())
    assert rows[2]["dice"] == pytest.approx(expected) and expected == pytest.approx(8 / 12)
    assert rows[2]["lesions_gt"] == 2 and rows[2]["lesions_detected"] == 1 and rows[2]["lesions_fp"] == 1

    pred_dir, gt_dir = _folders(tmp_path, pred, gt)
    out = tmp_path / "m" / "metrics.csv"
    code = main_evaluate(["-p", str(pred_dir), "-g", str(gt_dir), "--regions", "WT=1,2", "-o", str(out)])
    assert code == 0
    summary = {
        (r["label"], r["metric"]): float(r["mean"])
        for r in csv.DictReader((tmp_path / "m" / "metrics_summary.csv").open())
    }
    assert summary[("WT", "dice")] == pytest.approx(8 / 12)
    assert summary[("mean", "dice")] == pytest.approx((0.8 + 0.0) / 2)  # labels only
    table = csv.DictReader((tmp_path / "m" / "metrics_lesions.csv").open())
    lesions = [r for r in table if r["label"] == "WT"]
    assert lesions, "the lesion table has the region's rows"
    assert main_evaluate(["-p", str(pred_dir), "-g", str(gt_dir), "--regions", "WT:1,2"]) == 2
    assert "NAME=LABEL" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a label number"):
        evaluate_folders(pred_dir, gt_dir, regions={"3": [1]}, output="")
