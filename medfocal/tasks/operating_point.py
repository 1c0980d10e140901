"""The ``OperatingPoint`` callback: choose a classifier's decision rule on validation after ``fit``.

Class-weighted or focal training shifts the scores, so argmax is not where a clinician would put the
decision; the point is chosen on the validation split only (never on test), with the selected (best)
weights and the calibrated (temperature-scaled) probabilities, and stored in the model card next to the
temperature. ``ClassificationModule`` then reports its metrics at argmax and at this point
(``test/op/*``), ``predict_step`` and ``medfocal infer`` decide by it.

The rules are those of :func:`medfocal.metrics.operating_point.choose_operating_point`: ``"youden"``
and ``"sensitivity"`` are thresholds on the positive-class probability (binary tasks only);
``"argmax"`` is the only rule for multi-class tasks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info

from medfocal.card import update_card_file
from medfocal.metrics.operating_point import RULES, choose_operating_point
from medfocal.metrics.operating_point import OperatingPoint as Point
from medfocal.tasks.calibration import (
    LogitsFn,
    TemperatureScaling,
    _val_dataloader,
    checkpoint_files_to_update,
    collect_logits,
    load_best_weights,
)

__all__ = ["OperatingPoint"]


def _binary(pl_module: LightningModule) -> bool | None:
    """Whether the module's output is binary (2 softmax classes or 1 sigmoid); None when unknown yet."""
    n = getattr(pl_module, "num_classes", None)
    if n is None:
        return None
    if getattr(pl_module, "activation", "softmax") == "sigmoid":
        return int(n) == 1
    return int(n) == 2


