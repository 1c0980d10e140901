"""The inference promises through `medfocal infer` itself: exit codes and one line per bad case."""

from __future__ import annotations

import csv
import dataclasses
import functools
import shutil

import nibabel as nib
import numpy as np

from medfocal.cli import main


def _with_nan(src_dir, dst_dir):
    dst_dir.mkdir()
    images = sorted(src_dir.glob("*.nii.gz"))
    for image in images:
        shutil.copy(image, dst_dir / image.name)
    bad = dst_dir / images[0].name
    img = nib.load(bad)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine, img.header), bad)
    return bad, [dst_dir / i.name for i in images[1:]]


def test_nan_voxel_fails_that_case_with_one_line_and_exit_1(ckpt, demo_data, tmp_path, capsys):
    bad, good = _with_nan(demo_data / "imagesTs", tmp_path / "in")
    out = tmp_path / "out"
    assert main(["infer", "-c", str(ckpt), "-i", str(tmp_path / "in"), "-o", str(out), "--no-progress"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and bad.name in errors[0] and "non-finite" in errors[0]
    assert not (out / bad.name).exists()  # no mask at all rather than an empty one
    assert all((out / g.name).is_file() for g in good)
    rows = {r["case"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert rows[bad.name.removesuffix(".nii.gz")]["status"] == "failed"

    again = tmp_path / "replaced"
    args = ["infer", "-c", str(ckpt), "-i", str(tmp_path / "in"), "-o", str(again), "--no-progress"]
    assert main([*args, "--nonfinite", "replace"]) == 0
    rows = {r["case"]: r for r in csv.DictReader((again / "report.csv").open())}
    assert "non-finite" in rows[bad.name.removesuffix(".nii.gz")]["warnings"]


def test_interrupted_run_exits_130(ckpt, demo_data, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the middle: the CLI maps the predictor's interrupted result to exit 130, no traceback."""
    from medfocal.inference.predictor import Predictor

    original = Predictor.predict_folder

    @functools.wraps(original)  # the CLI reads its options from this signature
    def interrupted(self, *args, **kwargs):
        return dataclasses.replace(original(self, *args, **kwargs), interrupted=True)

    monkeypatch.setattr(Predictor, "predict_folder", interrupted)
    out = tmp_path / "out"
    assert main(["infer", "-c", str(ckpt), "-i", str(demo_data / "imagesTs"), "-o", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().out
