"""Run by tests/tasks/test_ddp.py in a subprocess: validation metrics (and, under DDP, balanced draws).

``python ddp_script.py OUT_DIR DEVICES NPZ`` validates a fixed segmentation and a fixed classification
module on in-memory data with ``devices`` CPU processes (``strategy="ddp"``, gloo when 2), writes
``OUT_DIR/metrics_<devices>.json`` from rank 0, and with 2 devices also fits one epoch of a
``ClassificationDataModule(balanced_sampler=True)`` and writes the labels each rank drew to
``OUT_DIR/draws_rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from tasks_standins import BlobClassificationData, BlobSegmentationData, CrossEntropy, TinyClassifier

from medfocal.data import Augmentation, ClassificationDataModule
from medfocal.nets import UNet
from medfocal.tasks import ClassificationModule, SegmentationModule


class DrawRecorder(pl.Callback):
    def __init__(self) -> None:
        self.labels: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.labels += [int(v) for v in batch["label"].reshape(-1)]


def _trainer(devices: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kwargs,
    )


def main(out: Path, devices: int, npz: str) -> None:
    torch.set_num_threads(1)
    values: dict[str, float] = {}
    torch.manual_seed(0)
    seg = SegmentationModule(
        UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0), CrossEntropy(), compute_hd95=True
    )
    trainer = _trainer(devices)
    # 8 images, batch 2: each of 2 ranks sees 4 different images (no padding duplicates)
    trainer.validate(seg, BlobSegmentationData(n=8, batch_size=2, shape=(24, 24)), verbose=False)
    values.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    torch.manual_seed(0)
    cls = ClassificationModule(TinyClassifier(), CrossEntropy())
    trainer = _trainer(devices)
    trainer.validate(cls, BlobClassificationData(n=64, batch_size=8), verbose=False)
    values.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if trainer.global_rank == 0:
        (out / f"metrics_{devices}.json").write_text(json.dumps(values, indent=1, sort_keys=True))
    if devices > 1:
        dm = ClassificationDataModule(
            npz,
            num_workers=0,
            balanced_sampler=True,
            batch_size=20,
            augmentation=Augmentation(flip_prob=0, rot90_prob=0, affine_prob=0, noise_prob=0),
        )
        recorder = DrawRecorder()
        model = ClassificationModule(TinyClassifier(), CrossEntropy())
        trainer = _trainer(devices, max_epochs=1, limit_val_batches=0, callbacks=[recorder])
        trainer.fit(model, dm)
        (out / f"draws_rank{trainer.global_rank}.json").write_text(json.dumps(recorder.labels))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
