"""Tests for medfocal.tasks.callbacks.GammaLogger."""

from __future__ import annotations

import pytest
from tasks_standins import BlobClassificationData, TinyClassifier

from medfocal.losses import AutomatedFocalLoss, FocalLoss
from medfocal.tasks import ClassificationModule, GammaLogger


class _History(GammaLogger):
    """Also remember what was logged, step by step."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._losses:
            self.seen.append(float(trainer.callback_metrics["train/gamma_step"]))


def test_gamma_of_automated_focal_loss_is_logged_each_step(make_trainer):
    loss = AutomatedFocalLoss("softmax")
    history = _History()
    trainer = make_trainer(max_epochs=2, limit_val_batches=0, callbacks=[history])
    trainer.fit(ClassificationModule(TinyClassifier(), loss), BlobClassificationData(n=48))
    assert len(history.seen) == 6  # 3 batches x 2 epochs
    assert history.seen[-1] == pytest.approx(loss.gamma, rel=1e-5)
    assert "train/gamma_epoch" in trainer.callback_metrics


def test_gamma_logger_is_silent_without_an_automated_loss(make_trainer):
    trainer = make_trainer(max_epochs=1, limit_val_batches=0, callbacks=[GammaLogger()])
    trainer.fit(ClassificationModule(TinyClassifier(), FocalLoss()), BlobClassificationData(n=16))
    assert not any("gamma" in key for key in trainer.callback_metrics)
