"""Callbacks for tests/tasks/test_resume.py (imported by class_path from a ``medfocal fit`` subprocess)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytorch_lightning as pl


class KillAt(pl.Callback):
    """SIGKILL this process after batch ``batch`` of epoch ``epoch`` (a crash: no clean-up, no save)."""

    def __init__(self, epoch: int = -1, batch: int = 1) -> None:
        super().__init__()
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class EpochLog(pl.Callback):
    """Append ``{"pid", "event", "epoch", "score"}`` lines (flushed at once) to ``path``."""

    def __init__(self, path: str, monitor: str = "val/balanced_accuracy") -> None:
        super().__init__()
        self.path, self.monitor = Path(path), monitor

    def _write(self, **row) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), **row}) + "\n")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._write(event="start", epoch=trainer.current_epoch)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            score = float(trainer.callback_metrics[self.monitor])
            self._write(event="val", epoch=trainer.current_epoch, score=score)


class ScriptedScore(pl.Callback):
    """Log ``val/scripted`` = ``scores[epoch]`` (the checkpoint monitor of the resume test)."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("val/scripted", float(self.scores[trainer.current_epoch]))
