"""Classification as a LightningModule: any network + any medfocal loss, torchmetrics per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    AUROC,
    Accuracy,
    AveragePrecision,
    CalibrationError,
    CohenKappa,
    ConfusionMatrix,
    F1Score,
    Recall,
)

from medfocal.card import CARD_KEY, ModelCard
from medfocal.metrics.operating_point import OperatingPoint
from medfocal.tasks._base import MedfocalModule, image_and_label, metric_key, plain_tensor

__all__ = ["ClassificationModule"]


class ClassificationModule(MedfocalModule):
    """Train and validate an image classifier with a (focal-family) loss.

    Logits are ``(B, C)``; labels ``(B,)`` class indices (softmax, or one sigmoid channel for a binary
    task) or ``(B, C)`` multi-hot floats (sigmoid with C > 1: multi-label). Logged per epoch with
    torchmetrics (synchronised across DDP ranks): ``val/accuracy``, ``val/balanced_accuracy`` (macro
    recall; the main metric), ``val/auroc`` (macro one-vs-rest), ``val/f1`` (macro),
    ``val/average_precision`` (macro; ``val/map`` for multi-label), ``val/recall_<class>`` per class,
    ``val/ece`` (top-label expected calibration error, 15 bins, of the temperature-scaled probabilities;
    not for multi-label) and ``val/kappa_quadratic`` (more than two classes); the
    confusion matrix is kept in ``self.confusion_matrix`` and written to TensorBoard as text. A binary
    sigmoid output is scored as two classes ``[1 - p, p]``, so "macro" means the mean over both.

    Operating point: ``self.operating_point`` (a :class:`~medfocal.metrics.operating_point.OperatingPoint`
    chosen on validation by the ``medfocal.tasks.OperatingPoint`` callback, kept in the model card; None:
    argmax). When set, validation and test also log the metrics of its decisions beside the argmax ones:
    ``<stage>/op/accuracy``, ``<stage>/op/balanced_accuracy``, ``<stage>/op/f1`` (macro) and, binary,
    ``<stage>/op/sensitivity`` and ``<stage>/op/specificity`` (recall of the second / first class).
    ``predict_step`` returns ``{"probabilities": (B, C), "prediction": (B,)}``, the prediction by the
    point (argmax without one).

    Args:
        model: the network (``self.model``), e.g. ``monai.networks.nets.DenseNet121``.
        loss: a medfocal loss, e.g. ``medfocal.losses.FocalLoss``.
        activation: ``"softmax"`` or ``"sigmoid"``.
        optimizer: ``params -> Optimizer`` (LightningCLI ``OptimizerCallable``); default AdamW(lr=1e-3).
        lr_scheduler: ``optimizer -> scheduler`` or None.
        num_classes: number of classes; from ``class_names`` or the datamodule when None.
        class_names: class names; from the datamodule when None.
        monitor: metric followed by the checkpoint callback (default ``"val/balanced_accuracy"``).
        monitor_mode: ``"max"`` or ``"min"``.

    Example:
        >>> from monai.networks.nets import DenseNet121
        >>> from medfocal.losses import FocalLoss  # doctest: +SKIP
        >>> module = ClassificationModule(DenseNet121(2, 3, 4), FocalLoss(), num_classes=4)  # doctest: +SKIP
    """

    task = "classification"
    default_monitor = "val/balanced_accuracy"

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        monitor: str | None = None,
        monitor_mode: Literal["max", "min"] = "max",
    ) -> None:
        super().__init__(
            model=model,
            loss=loss,
            activation=activation,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            class_names=class_names,
            monitor=monitor,
            monitor_mode=monitor_mode,
        )
        self._num_classes = num_classes
        self.val_metrics: MetricCollection | None = None
        self.test_metrics: MetricCollection | None = None
        self.val_confusion: ConfusionMatrix | None = None
        self.test_confusion: ConfusionMatrix | None = None
        self.confusion_matrix: torch.Tensor | None = None
        self.operating_point: OperatingPoint | None = None
        self.val_op_metrics: MetricCollection | None = None
        self.test_op_metrics: MetricCollection | None = None
        self._op_updated: set[str] = set()
        self._save_plain_hyperparameters()

    @property
    def num_classes(self) -> int | None:
        if self._num_classes is not None:
            return int(self._num_classes)
        return super().num_classes

    def _network_outputs(self) -> tuple[int, str] | None:
        """The spec's output channels, else the module's ``num_classes`` (what the metrics are built for)."""
        found = super()._network_outputs()
        if found is None and self._num_classes is not None:
            return int(self._num_classes), "model.init_args.num_classes"
        return found

    @property
    def multilabel(self) -> bool:
        """True for sigmoid outputs with more than one class (independent labels)."""
        return self.activation == "sigmoid" and (self.num_classes or 1) > 1

    # ----------------------------------------------------------------- metrics
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.val_metrics is None:
            self._build_metrics()

    def _build_metrics(self) -> None:
        n = self.num_classes
        if n is None:
            raise ValueError(
                "ClassificationModule needs the number of classes: expected num_classes, class_names "
                "or a datamodule with num_classes, got none of them"
            )
        # one sigmoid output is scored as two classes [1 - p, p]
        n_scored = 2 if (self.activation == "sigmoid" and n == 1) else n
        if self.multilabel:
            kw: dict[str, Any] = {"task": "multilabel", "num_labels": n}
            ap_name = "map"
        else:
            kw = {"task": "multiclass", "num_classes": n_scored}
            ap_name = "average_precision"
        collection = MetricCollection(
            {
                "accuracy": Accuracy(**kw, average="micro"),
                "balanced_accuracy": Recall(**kw, average="macro"),
                "auroc": AUROC(**kw, average="macro"),
                "f1": F1Score(**kw, average="macro"),
                ap_name: AveragePrecision(**kw, average="macro"),
                "per_class_recall": Recall(**kw, average="none"),
            }
        )
        if not self.multilabel:
            # top-label ECE (Guo et al. 2017, 15 equal-width bins) of the probabilities after the temperature
            collection.add_metrics({"ece": CalibrationError(**kw, n_bins=15, norm="l1")})
        if not self.multilabel and n_scored > 2:
            # ordinal grades (diabetic retinopathy 0-4...): quadratic-weighted kappa, as the papers report
            collection.add_metrics({"kappa_quadratic": CohenKappa(**kw, weights="quadratic")})
        self.val_metrics = collection.clone(prefix="val/")
        self.test_metrics = collection.clone(prefix="test/")
        self.val_confusion = ConfusionMatrix(**kw)
        self.test_confusion = ConfusionMatrix(**kw)
        if not self.multilabel:  # decisions of the operating point: class indices
            op = MetricCollection(
                {
                    "accuracy": Accuracy(**kw, average="micro"),
                    "balanced_accuracy": Recall(**kw, average="macro"),
                    "f1": F1Score(**kw, average="macro"),
                    "per_class_recall": Recall(**kw, average="none"),
                }
            )
            self.val_op_metrics = op.clone(prefix="val/op/")
            self.test_op_metrics = op.clone(prefix="test/op/")

    # ----------------------------------------------------------------- steps
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)

    def _scores_and_target(
        self, logits: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.probabilities(logits)
        if self.multilabel:
            return probs, label.long()
        if probs.shape[1] == 1:
            probs = torch.cat([1.0 - probs, probs], dim=1)
        return probs, label.reshape(-1).long()

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        image, label = image_and_label(batch)
        logits = self(image)
        loss = self.loss(logits, label)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(image))
        probs, target = self._scores_and_target(logits, label)
        getattr(self, f"{stage}_metrics").update(probs, target)
        getattr(self, f"{stage}_confusion").update(probs, target)
        op_metrics = getattr(self, f"{stage}_op_metrics")
        if self.operating_point is not None and op_metrics is not None:
            op_metrics.update(self.decide(probs), target)
            self._op_updated.add(stage)
        return {"loss": loss.detach(), "logits": logits.detach()}

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """Class indices ``(B,)`` of probabilities ``(B, C)`` (a single sigmoid column is binary) under
        ``self.operating_point``: binary threshold rules call the second class when its probability is
        ``>= threshold``; argmax without a point or for the ``"argmax"`` rule."""
        if probs.ndim == 2 and probs.shape[1] == 1:
            probs = torch.cat([1.0 - probs, probs], dim=1)
        point = self.operating_point
        if point is None or point.rule == "argmax" or point.threshold is None:
            return probs.argmax(dim=1)
        if probs.shape[1] != 2:
            raise ValueError(
                f"operating point {point.rule!r} (threshold {point.threshold}) is binary, but the module "
                f"outputs {probs.shape[1]} classes; multi-class tasks use rule='argmax'"
            )
        return (probs[:, 1] >= point.threshold).long()

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """``{"probabilities": (B, C) after temperature scaling, "prediction": (B,) class indices by the
        operating point (argmax without one; multi-label: each probability >= 0.5)}``."""
        image = plain_tensor(batch["image"] if isinstance(batch, dict) else batch)
        probs = self.probabilities(self(image))
        prediction = (probs >= 0.5).long() if self.multilabel else self.decide(probs)
        return {"probabilities": probs, "prediction": prediction}

    # ----------------------------------------------------------------- card
    def model_card(self) -> ModelCard:
        """The base card with the operating point (``ModelCard.operating_point``)."""
        card = super().model_card()
        if self.operating_point is None:
            return card
        return card.replace(operating_point=self.operating_point.to_dict())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The base restore, and the operating point of the card."""
        super().on_load_checkpoint(checkpoint)
        if CARD_KEY in checkpoint:
            point = ModelCard.from_dict(checkpoint[CARD_KEY], complete=False).operating_point
            self.operating_point = OperatingPoint.from_dict(point) if point is not None else None

    def on_validation_epoch_start(self) -> None:
        self._reset_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._reset_metrics("test")

    def _reset_metrics(self, stage: str) -> None:
        # fresh states in the loop's grad/inference context (a module reused across trainers keeps none)
        for name in ("metrics", "confusion", "op_metrics"):
            metric = getattr(self, f"{stage}_{name}")
            if metric is not None:
                metric.reset()
        self._op_updated.discard(stage)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def _log_epoch_metrics(self, stage: str) -> None:
        collection: MetricCollection = getattr(self, f"{stage}_metrics")
        confusion: ConfusionMatrix = getattr(self, f"{stage}_confusion")
        if collection is None or not confusion.update_called:
            return
        values = collection.compute()  # torchmetrics syncs the states across ranks here
        per_class = values.pop(f"{stage}/per_class_recall")
        names = self.class_names or []
        if len(names) != len(per_class):
            names = [str(i) for i in range(len(per_class))]
        for name, v in zip(names, per_class):
            values[f"{stage}/recall_{metric_key(name)}"] = v
        values.update(self._op_values(stage))
        self.log_dict({k: v.float() for k, v in values.items()})
        self.confusion_matrix = confusion.compute().cpu()
        self._write_confusion(stage)
        collection.reset()
        confusion.reset()

    def _op_values(self, stage: str) -> dict[str, torch.Tensor]:
        """``<stage>/op/*`` of the operating point's decisions (empty when none was made)."""
        collection: MetricCollection | None = getattr(self, f"{stage}_op_metrics")
        if collection is None or stage not in self._op_updated:
            return {}
        self._op_updated.discard(stage)
        values = collection.compute()
        per_class = values.pop(f"{stage}/op/per_class_recall")
        if len(per_class) == 2:
            values[f"{stage}/op/sensitivity"] = per_class[1]
            values[f"{stage}/op/specificity"] = per_class[0]
        collection.reset()
        return values

    def _write_confusion(self, stage: str) -> None:
        if self.trainer is None or not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        text = f"{stage} confusion matrix (rows: true, columns: predicted)\n{self.confusion_matrix.tolist()}"
        for logger in self.loggers:
            add_text = getattr(getattr(logger, "experiment", None), "add_text", None)
            if callable(add_text):
                add_text(f"{stage}/confusion_matrix", text, global_step=self.global_step)
        if stage == "test":
            rank_zero_info(text)
