"""``MedfocalCLI``: LightningCLI with medfocal's defaults (checkpointing on the task metric, loggers, bars).

``medfocal fit --config configs/<preset>.yaml`` runs through this class (moved here from
``medfocal.tasks.lightning_cli``, which re-exports it). What it adds to LightningCLI:

- model and data in subclass mode (``model: {class_path, init_args}``, ``data: {class_path, init_args}``);
- a ``checkpoint`` group (``ModelCheckpoint``) whose ``monitor``/``mode`` come from the model's
  ``monitor``/``monitor_mode`` attributes (``val/dice`` for segmentation, ``val/balanced_accuracy`` for
  classification), saving the best and ``last.ckpt``;
- default loggers TensorBoard + CSV under ``runs/`` (``trainer.logger`` in a config replaces them);
- ``LearningRateMonitor`` (when a logger is on) and ``RichProgressBar`` (on a terminal; TQDM otherwise);
- ``config.yaml`` saved next to the logs, overwritten on re-runs instead of failing;
- ``last.ckpt`` always holds the last trained step (:class:`LastStepCheckpoint`), also when
  ``max_epochs`` is not a multiple of ``check_val_every_n_epoch`` or ``max_time`` ends the run;
- :class:`NonFiniteLossStop`: training stops with :class:`NonFiniteLossError` when the training loss
  turns NaN/Inf (checked on the device, one host sync every ``every_n_steps`` steps and at epoch end);
- a warning when a ``class_path`` changes (a later ``--config`` or an option swapping the loss or the
  network) and jsonargparse keeps the earlier value's same-named ``init_args`` at values that are not
  the new class's defaults (``gamma: 2.0`` of a ``DiceFocalLoss`` becoming the focal Tversky exponent);
  :func:`carried_init_args` records them.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.callbacks.progress import ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_only

from medfocal.tasks.callbacks import NonFiniteLossError, NonFiniteLossStop

__all__ = [
    "DEFAULT_TRAINER",
    "CarriedArgs",
    "LastStepCheckpoint",
    "MedfocalCLI",
    "NonFiniteLossError",
    "NonFiniteLossStop",
    "carried_init_args",
]

# plain class_path dicts, not lazy instances: each run (also several in one process) gets new loggers
DEFAULT_TRAINER: dict[str, Any] = {
    "logger": [
        {
            "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
            "init_args": {"save_dir": "runs", "name": "medfocal"},
        },
        {
            "class_path": "pytorch_lightning.loggers.CSVLogger",
            "init_args": {"save_dir": "runs/medfocal", "name": "csv"},
        },
    ],
    "log_every_n_steps": 10,
}


class LastStepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` holds the last trained step when ``fit`` ends.

    Lightning saves ``last`` only together with a top-k save (after validation), so with
    ``max_epochs=3, check_val_every_n_epoch=2`` its ``last.ckpt`` stops at epoch 2; here the end of
    training (``max_epochs``, ``max_steps``, ``max_time``, early stopping) saves it again when steps were
    trained since. Same arguments as ``ModelCheckpoint``.
    """

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's key: checkpoints from before (and after) this class resume alike."""
        key = super().state_key
        return "ModelCheckpoint" + key[len(type(self).__qualname__) :]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Also keep the best score when a resumed run writes into a new version folder.

        ``fit --ckpt_path runs/.../version_0/checkpoints/last.ckpt`` logs into ``version_1``; Lightning then
        reloads only ``best_model_path``, so the first epoch after the resume would become "best". The
        earlier best (its file still on disk, in the old folder, which Lightning never deletes from)
        stays the one to beat.
        """
        previous = state_dict.get("dirpath", self.dirpath)
        if previous == self.dirpath:
            super().load_state_dict(state_dict)
            return
        best_path = state_dict.get("best_model_path") or ""
        self.best_model_path = best_path
        if best_path and Path(best_path).is_file():
            self.best_model_score = state_dict.get("best_model_score")
            self.best_k_models = {
                k: v for k, v in (state_dict.get("best_k_models") or {}).items() if Path(k).is_file()
            }
            self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
            self.kth_value = state_dict.get("kth_value", self.kth_value)

    def _refresh_last(self, trainer: Trainer) -> None:
        """Write ``last.ckpt`` when this save point wrote no top-k file (Lightning then skips it): a run
        killed later resumes from its last epoch, not from its last improvement."""
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(
            trainer
        ):
            self._refresh_last(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        stale = self._last_global_step_saved != trainer.global_step
        if self.save_last and stale and not trainer.fast_dev_run:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _monitor_of(model: LightningModule) -> str | None:
    return getattr(model, "monitor", None)


def _mode_of(model: LightningModule) -> str:
    return getattr(model, "monitor_mode", "max")


@dataclass(frozen=True)
class CarriedArgs:
    """``init_args`` kept across a ``class_path`` change, at values other than the new class's defaults."""

    old: str
    new: str
    #: name -> (kept value, the new class's default or ``inspect.Parameter.empty``)
    args: dict[str, tuple[Any, Any]]

    def message(self, key: str | None = None) -> str:
        where = f"{key}: " if key else ""
        kept = ", ".join(
            f"{k}={v!r}" + ("" if d is inspect.Parameter.empty else f" (its default: {d!r})")
            for k, (v, d) in self.args.items()
        )
        name, example = self.new.rsplit(".", 1)[-1], next(iter(self.args))
        option = f"--{key}.init_args.{example}=..." if key else f"init_args: {{{example}: ...}}"
        return (
            f"{where}class_path changed from {self.old} to {self.new}, and jsonargparse kept the earlier "
            f"value's same-named init_args for {name}: {kept}; if {name} should not use them, give them "
            f"after the change ({option})"
        )


