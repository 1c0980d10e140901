"""run_cv: two folds of a planned classification config on tiny data, summary files, resume."""

from __future__ import annotations

import csv
import json

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
