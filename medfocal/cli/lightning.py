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
  turns NaN/Inf (checked on the device, one host sync every ``every_n_steps`` steps and at epoch end).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.callbacks.progress import ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from medfocal.tasks.callbacks import NonFiniteLossError, NonFiniteLossStop

__all__ = ["DEFAULT_TRAINER", "LastStepCheckpoint", "MedfocalCLI", "NonFiniteLossError", "NonFiniteLossStop"]

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