def _defaults(class_path: str) -> dict[str, Any] | None:
    module, _, name = class_path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module), name)
        return {k: p.default for k, p in inspect.signature(target).parameters.items()}
    except (ImportError, AttributeError, TypeError, ValueError):
        return None


def _spec(value: Any) -> tuple[str | None, dict[str, Any]]:
    """(class_path, init_args as a dict) of a subclass spec (Namespace or dict), else (None, {})."""
    get = getattr(value, "get", None)
    if get is None or not isinstance(get("class_path"), str):
        return None, {}
    init_args = get("init_args")
    if init_args is None:
        return get("class_path"), {}
    items = init_args.items() if isinstance(init_args, dict) else vars(init_args).items()
    return get("class_path"), dict(items)


@contextlib.contextmanager
def carried_init_args() -> Iterator[list[CarriedArgs]]:
    """Record, while parsing, the ``init_args`` jsonargparse keeps when a ``class_path`` changes.

    jsonargparse discards the earlier value's arguments the new class does not take and keeps the others
    (its documented behaviour); here the kept ones the new value did not give, at values other than the
    new class's defaults, are listed (once per change).
    """
    found: list[CarriedArgs] = []
    try:  # a private hook of jsonargparse: another version without it gets no report, never an error
        from jsonargparse import _typehints

        original = _typehints.discard_init_args_on_class_path_change
    except (ImportError, AttributeError):
        yield found
        return
    seen: set[tuple[str, str]] = set()

    def discard(parser_or_action: Any, prev_val: Any, value: Any) -> Any:
        result = original(parser_or_action, prev_val, value)
        with contextlib.suppress(Exception):  # a report, never a reason for parsing to fail
            old, kept = _spec(prev_val)
            new, given = _spec(value)
            if old and new and old != new and (old, new) not in seen:
                seen.add((old, new))  # the first call carries the change; later ones see it merged
                defaults = _defaults(new) or {}
                empty = inspect.Parameter.empty
                args = {
                    k: (v, defaults.get(k, empty))
                    for k, v in kept.items()
                    if k not in given and not _same(v, defaults.get(k, empty))
                }
                if args:
                    found.append(CarriedArgs(old, new, args))
        return result

    _typehints.discard_init_args_on_class_path_change = discard
    try:
        yield found
    finally:
        _typehints.discard_init_args_on_class_path_change = original


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value == default) or (isinstance(value, (list, tuple)) and list(value) == list(default))
    except Exception:
        return False


