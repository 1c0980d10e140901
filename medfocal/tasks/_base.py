"""Shared plumbing of the medfocal LightningModules: optimizers, hyperparameters, checkpoint metadata.

The subclasses (:class:`~medfocal.tasks.SegmentationModule`, :class:`~medfocal.tasks.ClassificationModule`)
own the model, the loss and the metrics; this base owns what both need to be self-describing:

- ``optimizer`` / ``lr_scheduler`` are dependency-injected callables (LightningCLI's ``OptimizerCallable``
  and ``LRSchedulerCallable``), so the same module works from YAML and from Python;
- ``save_hyperparameters`` keeps plain JSON-like values only (LightningCLI already gives dicts; objects
  passed from Python are replaced by their ``{"class_path", "init_args"}`` spec when they carry one);
- ``checkpoint["medfocal"]`` (format 1) records what inference needs to run from the checkpoint alone;
- ``alpha: auto`` in the loss is resolved from the datamodule's class counts in ``setup("fit")``;
- a ``temperature`` buffer (1.0 unless calibrated) divides the logits in ``predict_step``.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

CHECKPOINT_FORMAT_VERSION = 1
ACTIVATIONS = ("softmax", "sigmoid")
_JSON_SCALARS = (str, int, float, bool, type(None))
# objects passed from Python (not from YAML) are not JSON: they are replaced by a spec or dropped
_OBJECT_HPARAMS = ("model", "loss", "optimizer", "lr_scheduler")


def _is_plain(value: Any) -> bool:
    """True for values built only of JSON types (what ``torch.load(weights_only=True)`` accepts)."""
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return False


def to_plain(value: Any) -> Any:
    """Convert tuples, paths and tensors in nested containers to JSON types (lists, str, numbers)."""
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if hasattr(value, "to_dict"):
        return to_plain(value.to_dict())
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def object_spec(obj: Any) -> dict[str, Any] | None:
    """A ``{"class_path", "init_args"}`` spec of a model, loss or optimizer factory, or None if unknown.

    Uses ``obj._medfocal_spec`` (set by ``medfocal.nets.create_model``) when present, the class and
    keywords of a ``functools.partial`` (what jsonargparse builds for ``OptimizerCallable``), or the class
    of an optimizer type given directly (``torch.optim.AdamW``).
    """
    spec = getattr(obj, "_medfocal_spec", None)
    if isinstance(spec, Mapping):
        return to_plain(dict(spec))
    if isinstance(obj, functools.partial) and isinstance(obj.func, type):
        cls = obj.func
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": to_plain(obj.keywords)}
    if isinstance(obj, type):
        return {"class_path": f"{obj.__module__}.{obj.__qualname__}", "init_args": {}}
    return None


def metric_key(name: str) -> str:
    """A class name made safe for a metric key: ``"Grade 1 (mild)"`` -> ``"grade_1_mild"``."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower() or "class"


def _find_auto_alpha(loss: nn.Module) -> bool:
    """Whether some (sub-)loss still waits for class counts (``alpha="auto"`` not yet resolved)."""
    for m in loss.modules():
        alpha = getattr(m, "alpha", None)
        if (getattr(m, "alpha_auto", False) and alpha is None) or (
            isinstance(alpha, str) and alpha == "auto"
        ):
            return True
    return False


def _resolved_alphas(loss: nn.Module) -> list[torch.Tensor]:
    found = []
    for m in loss.modules():
        alpha = getattr(m, "alpha", None)
        if isinstance(alpha, torch.Tensor) and alpha.ndim == 1:
            found.append(alpha.detach().float().cpu())
    return found


