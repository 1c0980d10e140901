"""Lightning callbacks of medfocal's task modules."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import Callback
from torch import nn

__all__ = ["GammaLogger", "NonFiniteLossError", "NonFiniteLossStop", "find_automated_focal_losses"]


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


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (raised by :class:`NonFiniteLossStop`)."""


class NonFiniteLossStop(Callback):
    """Stop ``fit`` with :class:`NonFiniteLossError` when the training loss turns NaN/Inf.

    Each step's loss is folded into a flag on its device (no host sync); the flag is read every
    ``every_n_steps`` steps and at the end of each training epoch, so a NaN is caught at most that many
    steps late, at the cost of one sync per ``every_n_steps`` steps (``detect_anomaly`` would cost a
    backward-pass check every step).

    Args:
        every_n_steps: steps between two reads of the flag.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self._bad: torch.Tensor | None = None
        self._first_step = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = ~torch.isfinite(loss.detach()).all()
        self._bad = bad if self._bad is None else self._bad | bad
        if trainer.global_step % self.every_n_steps == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        if self._bad is None:
            return
        # every rank reaches this at the same step: all of them stop when one of them saw NaN/Inf
        bad = trainer.strategy.reduce_boolean_decision(bool(self._bad), all=False)
        self._bad = None
        first, self._first_step = self._first_step, trainer.global_step
        if bad:
            raise NonFiniteLossError(
                f"the training loss became NaN/Inf (epoch {trainer.current_epoch}, between steps {first} and "
                f"{trainer.global_step}); training stopped. Check the data (`medfocal check-data --config "
                "...`, check: full), lower the learning rate, or clip gradients "
                "(--trainer.gradient_clip_val=1.0)"
            )
