"""Hostile training configurations through the Python API, on the demo's generated data (issue 15).

Item 5: a network whose output channels do not match the data's classes is refused in ``setup``, before
the first step, naming the config keys (before: ``out_channels: 3`` on 2 classes trained silently and
wrote a card with 2 class names and 3 classes; 3 labels with ``out_channels: 2`` failed at the first step
with a loss traceback).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl

from medfocal.data import PreprocessingSpec, SegmentationDataModule
from medfocal.losses import DiceFocalLoss
from medfocal.nets import UNet
from medfocal.tasks import SegmentationModule

KEY = "model.init_args.model.init_args.out_channels"


def _demo_like(root: Path) -> SegmentationDataModule:
    """The demo preset's datamodule settings (``configs/demo.yaml``), on a few small cases."""
    return SegmentationDataModule(
        str(root),
        preprocessing=PreprocessingSpec(modality="mri", orientation="RAS", spacing=[1.5, 1.5, 2.5]),
        roi_size=[16, 16, 8],
        num_samples=1,
        batch_size=1,
        num_workers=0,
        check="none",
    )


def _fit(out_channels: int, data: SegmentationDataModule, tmp_path: Path) -> pl.Trainer:
    net = UNet(3, 1, out_channels, channels=(4, 8), strides=(2,), num_res_units=0)
    module = SegmentationModule(net, DiceFocalLoss(include_background=False), compute_hd95=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, data)
    return trainer


@pytest.mark.parametrize(("n_classes", "out_channels"), [(2, 3), (3, 2)])
def test_output_channels_against_the_data_classes(tmp_path, n_classes, out_channels):
    from medfocal.synthetic import make_lesion_dataset

    root = make_lesion_dataset(
        tmp_path / "data", n_train=2, n_test=0, shape=(32, 32, 16), n_classes=n_classes
    )
    with pytest.raises(ValueError) as info:
        _fit(out_channels, _demo_like(root), tmp_path)
    message = str(info.value)
    assert message.startswith(f"the network has {out_channels} output channel(s) ({KEY}) but the data")
    assert str(root) in message and f"has {n_classes} classes" in message
    assert f"with softmax set {KEY}: {n_classes}," in message
    assert "data.init_args.class_names, or 'labels' in dataset.json" in message