class OperatingPoint(Callback):
    """Choose the decision rule on the validation set at the end of ``fit`` and store it in the card.

    At ``on_fit_end``: run any :class:`~medfocal.tasks.calibration.TemperatureScaling` of the trainer
    first (whatever the callback order; it then does not run twice), load the best checkpoint's weights
    (if a ``ModelCheckpoint`` kept one), collect the validation logits
    (:func:`~medfocal.tasks.calibration.collect_logits`), turn them into probabilities with the
    module's temperature, choose the point (:func:`~medfocal.metrics.operating_point.choose_operating_point`),
    set ``pl_module.operating_point`` and write it into the model card (``operating_point``) of the
    checkpoint file whose weights it was chosen for: the best one, else (no best, or
    ``use_best_checkpoint=False``) the last one, as ``TemperatureScaling`` does; and ``save_path``.
    The point and the validation figures at argmax and at the point go to ``self.results``, the
    loggers (``operating_point/*``), the console and ``<log_dir>/operating_point.json``.

    Args:
        rule: ``"youden"`` (maximise sensitivity + specificity - 1), ``"sensitivity"`` (the highest
            threshold reaching ``target_sensitivity``) or ``"argmax"``. Threshold rules need a binary
            task (two softmax classes or one sigmoid output); multi-class tasks use ``"argmax"``.
        target_sensitivity: for ``rule="sensitivity"``, in (0, 1].
        use_best_checkpoint: choose with the best checkpoint's weights (model selection on validation).
        save_path: also save the module there (``trainer.save_checkpoint``).
        logits_fn: ``(pl_module, image) -> logits`` (default: see ``collect_logits``).

    Raises:
        ValueError: (at the start of fit) an unknown rule, a threshold rule on a multi-class or
            multi-label module, or a target sensitivity outside (0, 1].

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: medfocal.tasks.OperatingPoint
              init_args: {rule: youden}
    """

    def __init__(
        self,
        rule: str = "youden",
        target_sensitivity: float = 0.9,
        use_best_checkpoint: bool = True,
        save_path: str | None = None,
        logits_fn: LogitsFn | None = None,
    ) -> None:
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"OperatingPoint: rule must be one of {RULES}, got {rule!r}")
        if rule == "sensitivity" and not 0.0 < target_sensitivity <= 1.0:
            raise ValueError(
                f"OperatingPoint: target_sensitivity must be in (0, 1], got {target_sensitivity}"
            )
        self.rule = rule
        self.target_sensitivity = float(target_sensitivity)
        self.use_best_checkpoint = use_best_checkpoint
        self.save_path = save_path
        self.logits_fn = logits_fn
        self.point: Point | None = None
        self.results: dict[str, Any] = {}

    def _check_task(self, pl_module: LightningModule) -> None:
        if getattr(pl_module, "task", "classification") != "classification":
            raise ValueError(
                f"OperatingPoint: a classification callback, the module is a {pl_module.task!r} task"
            )
        if self.rule != "argmax" and _binary(pl_module) is False:
            raise ValueError(
                f"OperatingPoint(rule={self.rule!r}): a threshold rule needs a binary task (2 softmax "
                f"classes or 1 sigmoid output), the module has {pl_module.num_classes} "
                f"{pl_module.activation} outputs; use rule='argmax' for multi-class or multi-label tasks"
            )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._check_task(pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or trainer.state.stage == "sanity_check":
            return
        self._check_task(pl_module)
        for callback in trainer.callbacks:  # the temperature first, whatever the order of the callbacks
            if isinstance(callback, TemperatureScaling):
                callback.on_fit_end(trainer, pl_module)
        original_device = pl_module.device
        best = load_best_weights(trainer, pl_module) if self.use_best_checkpoint else None
        pl_module.to(trainer.strategy.root_device)
        try:
            logits, labels = collect_logits(pl_module, _val_dataloader(trainer), logits_fn=self.logits_fn)
        finally:
            pl_module.to(original_device)
        with torch.no_grad():
            probs = pl_module.probabilities(logits)
        if probs.ndim == 2 and probs.shape[1] == 1:
            probs = torch.cat([1.0 - probs, probs], dim=1)
        labels = labels.reshape(-1).long()
        try:
            point = choose_operating_point(probs, labels, self.rule, self.target_sensitivity)
        except ValueError as err:
            raise ValueError(f"OperatingPoint on the validation set ({len(labels)} cases): {err}") from None
        self.point = point
        pl_module.operating_point = point
        argmax = choose_operating_point(probs, labels, "argmax")
        self.results = {
            **point.to_dict(),
            "temperature": float(getattr(pl_module, "temperature", 1.0)),
            "validation_argmax": argmax.validation,
        }
        if trainer.is_global_zero:
            for path in checkpoint_files_to_update(trainer, best):
                update_card_file(path, trust=True, operating_point=point.to_dict())  # this run's files
            if self.save_path:
                trainer.save_checkpoint(self.save_path)
        self._report(trainer)

    def _report(self, trainer: Trainer) -> None:
        point, chosen = self.point, self.results.get("validation") or {}
        argmax = self.results.get("validation_argmax") or {}
        threshold = "-" if point.threshold is None else f"{point.threshold:.4f}"
        rank_zero_info(
            f"medfocal: operating point on validation: rule {point.rule}, threshold {threshold}; "
            f"balanced accuracy {argmax.get('balanced_accuracy', float('nan')):.4f} (argmax) -> "
            f"{chosen.get('balanced_accuracy', float('nan')):.4f}"
        )
        metrics = {f"operating_point/val_{k}": float(v) for k, v in chosen.items()}
        if point.threshold is not None:
            metrics["operating_point/threshold"] = float(point.threshold)
        for logger in trainer.loggers:
            try:
                logger.log_metrics(metrics, step=trainer.global_step)
                logger.save()
            except Exception as error:  # a finalized logger must not fail the run
                rank_zero_info(f"OperatingPoint: could not log to {type(logger).__name__}: {error}")
        log_dir = trainer.log_dir or trainer.default_root_dir
        if trainer.is_global_zero and log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / "operating_point.json").write_text(json.dumps(self.results, indent=2))
