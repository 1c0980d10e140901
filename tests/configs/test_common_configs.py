"""configs/common/*.yaml combined with a preset in a real (short, not fast_dev_run) fit.

``trainer.yaml`` first, the demo preset, then ``early_stopping.yaml``: later files override earlier
ones, so the run must log where the preset says, and checkpoint and stop on ``val/dice``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medfocal.cli import main
from medfocal.synthetic import make_lesion_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.slow
def test_trainer_and_early_stopping_blocks_compose_with_the_demo_preset(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    root = make_lesion_dataset(tmp_path / "data", n_train=4, n_test=1, shape=(32, 32, 24))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    configs = [
        CONFIGS / "common" / "trainer.yaml",
        CONFIGS / "demo.yaml",
        CONFIGS / "common" / "early_stopping.yaml",
    ]
    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    args += [
        f"--data.init_args.layout={root}",
        "--data.init_args.roi_size=[16,16,16]",
        "--data.init_args.preprocessing.spacing=[1.5,1.5,2.0]",
        "--model.init_args.model.init_args.channels=[4,8,16]",
        "--trainer.max_epochs=2",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
    ]
    assert main(args) == 0
    # demo.yaml's loggers replace trainer.yaml's (runs/demo, not runs/medfocal)
    assert list((work / "runs" / "demo").glob("version_*")) and not (work / "runs" / "medfocal").exists()
    metrics_csv = next((work / "runs" / "demo" / "csv").rglob("metrics.csv")).read_text()
    assert "val/dice" in metrics_csv.splitlines()[0]
    ckpts = sorted(p.name for p in work.rglob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) == 2, ckpts  # trainer.yaml's checkpoint block: best + last
    state = torch.load(next(work.rglob("last.ckpt")), weights_only=False)
    early = [v for k, v in state["callbacks"].items() if k.startswith("EarlyStopping")]
    assert len(early) == 1 and early[0]["patience"] == 20, state["callbacks"].keys()
    assert "val/dice" in next(k for k in state["callbacks"] if k.startswith("EarlyStopping"))
    best = [v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert best and best[0]["monitor"] == "val/dice"
