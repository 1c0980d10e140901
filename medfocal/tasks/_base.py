"""Shared plumbing of the medfocal LightningModules: optimizers, hyperparameters, checkpoint metadata.

The subclasses (:class:`~medfocal.tasks.SegmentationModule`, :class:`~medfocal.tasks.ClassificationModule`)
own the model, the loss and the metrics; this base owns what both need to be self-describing:

- ``optimizer`` / ``lr_scheduler`` are dependency-injected callables (LightningCLI's ``OptimizerCallable``
  and ``LRSchedulerCallable``), so the same module works from YAML and from Python;
- ``save_hyperparameters`` keeps plain JSON-like values only (LightningCLI already gives dicts; objects
  passed from Python are replaced by their ``{"class_path", "init_args"}`` spec when they carry one);
- ``checkpoint["medfocal"]`` is the :class:`~medfocal.card.ModelCard` (:meth:`MedfocalModule.model_card`):
  what inference needs to run from the checkpoint alone; loading a checkpoint restores the class
  names, the temperature and the resolved ``alpha: auto`` from it;
- ``alpha: auto`` in the loss is resolved from the datamodule's class counts in ``setup("fit")`` and
  kept in the card, so ``validate``/``test`` of a checkpoint without the training data compute the
  training loss;
- ``temperature`` (a float, 1.0 unless ``TemperatureScaling`` set it; stored in the card only)
  divides the logits in ``predict_step`` and the classification metrics
  (:func:`medfocal.metrics.temperature.calibrated_probabilities`).
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
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn

import medfocal
from medfocal.card import ACTIVATIONS, CARD_KEY, ModelCard
from medfocal.metrics.temperature import calibrated_probabilities

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


def _auto_alpha_modules(loss: nn.Module) -> dict[str, nn.Module]:
    """The (sub-)losses with ``alpha="auto"``, by their name inside ``loss`` (``""``: the loss itself)."""
    return {name: m for name, m in loss.named_modules() if getattr(m, "alpha_auto", False)}


def _unresolved(loss: nn.Module) -> bool:
    """Whether some ``alpha="auto"`` still waits for class counts."""
    return any(getattr(m, "alpha", None) is None for m in _auto_alpha_modules(loss).values())


def resolved_alphas(loss: nn.Module) -> dict[str, list[float] | float]:
    """The resolved ``alpha="auto"`` values of ``loss``, as stored in ``ModelCard.loss_alpha``."""
    out: dict[str, list[float] | float] = {}
    for name, m in _auto_alpha_modules(loss).items():
        alpha = getattr(m, "alpha", None)
        if isinstance(alpha, torch.Tensor):
            value = alpha.detach().float().cpu()
            out[name] = value.tolist() if value.ndim else float(value)
    return out


def uniform_auto_alpha(counts: torch.Tensor, alphas: Mapping[str, Any], ratio: float = 2.0) -> bool:
    """True when imbalanced ``counts`` (max/min above ``ratio``) gave uniform ``alpha="auto"`` values."""
    counts = torch.as_tensor(counts, dtype=torch.float64).clamp_min(1.0)
    if counts.numel() < 2 or float(counts.max() / counts.min()) <= ratio:
        return False
    values = [torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in alphas.values()]
    return bool(values) and all(
        v.numel() > 1 and float(v.max() - v.min()) < 1e-3 * float(v.abs().max()) for v in values
    )


def restore_alphas(loss: nn.Module, values: Mapping[str, Any], where: str = "checkpoint") -> None:
    """Set the ``alpha="auto"`` of ``loss`` to the values of a card (inverse of :func:`resolved_alphas`).

    Raises:
        ValueError: a name that is no ``alpha="auto"`` loss module of ``loss``.
    """
    modules = _auto_alpha_modules(loss)
    for name, value in values.items():
        if name not in modules:
            raise ValueError(
                f"{where}: loss_alpha names {name!r}, but the loss has alpha='auto' only in "
                f"{sorted(modules)}; the checkpoint was trained with another loss"
            )
        module = modules[name]
        device = next((b.device for b in module.buffers()), torch.device("cpu"))
        module.alpha = torch.as_tensor(value, dtype=torch.float32, device=device)


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
        self.temperature = 1.0
        self.training_class_counts: list[float] | None = None

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
        """Take class names from the datamodule and resolve ``alpha: auto`` from its class counts.

        Outside ``fit`` a checkpoint's card may still bring the alpha (Lightning restores it after
        ``setup``), so missing class counts are only an error for ``fit``.
        """
        if self.class_names is None:
            names = self._from_data("class_names")
            if names is not None:
                self.class_names = [str(n) for n in names]
        self._check_output_channels()
        if _unresolved(self.loss):
            self._resolve_auto_alpha(stage)

    def _network_outputs(self) -> tuple[int, str] | None:
        """The network's output channels and the config key that sets them (from its spec), if known."""
        spec = self.model_spec() or {}
        init_args = spec.get("init_args") or spec.get("kwargs") or {}
        for key in ("out_channels", "num_classes"):
            if init_args.get(key) is not None:
                return int(init_args[key]), f"model.init_args.model.init_args.{key}"
        return None

    def _check_output_channels(self) -> None:
        """The network's output channels against the data's classes, before the first step.

        softmax: one channel per class; sigmoid: one per class, or one per foreground class (a binary
        task: one channel). Skipped when the network has no spec or no datamodule gives classes.

        Raises:
            ValueError: naming both numbers and the config keys to change.
        """
        dm = self._datamodule()
        outputs = self._network_outputs()
        if dm is None or outputs is None:
            return
        names = getattr(dm, "class_names", None)
        if not names:
            return
        n_out, key = outputs
        n_data = len(names)
        allowed = [n_data] if self.activation == "softmax" else [n_data, n_data - 1]
        if n_out in allowed:
            return
        expected = " or ".join(str(a) for a in allowed if a > 0)
        describe = getattr(dm, "describe", None)
        where = f" ({describe()})" if callable(describe) else ""
        raise ValueError(
            f"the network has {n_out} output channel(s) ({key}) but the data{where} has {n_data} "
            f"classes {list(names)}; with {self.activation} set {key}: {expected}, or fix the data's "
            "labels / class names (data.init_args.class_names, or 'labels' in dataset.json)"
        )

    def _resolve_auto_alpha(self, stage: str) -> None:
        """``alpha="auto"`` from the training split's class counts."""
        from medfocal.losses import set_class_counts

        dm = self._datamodule()
        try:
            if dm is None or not hasattr(dm, "class_counts"):
                raise ValueError(
                    "the loss has alpha='auto', which needs class counts: expected a datamodule with "
                    f"class_counts(), got {type(dm).__name__}"
                )
            counts = torch.as_tensor(dm.class_counts(), dtype=torch.float32)
        except (ValueError, RuntimeError, AttributeError):
            if stage == "fit":
                raise
            return  # validate/test/predict: the checkpoint's card may bring it (see _check_alpha)
        set_class_counts(self.loss, counts)
        self.training_class_counts = counts.tolist()
        alphas = resolved_alphas(self.loss)
        rank_zero_info(f"medfocal: alpha 'auto' from class counts {counts.tolist()} -> {alphas}")
        if uniform_auto_alpha(counts, alphas):
            rank_zero_warn(
                f"alpha 'auto' has no effect here: the smallest class count ({counts.min():.0f}) is far "
                "above 1 / (1 - beta) = 1000, so every class's effective number saturates and the "
                "class-balanced weights are uniform (Cui et al.; voxel counts of segmentation do this). "
                "Leave alpha out (the Dice term carries the imbalance) or give per-class values, e.g. "
                "alpha: [0.25, 0.75]"
            )

    def _check_alpha(self) -> None:
        """Before validate/test/predict: an ``alpha: auto`` neither the data nor a card resolved."""
        if not _unresolved(self.loss):
            return
        if self.num_classes is None:
            raise ValueError(
                "the loss has alpha='auto' and neither the datamodule (class_counts()) nor a checkpoint "
                "card gives it; validate with the training datamodule or a medfocal checkpoint"
            )
        from medfocal.losses import set_class_counts

        # a format-1 checkpoint (no loss_alpha) without its training data: the loss is only reported
        warnings.warn(
            "alpha='auto' resolved with equal class counts: neither the datamodule nor the checkpoint "
            "gives it (checkpoints of medfocal format 1 do not store it)",
            stacklevel=2,
        )
        set_class_counts(self.loss, torch.ones(max(self.num_classes, 2)))

    def on_validation_start(self) -> None:
        self._check_alpha()

    def on_test_start(self) -> None:
        self._check_alpha()

    def on_train_start(self) -> None:
        """Log the class-balanced alpha once (it is a constant of the run, not a per-step metric)."""
        alphas = resolved_alphas(self.loss)
        if not alphas:
            return
        alpha = next(iter(alphas.values()))
        values_list = alpha if isinstance(alpha, list) else [1.0 - alpha, alpha]
        names = self.class_names or [str(i) for i in range(len(values_list))]
        values = {f"alpha/{metric_key(n)}": float(a) for n, a in zip(names, values_list)}
        for logger in self.loggers:
            logger.log_metrics(values, step=0)

    # ----------------------------------------------------------------- steps shared by both tasks
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        image, label = image_and_label(batch)
        logits = self.model(image)
        loss = self.loss(logits, label)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(image))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """``{"loss", "logits"}`` of the batch (callbacks such as ``AdaFocalCalibration`` use the logits)."""
        return self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities (after temperature scaling) of ``self(image)``."""
        image = plain_tensor(batch["image"] if isinstance(batch, dict) else batch)
        return self.probabilities(self(image))

    def _evaluate(self, batch: Any, stage: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``activation(logits / temperature)`` (the temperature is 1.0 unless a calibration set it)."""
        return calibrated_probabilities(logits, self.activation, self.temperature)

    # ----------------------------------------------------------------- checkpoint
    def model_spec(self) -> dict[str, Any] | None:
        """How to rebuild ``self.model``: the CLI's ``{"class_path", "init_args"}`` or ``_medfocal_spec``."""
        spec = self.hparams.get("model")
        if isinstance(spec, Mapping) and ("class_path" in spec or "name" in spec):
            return to_plain(dict(spec))
        return object_spec(self.model)

    def card_roi_size(self) -> Sequence[int] | None:
        """The patch size inference uses (segmentation: the module's sliding window); None here."""
        return None

    def task_card_options(self) -> dict[str, Any]:
        """Task-specific fields of the card (``ModelCard.task_options``) for the task's prediction head."""
        return {}

    def model_card(self) -> ModelCard:
        """The :class:`~medfocal.card.ModelCard` of this module and its data (``checkpoint["medfocal"]``)."""
        preprocessing = self._from_data("preprocessing")
        if hasattr(preprocessing, "to_dict"):
            preprocessing = preprocessing.to_dict()
        roi = self.card_roi_size()
        return ModelCard(
            task=self.task,
            model=self.model_spec(),
            activation=self.activation,
            class_names=list(self.class_names or []),
            num_classes=self.num_classes,
            in_channels=_int_or_none(self._from_data("in_channels", self._spec_arg("in_channels"))),
            spatial_dims=_int_or_none(self._from_data("spatial_dims", self._spec_arg("spatial_dims"))),
            roi_size=tuple(int(r) for r in roi) if roi is not None else None,
            preprocessing=to_plain(preprocessing or {}),
            temperature=float(self.temperature),
            loss_alpha=resolved_alphas(self.loss),
            training_data=self._training_data(),
            task_options=to_plain(self.task_card_options()),
            medfocal_version=medfocal.__version__,
        )

    def _training_data(self) -> dict[str, Any]:
        """A cheap fingerprint of the training data: datamodule and layout class, root, class counts."""
        dm = self._datamodule()
        out: dict[str, Any] = {}
        if dm is not None:
            out["datamodule"] = f"{type(dm).__module__}.{type(dm).__qualname__}"
            layout = getattr(dm, "layout", None)
            if layout is not None:
                out["layout"] = type(layout).__name__
                root = getattr(layout, "root", None)
                if root is not None:
                    out["root"] = str(root)
        if self.training_class_counts is not None:
            out["class_counts"] = list(self.training_class_counts)
        return out

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
        checkpoint[CARD_KEY] = self.model_card().to_dict()
        # hyper_parameters must stay loadable with torch.load(weights_only=True): plain dicts only
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint and not _is_plain(checkpoint[key]):
                checkpoint[key] = to_plain(dict(checkpoint[key]))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore class names, temperature and resolved alpha from the card (format 1 or 2)."""
        state = checkpoint.get("state_dict")
        legacy_temperature = state.pop("temperature", None) if isinstance(state, dict) else None
        if CARD_KEY not in checkpoint:
            if legacy_temperature is not None:
                self.temperature = float(legacy_temperature)
            return
        card = ModelCard.from_dict(checkpoint[CARD_KEY], complete=False)
        if self.class_names is None and card.class_names:
            self.class_names = list(card.class_names)
        # format 1 also kept the temperature in state_dict: the same value; the card holds it now
        self.temperature = card.temperature
        if card.loss_alpha:
            try:
                restore_alphas(self.loss, card.loss_alpha)
            except ValueError as err:  # e.g. fine-tuning with another loss: its own alpha is resolved
                warnings.warn(f"{err}; keeping the loss's own alpha", stacklevel=2)
        counts = card.training_data.get("class_counts")
        if counts is not None:
            self.training_class_counts = [float(c) for c in counts]


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


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _caller_frame(depth: int):
    import inspect

    frame = inspect.currentframe()
    for _ in range(depth):
        frame = frame.f_back if frame is not None else None
    return frame
