"""Training past one machine: a 2-node DDP run simulated on localhost with ``torchrun`` (gloo).

Lightning's ``TorchElasticEnvironment`` reads what torchrun sets (RANK, WORLD_SIZE, NODE_RANK, ...);
medfocal adds nothing of its own. Each "node" runs in its own working directory, as on two machines,
and only global rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent

CONFIG = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "num_nodes": 2,
        "strategy": "ddp",
        "max_steps": 2,
        "max_epochs": 1,
        "limit_val_batches": 1,
        "enable_model_summary": False,
        "enable_progress_bar": False,
        "log_every_n_steps": 1,
    },
    "model": {
        "class_path": "medfocal.tasks.ClassificationModule",
        "init_args": {
            "model": {"class_path": "tasks_standins.TinyClassifier", "init_args": {"num_classes": 3}},
            "loss": {"class_path": "medfocal.losses.FocalLoss", "init_args": {"gamma": 2.0}},
        },
    },
    "data": {"class_path": "tasks_standins.BlobClassificationData", "init_args": {"n": 64, "batch_size": 8}},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_with_torchrun_on_localhost(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    marks = tmp_path / "marks"
    marks.mkdir()
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = "1"
    procs = []
    for node in (0, 1):
        workdir = tmp_path / f"node{node}"
        workdir.mkdir()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={node}"]
        cmd += ["--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}"]
        cmd += ["-m", "medfocal.cli", "fit", "--config", str(config)]
        cmd += ["--trainer.callbacks+=tasks_standins.RankMarker", f"--trainer.callbacks.out_dir={marks}"]
        procs.append(
            subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    for node, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"node {node}:\n{out[-3000:]}"
    # both global ranks trained the same 2 steps in a world of 2 processes
    assert (marks / "rank_0.txt").read_text().split() == ["2", "2"]
    assert (marks / "rank_1.txt").read_text().split() == ["2", "2"]
    # only rank 0 (node 0) writes checkpoints and logs
    assert sorted(p.name for p in (tmp_path / "node0").rglob("*.ckpt"))[-1] == "last.ckpt"
    assert not list((tmp_path / "node1").rglob("*.ckpt"))
