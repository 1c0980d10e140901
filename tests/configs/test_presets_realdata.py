"""Presets on the small real public data in ../shared/data (skipped, saying so, when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medfocal.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FAST = ["--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", "--trainer.devices=1"]

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _run(name: str, overrides: list[str], tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(CONFIGS / f"{name}.yaml"), *overrides, *FAST]) == 0


def test_retina_preset_on_retinamnist(shared_data, tmp_path, monkeypatch):
    npz = shared_data / "medmnist" / "retinamnist.npz"
    if not npz.is_file():
        # justified: real data is optional (../shared/data or $MEDFOCAL_DATA); skip and say so
        pytest.skip(f"{npz} not present")
    _run(
        "retina_lesion",
        [f"--data.init_args.layout={npz}", "--data.init_args.num_workers=0"],
        tmp_path,
        monkeypatch,
    )


def test_lesion_preset_on_kvasir_seg_sample(shared_data, tmp_path, monkeypatch):
    root = shared_data / "kvasir_seg_sample"
    if not root.is_dir():
        # justified: real data is optional (../shared/data or $MEDFOCAL_DATA); skip and say so
        pytest.skip(f"{root} not present")
    overrides = [
        f"--data.init_args.layout.init_args.images_dir={root / 'images'}",
        f"--data.init_args.layout.init_args.masks_dir={root / 'masks'}",
        "--data.init_args.layout.init_args.mask_suffix=.jpg",
        "--data.init_args.preprocessing.resize=[64,64]",
        "--data.init_args.batch_size=2",
        "--data.init_args.val_batch_size=1",
        "--data.init_args.num_workers=0",
    ]
    _run("lesion_isic", overrides, tmp_path, monkeypatch)
