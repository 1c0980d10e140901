"""Lightning callbacks of medfocal's task modules."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from torch import nn

__all__ = ["GammaLogger", "find_automated_focal_losses"]


def find_automated_focal_losses(loss: nn.Module) -> list[nn.Module]:
    """Every ``AutomatedFocalLoss`` inside ``loss`` (the loss itself or a sub-loss of a hybrid)."""
    from medfocal.losses import AutomatedFocalLoss

    return [m for m in loss.modules() if isinstance(m, AutomatedFocalLoss)]


class GammaLogger(Callback):
    """Log the current ``gamma`` of every ``AutomatedFocalLoss`` in ``pl_module.loss``.

    The automated focal loss adapts gamma from the running accuracy (Weber et al., "Automated focal loss
    for image based object detection", 2019); following it tells whether training moved towards the
    hard examples. Logged as ``train/gamma`` (``train/gamma_<i>`` when there are several) on each step
    and as an epoch mean. Does nothing when the loss holds no ``AutomatedFocalLoss``.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: medfocal.tasks.GammaLogger
    """

    def __init__(self, on_step: bool = True) -> None:
        super().__init__()
        self.on_step = on_step
        self._losses: list[nn.Module] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        loss = getattr(pl_module, "loss", None)
        self._losses = find_automated_focal_losses(loss) if isinstance(loss, nn.Module) else []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for i, loss in enumerate(self._losses):
            name = "train/gamma" if len(self._losses) == 1 else f"train/gamma_{i}"
            # the tensor form avoids a device sync per step where the loss offers it
            value = loss.gamma_tensor().detach() if hasattr(loss, "gamma_tensor") else float(loss.gamma)
            pl_module.log(name, value, on_step=self.on_step, on_epoch=True, batch_size=1)