class MedfocalModule(LightningModule):
    """Base of the medfocal task modules (not used directly).

    Args:
        model: the network; stored as ``self.model`` (checkpoint keys ``"model.*"``).
        loss: any medfocal loss (``forward(logits, target) -> Tensor``).
        activation: ``"softmax"`` (exclusive classes) or ``"sigmoid"`` (binary / multi-label).
        optimizer: a callable ``params -> Optimizer`` (default ``torch.optim.AdamW`` with lr 1e-3).
        lr_scheduler: a callable ``optimizer -> scheduler`` or None.
        class_names: names of the classes; taken from the datamodule when None.
        monitor: the metric ``ModelCheckpoint`` and ``ReduceLROnPlateau`` follow (task default when None).
        monitor_mode: ``"max"`` or ``"min"``.
    """

    task: str = ""
    default_monitor: str = ""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        class_names: Sequence[str] | None = None,
        monitor: str | None = None,
        monitor_mode: Literal["max", "min"] = "max",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
        if monitor_mode not in ("max", "min"):
            raise ValueError(f"monitor_mode must be 'max' or 'min', not {monitor_mode!r}")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        if not isinstance(loss, nn.Module):
            raise ValueError(f"loss must be a torch.nn.Module, not {type(loss).__name__}")
        self.model = model
        self.loss = loss
        self.activation = activation
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.class_names = list(class_names) if class_names is not None else None
        self.monitor = monitor or self.default_monitor
        self.monitor_mode = monitor_mode
        self.register_buffer("temperature", torch.tensor(1.0))
        self.resolved_alpha: list[float] | None = None

    # ----------------------------------------------------------------- hyperparameters
    def _save_plain_hyperparameters(self) -> None:
        """``save_hyperparameters`` of the subclass ``__init__``, keeping JSON types only."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            self.save_hyperparameters(frame=_caller_frame(2))
        for key in _OBJECT_HPARAMS:
            if key in self.hparams and not _is_plain(self.hparams[key]):
                spec = object_spec(self.hparams[key])
                if spec is None:
                    del self.hparams[key]
                else:
                    self.hparams[key] = spec
        for key in list(self.hparams):
            if not _is_plain(self.hparams[key]):
                self.hparams[key] = to_plain(self.hparams[key])

    # ----------------------------------------------------------------- optimizers
    def configure_optimizers(self) -> Any:
        """The injected optimizer (and scheduler; ``ReduceLROnPlateau`` follows ``self.monitor``)."""
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = getattr(scheduler, "monitor", None) or self.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

    # ----------------------------------------------------------------- data-derived settings
    def _datamodule(self) -> Any:
        trainer = self._trainer
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    def _from_data(self, name: str, default: Any = None) -> Any:
        dm = self._datamodule()
        value = getattr(dm, name, None) if dm is not None else None
        return default if value is None else value

    def setup(self, stage: str) -> None:
        """Take class names from the datamodule and resolve ``alpha: auto`` from its class counts."""
        if self.class_names is None:
            names = self._from_data("class_names")
            if names is not None:
                self.class_names = [str(n) for n in names]
        if _find_auto_alpha(self.loss):
            self._resolve_auto_alpha(stage)

    def _resolve_auto_alpha(self, stage: str) -> None:
        """``alpha="auto"`` from the training split's class counts (validate/test: the same counts)."""
        from medfocal.losses import set_class_counts

        dm = self._datamodule()
        try:
            if dm is None or not hasattr(dm, "class_counts"):
                raise ValueError(
                    "the loss has alpha='auto', which needs class counts: expected a datamodule with "
                    f"class_counts(), got {type(dm).__name__}"
                )
            counts = torch.as_tensor(dm.class_counts(), dtype=torch.float32)
        except (ValueError, RuntimeError, AttributeError) as error:
            if stage == "fit" or self.num_classes is None:
                raise
            # validate/test of a checkpoint without its training data: the loss is only reported
            warnings.warn(f"alpha='auto' resolved with equal class counts ({error})", stacklevel=2)
            counts = torch.ones(max(self.num_classes, 2))
        set_class_counts(self.loss, counts)
        alphas = _resolved_alphas(self.loss)
        self.resolved_alpha = alphas[0].tolist() if alphas else None
        rank_zero_info(f"medfocal: alpha 'auto' from class counts {counts.tolist()} -> {self.resolved_alpha}")

    def on_train_start(self) -> None:
        """Log the class-balanced alpha once (it is a constant of the run, not a per-step metric)."""
        if self.resolved_alpha is None:
            return
        names = self.class_names or [str(i) for i in range(len(self.resolved_alpha))]
        values = {f"alpha/{metric_key(n)}": float(a) for n, a in zip(names, self.resolved_alpha)}
        for logger in self.loggers:
            logger.log_metrics(values, step=0)

    # ----------------------------------------------------------------- logits -> probabilities
    # ----------------------------------------------------------------- steps shared by both tasks
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        image, label = image_and_label(batch)
        logits = self.model(image)
        loss = self.loss(logits, label)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(image))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities (after temperature scaling) of ``self(image)``."""
        image = plain_tensor(batch["image"] if isinstance(batch, dict) else batch)
        return self.probabilities(self(image))

    def _evaluate(self, batch: Any, stage: str) -> None:
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``activation(logits / temperature)`` (the temperature is 1.0 unless a calibration set it)."""
        scaled = logits.float() / self.temperature.clamp_min(1e-6)
        return torch.softmax(scaled, dim=1) if self.activation == "softmax" else torch.sigmoid(scaled)

    # ----------------------------------------------------------------- checkpoint
    def model_spec(self) -> dict[str, Any] | None:
        """How to rebuild ``self.model``: the CLI's ``{"class_path", "init_args"}`` or ``_medfocal_spec``."""
        spec = self.hparams.get("model")
        if isinstance(spec, Mapping) and ("class_path" in spec or "name" in spec):
            return to_plain(dict(spec))
        return object_spec(self.model)

    def medfocal_metadata(self) -> dict[str, Any]:
        """``checkpoint["medfocal"]``: JSON types only (see the checkpoint contract)."""
        preprocessing = self._from_data("preprocessing")
        roi_size = getattr(self, "roi_size", None) or self._from_data("roi_size")
        return to_plain(
            {
                "format_version": CHECKPOINT_FORMAT_VERSION,
                "task": self.task,
                "model": self.model_spec(),
                "activation": self.activation,
                "class_names": self.class_names,
                "num_classes": self.num_classes,
                "in_channels": self._from_data("in_channels", self._spec_arg("in_channels")),
                "spatial_dims": self._from_data("spatial_dims", self._spec_arg("spatial_dims")),
                "roi_size": list(roi_size) if roi_size is not None else None,
                "preprocessing": preprocessing.to_dict()
                if hasattr(preprocessing, "to_dict")
                else preprocessing,
                "temperature": float(self.temperature),
            }
        )

    def _spec_arg(self, *names: str) -> Any:
        spec = self.model_spec() or {}
        init_args = spec.get("init_args") or spec.get("kwargs") or {}
        for name in names:
            if init_args.get(name) is not None:
                return init_args[name]
        return None

    @property
    def num_classes(self) -> int | None:
        """Output channels: the model spec's ``out_channels``, else the datamodule's, else the class names."""
        n = self._spec_arg("out_channels", "num_classes")
        if n is None:
            n = self._from_data("num_classes")
        if n is None and self.class_names is not None:
            n = len(self.class_names)
        return int(n) if n is not None else None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["medfocal"] = self.medfocal_metadata()
        # hyper_parameters must stay loadable with torch.load(weights_only=True): plain dicts only
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint and not _is_plain(checkpoint[key]):
                checkpoint[key] = to_plain(dict(checkpoint[key]))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("medfocal") or {}
        if self.class_names is None and meta.get("class_names"):
            self.class_names = list(meta["class_names"])


def plain_tensor(value: Any) -> Any:
    """A MONAI ``MetaTensor`` as a plain ``torch.Tensor`` (metrics and losses need no metadata)."""
    as_tensor = getattr(value, "as_tensor", None)
    return as_tensor() if callable(as_tensor) and isinstance(value, torch.Tensor) else value


def image_and_label(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image, label)`` plain tensors from a batch dict (or an ``(image, label)`` pair)."""
    if isinstance(batch, Mapping):
        return plain_tensor(batch["image"]), plain_tensor(batch["label"])
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return plain_tensor(batch[0]), plain_tensor(batch[1])
    raise ValueError(f"expected a batch dict with 'image' and 'label', got {type(batch).__name__}")


def _caller_frame(depth: int):
    import inspect

    frame = inspect.currentframe()
    for _ in range(depth):
        frame = frame.f_back if frame is not None else None
    return frame
