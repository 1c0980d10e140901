"""Fixtures of the task tests: a quiet, small, single-threaded Lightning trainer factory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

# tasks_standins (small datamodules/models) must import by name under any --import-mode, and from
# LightningCLI class_paths
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_trainer(tmp_path):
    def make(**kwargs) -> pl.Trainer:
        defaults = dict(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(tmp_path),
            max_epochs=1,
        )
        defaults.update(kwargs)
        return pl.Trainer(**defaults)

    return make
