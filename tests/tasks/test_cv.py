"""run_cv: two folds of a planned classification config on tiny data, summary files, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medfocal.data.planning import plan_dataset
from medfocal.tasks.cv import run_cv, summarise_folds

FAST = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--data.init_args.num_workers=0",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
]


def test_summarise_folds_mean_and_std():
    s = summarise_folds([{"metrics": {"a": 1.0}}, {"metrics": {"a": 3.0, "b": 2.0}}])
    assert s["mean"] == {"a": 2.0, "b": 2.0} and s["std"]["a"] == 1.0


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="config not found"):
        run_cv(tmp_path / "none.yaml")
    (tmp_path / "c.yaml").write_text("{}")
    with pytest.raises(ValueError, match="at least 2"):
        run_cv(tmp_path / "c.yaml", folds=1)
    with pytest.raises(ValueError, match=r"folds \[3\] outside 0..1"):
        run_cv(tmp_path / "c.yaml", folds=2, only=[3])


@pytest.mark.slow
def test_two_folds_summary_and_resume(classification_npz, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = plan_dataset(classification_npz, out=tmp_path / "plan.yaml", show=False)
    summary = run_cv(config, folds=2, out_dir=tmp_path / "cv", extra_args=FAST)
    folds = summary["folds"]
    assert [f["fold"] for f in folds] == [0, 1]
    for f in folds:
        assert f["monitor"] == "val/auroc"
        assert (tmp_path / "cv" / f"fold_{f['fold']}").is_dir() and f["best_checkpoint"].endswith(".ckpt")
        # the re-validated best checkpoint reproduces the score the checkpoint callback kept
        assert f["metrics"]["val/auroc"] == pytest.approx(f["best_score"], abs=1e-5)
    assert folds[0]["metrics"] != folds[1]["metrics"]  # different validation folds
    saved = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert saved["mean"]["val/auroc"] == pytest.approx(sum(f["metrics"]["val/auroc"] for f in folds) / 2)
    rows = list(csv.reader((tmp_path / "cv" / "cv_summary.csv").open()))
    assert rows[0][:4] == ["fold", "best_checkpoint", "monitor", "best_score"] and rows[-2][0] == "mean"
    stamp = {f["best_checkpoint"]: __import__("os").stat(f["best_checkpoint"]).st_mtime_ns for f in folds}
    again = run_cv(config, folds=2, out_dir=tmp_path / "cv", extra_args=FAST)  # resumes: nothing to train
    assert again["folds"] == saved["folds"]
    assert all(__import__("os").stat(p).st_mtime_ns == t for p, t in stamp.items())


def _fov_dataset(root, n=6):
    """DRIVE-like paired folders: images, 0/255 vessel masks and a field-of-view folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "1st_manual", "mask"):
        (root / sub).mkdir(parents=True)
    for i in range(21, 21 + n):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3)).astype(np.uint8)).save(
            root / "images" / f"{i}_training.png"
        )
        mask = np.zeros((40, 36), np.uint8)
        mask[5:9, 4:30] = 255
        Image.fromarray(mask).save(root / "1st_manual" / f"{i}_manual1.png")
        Image.fromarray(np.full((40, 36), 255, np.uint8)).save(root / "mask" / f"{i}_training_mask.png")
    return root


@pytest.mark.slow
def test_segmentation_cv_keeps_out_of_fold_predictions_for_evaluate(tmp_path, monkeypatch, capsys):
    """Every case is predicted once, by the fold that did not train on it, into cv/oof/; its label and
    field of view are linked under the prediction's name, and `evaluate --cleanup` runs on them."""
    from PIL import Image

    from medfocal.cli import main

    monkeypatch.chdir(tmp_path)
    data = _fov_dataset(tmp_path / "drive")
    assert main(["plan", str(data), "-o", "plan.yaml"]) == 0
    fast = [*FAST, "--trainer.check_val_every_n_epoch=1", "--data.init_args.cache=none"]
    assert main(["cv", "--config", "plan.yaml", "--folds", "2", "-o", "cv", "--", *fast]) == 0
    printed = capsys.readouterr().out
    assert "medfocal evaluate -p cv/oof -g cv/oof_labels --roi cv/oof_roi --cleanup" in printed
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    names = sorted(p.name for p in (tmp_path / "cv" / "oof").iterdir())
    assert names == [f"{i}.png" for i in range(21, 27)]  # each case once over the folds
    assert sum(f["out_of_fold"]["cases"] for f in summary["folds"]) == 6
    for fold in summary["folds"]:
        k = fold["fold"]
        # the fold's own best checkpoint made its masks, and they are its validation cases
        info = json.loads((tmp_path / "cv" / f"fold_{k}" / "oof" / ".medfocal" / "run.json").read_text())
        assert info["checkpoint"] == fold["best_checkpoint"]
        own = sorted(p.name for p in (tmp_path / "cv" / f"fold_{k}" / "oof").glob("*.png"))
        splits = json.loads((tmp_path / "cv" / f"fold_{k}" / "splits.json").read_text())
        assert own == sorted(f"{r['case']}.png" for r in splits["val"]) and len(own) == 3
        assert fold["out_of_fold"]["failed"] == []
        for name in own:
            assert (tmp_path / "cv" / "oof" / name).resolve() == (
                tmp_path / "cv" / f"fold_{k}" / "oof" / name
            ).resolve()
    for name in names:
        case = name[: -len(".png")]
        assert (
            tmp_path / "cv" / "oof_labels" / name
        ).resolve() == data / "1st_manual" / f"{case}_manual1.png"
        assert (tmp_path / "cv" / "oof_roi" / name).resolve() == data / "mask" / f"{case}_training_mask.png"
        assert np.asarray(Image.open(tmp_path / "cv" / "oof" / name)).shape == (40, 36)
    args = ["evaluate", "-p", "cv/oof", "-g", "cv/oof_labels", "--roi", "cv/oof_roi", "--cleanup"]
    assert main([*args, "--labels", "1", "-o", "oof.csv", "--no-plot"]) == 0
    with open("oof.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    assert Path("oof_cleanup.csv").is_file()