def _keys_of(config: Any, class_path: str, prefix: str = "") -> list[str]:
    """Dotted keys of ``config`` whose value is a subclass spec of ``class_path``."""
    items = vars(config).items() if hasattr(config, "__dict__") and not isinstance(config, dict) else None
    if items is None and isinstance(config, dict):
        items = config.items()
    keys: list[str] = []
    for k, v in items or ():
        key = f"{prefix}{k}"
        if _spec(v)[0] == class_path:
            keys.append(key)
        if hasattr(v, "__dict__") or isinstance(v, dict):
            keys += _keys_of(v, class_path, key + ".")
    return keys


@rank_zero_only
def _warn(message: str) -> None:
    print(f"medfocal: warning: {message}", file=sys.stderr)


def _description() -> str:
    return "medfocal: " + (MedfocalCLI.__doc__ or "").splitlines()[0]


def _epilog() -> str:
    from medfocal.nets import list_models
    from medfocal.presets import list_presets

    return (
        f"presets (--config NAME, several --config merge in order): {', '.join(list_presets())}. "
        f"Networks by name (medfocal.nets.create_model): {', '.join(list_models())}."
    )


class MedfocalCLI(LightningCLI):
    """LightningCLI for medfocal's task modules and datamodules (see the module docstring).

    Example:
        >>> MedfocalCLI(args=["fit", "--config", "configs/demo.yaml"])  # doctest: +SKIP
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", LightningModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", DEFAULT_TRAINER)
        kwargs.setdefault("seed_everything_default", 42)
        # keyed by subcommand: LightningCLI gives these to `fit`, `validate`, ... (their --help shows them)
        per_command = {"description": _description(), "epilog": _epilog()}
        commands = ("fit", "validate", "test", "predict")
        kwargs.setdefault("parser_kwargs", {"prog": "medfocal", **{c: dict(per_command) for c in commands}})
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """LightningCLI's parsing, warning about ``init_args`` carried across a ``class_path`` change."""
        with carried_init_args() as carried:
            super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand") if carried else None
        for change in carried:
            config = self.config.get(subcommand) if subcommand else self.config
            keys = _keys_of(config, change.new)
            _warn(change.message(keys[0] if len(keys) == 1 else None))

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LastStepCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                # no metric name in the file name: "val/dice" would create a sub-folder
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.link_arguments("model", "checkpoint.monitor", compute_fn=_monitor_of, apply_on="instantiate")
        parser.link_arguments("model", "checkpoint.mode", compute_fn=_mode_of, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Hand top-level ``optimizer:``/``lr_scheduler:`` blocks to the module's injected callables.

        LightningCLI would otherwise patch ``configure_optimizers`` (losing the module's scheduler
        settings); moving the blocks into ``model.init_args`` keeps one code path and records them in
        the checkpoint's hyperparameters.
        """
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is None:
            return
        init_args = (config.get("model") or {}).get("init_args")
        if init_args is None:
            return
        for key in ("optimizer", "lr_scheduler"):
            if config.get(key) is not None and key in init_args:
                init_args[key] = config[key]
                config[key] = None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the default progress bar and learning-rate monitor unless the config already has them."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        show_bar = config.get("enable_progress_bar", True) is not False
        if show_bar and sys.stdout.isatty() and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(RichProgressBar())
        has_logger = config.get("logger", True) is not False
        if has_logger and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            callbacks.append(LearningRateMonitor(logging_interval="epoch"))
        if not any(isinstance(c, NonFiniteLossStop) for c in callbacks):
            callbacks.append(NonFiniteLossStop())
        if config.get("fast_dev_run"):
            # Lightning's on_train_end writes last.ckpt even under fast_dev_run; keep dry runs dry
            extra = [self._get(self.config_init, k) for k in self._parser(self.subcommand).callback_keys]
            for callback in [*callbacks, *extra]:
                if isinstance(callback, ModelCheckpoint):
                    callback.save_last = False
        kwargs.setdefault("callbacks", callbacks)
        return super().instantiate_trainer(**kwargs)
