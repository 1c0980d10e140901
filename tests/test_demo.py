"""`medfocal demo` end to end on a tiny budget: files written, input geometry kept, Dice reported."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from medfocal.demo import main, run_demo


@pytest.mark.slow
def test_demo_writes_masks_in_input_geometry_metrics_and_overlay(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["--out", "demo", "--epochs", "2", "--n-train", "4", "--n-test", "2"])
    assert code == 0
    out = tmp_path / "demo"
    images = sorted((out / "data" / "imagesTs").glob("*.nii.gz"))
    assert len(images) == 2
    for image in images:
        mask = nib.load(out / "predictions" / image.name)
        source = nib.load(image)
        assert mask.shape == source.shape
        np.testing.assert_allclose(mask.affine, source.affine, atol=1e-5)
        assert mask.get_data_dtype() == np.uint8
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["case"] for r in rows} == {"case_004", "case_005"}
    assert (out / "overlay.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "case_004" in printed and "Dice" in printed and "metrics.csv" in printed


def test_demo_refuses_a_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml: training config not found"):
        run_demo(tmp_path, epochs=1, n_train=2, n_test=1, config=tmp_path / "nope.yaml")
