"""Resume after a crash: ``medfocal fit`` SIGKILLed mid-epoch, then ``fit --ckpt_path last.ckpt``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

HERE = Path(__file__).resolve().parent

CONFIG = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 5,
        "enable_model_summary": False,
        "enable_progress_bar": False,
        "log_every_n_steps": 1,
    },
    "model": {
        "class_path": "medfocal.tasks.ClassificationModule",
        "init_args": {
            "model": {"class_path": "tasks_standins.TinyClassifier", "init_args": {"num_classes": 3}},
            "loss": {"class_path": "medfocal.losses.FocalLoss", "init_args": {"gamma": 2.0}},
            "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.5}},
            "monitor": "val/scripted",
        },
    },
    "data": {"class_path": "tasks_standins.BlobClassificationData", "init_args": {"n": 48, "batch_size": 16}},
}


def _fit(tmp_path: Path, log: Path, kill_epoch: int, *extra: str) -> subprocess.CompletedProcess:
    config = dict(CONFIG)
    config["trainer"] = {
        **CONFIG["trainer"],
        "callbacks": [
            {"class_path": "resume_standins.KillAt", "init_args": {"epoch": kill_epoch}},
            # the best epoch is 0, before the crash: a resume that forgets it would pick a later one
            {
                "class_path": "resume_standins.ScriptedScore",
                "init_args": {"scores": [0.9, 0.5, 0.6, 0.7, 0.8]},
            },
            {
                "class_path": "resume_standins.EpochLog",
                "init_args": {"path": str(log), "monitor": "val/scripted"},
            },
        ],
    }
    path = tmp_path / f"config_{kill_epoch}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "medfocal.cli", "fit", "--config", str(path), *extra]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def crash_and_resume(tmp_path_factory) -> dict:
    """Fit 5 epochs, SIGKILLed after 2 batches of epoch 3; then resume from last.ckpt to the end."""
    tmp_path = tmp_path_factory.mktemp("resume")
    log = tmp_path / "epochs.jsonl"
    crashed = _fit(tmp_path, log, kill_epoch=3)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    last = tmp_path / "runs" / "medfocal" / "version_0" / "checkpoints" / "last.ckpt"
    last_epoch = torch.load(last, weights_only=False)["epoch"]
    resumed = _fit(tmp_path, log, -1, f"--ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return {"tmp": tmp_path, "rows": rows, "last_epoch": last_epoch}


@pytest.mark.slow
def test_last_ckpt_holds_the_last_finished_epoch_after_a_crash(crash_and_resume):
    assert crash_and_resume["last_epoch"] == 2  # epochs 0-2 finished, 3 killed after its second batch


@pytest.mark.slow
def test_resume_continues_after_the_checkpoint_and_keeps_the_best_checkpoint(crash_and_resume):
    rows = crash_and_resume["rows"]
    pids = list(dict.fromkeys(r["pid"] for r in rows))
    assert len(pids) == 2
    first = [r["epoch"] for r in rows if r["pid"] == pids[0] and r["event"] == "start"]
    second = [r["epoch"] for r in rows if r["pid"] == pids[1] and r["event"] == "start"]
    assert first == [0, 1, 2, 3]
    assert second == list(range(crash_and_resume["last_epoch"] + 1, 5))


@pytest.mark.slow
def test_resume_keeps_the_best_checkpoint_of_before_the_crash(crash_and_resume):
    rows = crash_and_resume["rows"]

    # the best checkpoint is tracked across the crash: epoch 0's 0.9 (before the crash) beats every
    # later epoch, and its file still exists
    scores: dict[int, float] = {}
    for r in rows:
        if r["event"] == "val":
            scores[r["epoch"]] = r["score"]  # an epoch run twice keeps the resumed run's score
    assert sorted(scores) == [0, 1, 2, 3, 4]
    final = sorted(crash_and_resume["tmp"].rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)[-1]
    callbacks = torch.load(final, weights_only=False)["callbacks"]
    state = next(v for k, v in callbacks.items() if "ModelCheckpoint" in k)
    assert float(state["best_model_score"]) == pytest.approx(max(scores.values()))
    assert max(scores, key=scores.get) == 0
    assert Path(state["best_model_path"]).name == "best-epoch000.ckpt"
    assert (crash_and_resume["tmp"] / state["best_model_path"]).is_file()  # relative to the run folder
