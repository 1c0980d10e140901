"""Tests for medfocal.cli.lightning.MedfocalCLI: `medfocal fit|validate` argv lists in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from medfocal.cli import main

HERE = Path(__file__).resolve().parent

CONFIG = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "enable_model_summary": False,
        "enable_progress_bar": False,
        "log_every_n_steps": 1,
    },
    "model": {
        "class_path": "medfocal.tasks.ClassificationModule",
        "init_args": {
            "model": {"class_path": "tasks_standins.TinyClassifier", "init_args": {"num_classes": 3}},
            "loss": {"class_path": "medfocal.losses.FocalLoss", "init_args": {"gamma": 2.0, "alpha": "auto"}},
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
        },
    },
    "data": {"class_path": "tasks_standins.BlobClassificationData", "init_args": {"n": 48, "batch_size": 16}},
}


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def _checkpoints(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt"))


def test_fit_writes_logs_best_and_last_checkpoints(config, tmp_path):
    assert main(["fit", "--config", str(config)]) == 0
    run = tmp_path / "runs" / "medfocal" / "version_0"
    names = sorted(p.name for p in _checkpoints(tmp_path))
    assert names == ["best-epoch001.ckpt", "last.ckpt"] or (names[-1] == "last.ckpt" and len(names) == 2)
    assert (run / "config.yaml").is_file()
    assert list(run.glob("events.out.tfevents*"))
    assert (tmp_path / "runs" / "medfocal" / "csv" / "version_0" / "metrics.csv").is_file()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["medfocal"]["task"] == "classification"
    assert ckpt["medfocal"]["class_names"] == ["common", "rare", "rarest"]
    assert ckpt["medfocal"]["model"]["class_path"] == "tasks_standins.TinyClassifier"
    assert ckpt["hyper_parameters"]["loss"]["init_args"]["alpha"] == "auto"
    # LightningCLI's hyperparameters rebuild the whole module (model, loss, optimizer) from the file
    from medfocal.tasks import ClassificationModule

    restored = ClassificationModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(
        restored.model.state_dict(),
        {k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")},
    )
    callbacks = {k.split("{")[0]: v for k, v in ckpt["callbacks"].items()}
    assert callbacks["ModelCheckpoint"]["monitor"] == "val/balanced_accuracy"
    csv = (tmp_path / "runs" / "medfocal" / "csv" / "version_0" / "metrics.csv").read_text()
    for key in ("val/balanced_accuracy", "val/auroc", "val/f1", "alpha/rarest", "lr-AdamW"):
        assert key in csv, key
    # a re-run in the same folder neither fails on the saved config.yaml nor overwrites the first run
    assert main(["fit", "--config", str(config), "--trainer.max_epochs=1"]) == 0
    assert (tmp_path / "runs" / "medfocal" / "version_1" / "config.yaml").is_file()


def test_alpha_auto_is_resolved_from_the_class_counts_and_logged(config, tmp_path):
    import csv

    from tasks_standins import BlobClassificationData

    from medfocal.losses import class_balanced_alpha

    assert (
        main(["fit", "--config", str(config), "--trainer.max_epochs=1", "--trainer.limit_val_batches=0"]) == 0
    )
    rows = list(csv.DictReader((tmp_path / "runs/medfocal/csv/version_0/metrics.csv").open()))
    logged = [
        float(next(r[f"alpha/{n}"] for r in rows if r.get(f"alpha/{n}")))
        for n in ("common", "rare", "rarest")
    ]
    data = BlobClassificationData(n=48)
    data.setup("fit")
    expected = class_balanced_alpha(data.class_counts())
    torch.testing.assert_close(torch.tensor(logged), expected.float(), rtol=1e-5, atol=1e-6)
    assert logged[2] > logged[0]  # the rarest class weighs most


def test_resume_from_last_continues_epochs_and_optimizer_state(config, tmp_path):
    assert main(["fit", "--config", str(config), "--trainer.max_epochs=1"]) == 0
    last = tmp_path / "runs" / "medfocal" / "version_0" / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=True)
    steps = first["optimizer_states"][0]["state"][0]["step"]
    assert main(["fit", "--config", str(config), "--trainer.max_epochs=2", f"--ckpt_path={last}"]) == 0
    resumed = torch.load(
        tmp_path / "runs" / "medfocal" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert first["epoch"] == 0 and resumed["epoch"] == 1
    assert resumed["global_step"] == 2 * first["global_step"]
    # AdamW's step counter kept counting from the restored state instead of restarting at zero
    assert float(resumed["optimizer_states"][0]["state"][0]["step"]) == 2 * float(steps)


def test_top_level_optimizer_and_scheduler_blocks_reach_the_module(config, tmp_path):
    args = [
        "fit",
        "--config",
        str(config),
        "--trainer.max_epochs=1",
        "--optimizer=SGD",
        "--optimizer.lr=0.5",
        "--lr_scheduler=ReduceLROnPlateau",
        "--lr_scheduler.monitor=val/balanced_accuracy",
        "--lr_scheduler.mode=max",
    ]
    assert main(args) == 0
    ckpt = torch.load(_checkpoints(tmp_path)[-1], weights_only=True)
    assert ckpt["hyper_parameters"]["optimizer"]["class_path"] == "torch.optim.SGD"
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == 0.5
    assert ckpt["lr_schedulers"][0]["mode"] == "max"


def test_mixed_precision_through_the_trainer(config, tmp_path):
    args = ["fit", "--config", str(config), "--trainer.max_epochs=1", "--trainer.precision=bf16-mixed"]
    assert main(args) == 0
    ckpt = torch.load(_checkpoints(tmp_path)[-1], weights_only=True)
    assert ckpt["state_dict"]["model.net.2.weight"].dtype == torch.float32  # AMP keeps float32 weights


def test_validate_subcommand_and_argument_errors(config, capsys):
    assert main(["validate", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["fit", "--config", str(config), "--model.init_args.activation=relu"]) == 2  # argparse usage
    err = capsys.readouterr().err
    assert "Expected a typing.Literal['softmax', 'sigmoid']. Got value: relu" in err, err[-2000:]


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(config, tmp_path):
    """A real 2-process DDP fit (gloo): both ranks train, rank 0 alone writes the checkpoints."""
    marks = tmp_path / "marks"
    marks.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    env.update(OMP_NUM_THREADS="1", MASTER_PORT=str(29500 + os.getpid() % 2000))
    cmd = [sys.executable, "-m", "medfocal.cli", "fit", "--config", str(config)]
    cmd += [
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.max_steps=2",
        "--trainer.max_epochs=1",
    ]
    cmd += ["--trainer.limit_val_batches=1", "--data.init_args.n=64"]
    cmd += ["--trainer.callbacks+=tasks_standins.RankMarker", f"--trainer.callbacks.out_dir={marks}"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in marks.iterdir()) == ["rank_0.txt", "rank_1.txt"]
    assert (marks / "rank_1.txt").read_text().split() == ["2", "2"]  # global step, world size
    ckpts = _checkpoints(tmp_path)
    assert sorted(p.name for p in ckpts)[-1] == "last.ckpt" and len(ckpts) == 2, ckpts
    assert len(list((tmp_path / "runs" / "medfocal").glob("version_*"))) == 1


def _parse(config: Path, *args: str):
    from medfocal.cli.lightning import MedfocalCLI

    return MedfocalCLI(args=["--config", str(config), *args], run=False).config


def test_init_args_carried_across_a_class_change_are_named(config, tmp_path, capsys, monkeypatch):
    from jsonargparse import _typehints

    monkeypatch.setattr(sys, "argv", ["medfocal"])  # the CLI is given its arguments, not pytest's
    original = _typehints.discard_init_args_on_class_path_change
    cfg = _parse(config, "--model.init_args.loss=medfocal.losses.FocalTverskyLoss")
    loss = cfg.model.init_args.loss
    assert loss.class_path == "medfocal.losses.FocalTverskyLoss"
    assert loss.init_args.gamma == 2.0  # jsonargparse's carry-over: the warning is about this
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "class_path changed" in line]
    assert warnings == [
        "medfocal: warning: model.init_args.loss: class_path changed from medfocal.losses.FocalLoss to "
        "medfocal.losses.FocalTverskyLoss, and jsonargparse kept the earlier value's same-named init_args "
        "for FocalTverskyLoss: gamma=2.0 (its default: 0.75); if FocalTverskyLoss should not use them, give "
        "them after the change (--model.init_args.loss.init_args.gamma=...)"
    ]
    assert _typehints.discard_init_args_on_class_path_change is original  # restored after parsing

    # the same change from a second --config that gives gamma again: nothing was carried
    overlay = tmp_path / "tversky.yaml"
    tversky = {"class_path": "medfocal.losses.FocalTverskyLoss", "init_args": {"gamma": 0.75}}
    overlay.write_text(yaml.safe_dump({"model": {"init_args": {"loss": tversky}}}))
    cfg = _parse(config, "--config", str(overlay))
    assert cfg.model.init_args.loss.init_args.gamma == 0.75
    assert "class_path changed" not in capsys.readouterr().err

    # no class change: an init_args override is no carry-over
    cfg = _parse(config, "--model.init_args.loss.init_args.gamma=3.0")
    assert cfg.model.init_args.loss.init_args.gamma == 3.0
    assert "class_path changed" not in capsys.readouterr().err


def test_a_jsonargparse_without_the_hook_gets_no_report_and_no_error(monkeypatch):
    from jsonargparse import _typehints

    from medfocal.cli.lightning import carried_init_args

    monkeypatch.delattr(_typehints, "discard_init_args_on_class_path_change")
    with carried_init_args() as carried:  # a renamed private hook in another version: nothing to wrap
        pass
    assert carried == [] and not hasattr(_typehints, "discard_init_args_on_class_path_change")
