"""configs/common/mlflow.yaml: the demo preset trains with Lightning's MLFlowLogger into ./mlflow.db."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# the tracking extra is part of the dev extra: a missing or broken install fails here, it never skips
import mlflow
import pytest
import torch

from medfocal.cli import main
from medfocal.synthetic import make_lesion_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1"]


def _demo_args(root: Path) -> list[str]:
    data = make_lesion_dataset(root / "lesions", n_train=4, n_test=1, shape=(32, 32, 24))
    return [
        "--config", str(CONFIGS / "demo.yaml"),
        "--config", str(CONFIGS / "common" / "mlflow.yaml"),
        f"--data.init_args.layout={data}",
        "--data.init_args.roi_size=[16,16,16]",
        "--data.init_args.preprocessing.spacing=[1.5,1.5,2.0]",
        "--data.init_args.num_workers=0",
        *CPU,
    ]  # fmt: skip


@pytest.mark.slow
def test_demo_fast_dev_run_with_mlflow(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    args = _demo_args(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *args, "--trainer.fast_dev_run=true"]) == 0


@pytest.mark.slow
def test_demo_run_is_tracked_in_mlruns(tmp_path, monkeypatch):
    """One real step + validation: the run, its hyperparameters and metrics are in the local store.

    In a fresh process, as from the shell: MLflow caches its store per URI in a process, so a relative
    ``sqlite:///mlflow.db`` used again from another working directory would reach the first one.
    """
    args = _demo_args(tmp_path / "data")
    short = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.log_every_n_steps=1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "medfocal.cli", "fit", *args, *short]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("medfocal")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert any(k.startswith("val/") for k in run.data.metrics), sorted(run.data.metrics)
    assert run.data.params, "hyperparameters were not logged"
    assert list((tmp_path / "runs" / "medfocal" / "csv").rglob("*.ckpt")), "no checkpoint under runs/"
