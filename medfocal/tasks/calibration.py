"""Post-hoc calibration callbacks of the medfocal task modules: temperature scaling and AdaFocal updates.

- :class:`TemperatureScaling` fits a temperature after ``trainer.fit`` on the validation set with the
  selected (best) weights (:func:`medfocal.metrics.temperature.fit_temperature`, Guo et al., ICML
  2017), sets the module's ``temperature`` and writes it into the checkpoint's model card
  (:func:`medfocal.card.update_card_file`: the card holds the only copy), and reports ECE and NLL
  before and after. ``predict_step`` and ``medfocal infer`` divide the logits by it
  (:func:`medfocal.metrics.temperature.calibrated_probabilities`).
- :class:`AdaFocalCalibration` bins the validation predictions of each validation epoch (the logits
  that ``validation_step`` returns: no second forward pass) and hands the per-bin confidence and
  accuracy to every ``AdaFocalLoss`` in the module's loss (Ghosh et al., "AdaFocal: Calibration-aware
  Adaptive Focal Loss", NeurIPS 2022).

The pure functions (``fit_temperature``, ``nll``, ``scaled_ece``) live in
:mod:`medfocal.metrics.temperature` and are re-exported here.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from medfocal.card import update_card_file
from medfocal.metrics import CalibrationBins, calibration_bins
from medfocal.metrics.temperature import fit_temperature, nll, scaled_ece

__all__ = [
    "AdaFocalCalibration",
    "TemperatureScaling",
    "collect_logits",
    "fit_temperature",
    "nll",
    "scaled_ece",
]

LogitsFn = Callable[[LightningModule, Tensor], Tensor]


# ----------------------------------------------------------------------------- logits of a module
def _default_logits(pl_module: LightningModule, image: Tensor) -> Tensor:
    """Uncalibrated logits of a whole batch: the module's own ``forward`` when it has one (medfocal's
    modules: the network, with the sliding window of segmentation, no temperature), else
    ``pl_module.model(image)``."""
    if type(pl_module).forward is not LightningModule.forward:
        return pl_module(image)
    return pl_module.model(image)


def _batch_image_label(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, Mapping):
        return batch["image"], batch["label"]
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(
        f"expected a batch dict with 'image' and 'label' (or an (image, label) pair), got {type(batch)}"
    )


def _batch_mask(batch: Any, mask_key: str | None, logits: Tensor) -> Tensor | None:
    """The boolean ``(B, *spatial)`` region mask of a segmentation batch (``batch[mask_key] > 0``)."""
    if mask_key is None:
        return None
    if not isinstance(batch, Mapping) or mask_key not in batch:
        keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise KeyError(
            f"mask_key={mask_key!r}: the validation batch has no such entry (it has {keys}); load the mask "
            "with the images (SegmentationDataModule does so for 'fov', 'mask' and 'brainmask' records)"
        )
    mask = torch.as_tensor(batch[mask_key]).to(logits.device)
    if mask.ndim == logits.ndim and mask.shape[1] == 1:
        mask = mask[:, 0]
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"mask_key={mask_key!r}: mask of shape {tuple(batch[mask_key].shape)} does not match the "
            f"logits {tuple(logits.shape)} (expected {expected} or with a channel axis of 1)"
        )
    return mask > 0


def _subsample_voxels(
    logits: Tensor,
    labels: Tensor,
    max_voxels: int | None,
    generator: torch.Generator,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Segmentation: at most ``max_voxels`` random voxels (inside ``mask`` when given) as ``(n, C)``
    logits and ``(n, ...)`` labels."""
    if logits.ndim <= 2:
        return logits, labels
    n_classes = logits.shape[1]
    flat = logits.movedim(1, -1).reshape(-1, n_classes)
    if labels.ndim == logits.ndim:
        flat_labels = labels.movedim(1, -1).reshape(-1, labels.shape[1])
        if labels.shape[1] == 1 and n_classes > 1:
            flat_labels = flat_labels[:, 0]
    else:
        flat_labels = labels.reshape(-1)
    if mask is not None:
        keep = mask.reshape(-1).to(flat.device)
        flat, flat_labels = flat[keep], flat_labels[keep]
    if max_voxels is not None and flat.shape[0] > max_voxels:
        pick = torch.randperm(flat.shape[0], generator=generator)[:max_voxels].to(flat.device)
        flat, flat_labels = flat[pick], flat_labels[pick]
    return flat, flat_labels


@torch.no_grad()
def collect_logits(
    pl_module: LightningModule,
    dataloader: Iterable[Any],
    *,
    logits_fn: LogitsFn | None = None,
    max_voxels_per_batch: int | None = 100_000,
    seed: int = 0,
    mask_key: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the module's network over a dataloader and return CPU ``(N, C)`` logits and labels.

    Segmentation batches are flattened to voxels, at most ``max_voxels_per_batch`` random voxels per
    batch (memory-light). The module is put in eval mode for the pass and restored afterwards.

    Args:
        pl_module: a medfocal task module (``self.model`` is the network).
        dataloader: batches ``{"image", "label"}``.
        logits_fn: ``(pl_module, image) -> logits``; default: the module's ``forward`` (which must
            not divide by the temperature; medfocal's modules do not), else ``pl_module.model``.
        max_voxels_per_batch: voxel subsample per segmentation batch (None: all voxels).
        seed: seed of the voxel subsample.
        mask_key: segmentation: keep only the voxels where ``batch[mask_key] > 0`` (a field of view or
            brain mask loaded with the images), so that calibration is judged where it matters and not
            on the trivially easy background around the anatomy.
    """
    logits_fn = logits_fn or _default_logits
    generator = torch.Generator().manual_seed(seed)
    was_training = pl_module.training
    pl_module.eval()
    all_logits, all_labels = [], []
    try:
        for batch in dataloader:
            image, label = _batch_image_label(batch)
            logits = logits_fn(pl_module, image.to(pl_module.device)).float().cpu()
            label = torch.as_tensor(label).cpu()
            if label.is_floating_point() and pl_module_activation(pl_module) == "softmax":
                label = label.round().long()
            mask = _batch_mask(batch, mask_key, logits)
            logits, label = _subsample_voxels(logits, label, max_voxels_per_batch, generator, mask)
            all_logits.append(logits)
            all_labels.append(label)
    finally:
        pl_module.train(was_training)
    if not all_logits:
        raise ValueError("collect_logits: the dataloader yielded no batches")
    return torch.cat(all_logits), torch.cat(all_labels)


def pl_module_activation(pl_module: nn.Module) -> str:
    """The module's activation (``"softmax"`` unless it says ``"sigmoid"``)."""
    return getattr(pl_module, "activation", "softmax")


def _val_dataloader(trainer: Trainer) -> Any:
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None and hasattr(datamodule, "val_dataloader"):
        return datamodule.val_dataloader()
    loaders = trainer.val_dataloaders
    if loaders is None:
        raise ValueError(
            "TemperatureScaling: no validation dataloader (give the Trainer a datamodule or val data)"
        )
    return loaders


def _load_own_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint this run wrote: the safe load, else a full unpickle (callback states may need it)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return torch.load(path, map_location="cpu", weights_only=False)


def _checkpoint_callbacks(trainer: Trainer) -> list[Any]:
    from pytorch_lightning.callbacks import ModelCheckpoint

    return [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]


def load_best_weights(trainer: Trainer, pl_module: LightningModule) -> str | None:
    """Load the best checkpoint a ``ModelCheckpoint`` kept into ``pl_module``; its path, or None."""
    for callback in _checkpoint_callbacks(trainer):
        best = getattr(callback, "best_model_path", "")
        if best and Path(best).is_file():
            state = _load_own_checkpoint(best)["state_dict"]
            state.pop("temperature", None)  # format 1 kept a copy of the card's temperature here
            pl_module.load_state_dict(state)
            return best
    return None


def checkpoint_files_to_update(trainer: Trainer, best: str | None) -> list[str]:
    """The files of the weights a calibration was fitted on: the best checkpoint, else the last ones
    (the weights in memory at the end of fit)."""
    if best is not None:
        return [best]
    paths = []
    for callback in _checkpoint_callbacks(trainer):
        last = getattr(callback, "last_model_path", "")
        if last and Path(last).is_file():
            paths.append(last)
    return paths


# ----------------------------------------------------------------------------- callbacks
class TemperatureScaling(Callback):
    """Fit a temperature on the validation set after ``trainer.fit`` and store it in the checkpoint.

    At ``on_fit_end``: load the best checkpoint's weights (if a ``ModelCheckpoint`` kept one and
    ``use_best_checkpoint``), collect the validation logits of the network (uncalibrated), fit ``T``
    with :func:`fit_temperature`, set the module's ``temperature`` (a float), and write it into the
    model card of the best checkpoint file (or, without one, the last one) and of ``save_path`` if
    given. ECE and NLL before
    and after go to the loggers (``calibration/*``), the console, ``self.results`` and
    ``<log_dir>/temperature_scaling.json``.

    After fit, the module in memory holds the weights the temperature was fitted for (the best ones),
    so ``trainer.test(model)`` and ``trainer.test(ckpt_path="best")`` agree.

    Args:
        use_best_checkpoint: fit with the best checkpoint's weights (model selection on validation).
        n_bins: ECE bins.
        max_iter: L-BFGS iterations.
        max_voxels_per_batch: segmentation voxel subsample per validation batch.
        save_path: also save the calibrated module there (``trainer.save_checkpoint``).
        logits_fn: ``(pl_module, image) -> logits`` (default: see :func:`collect_logits`).
        mask_key: segmentation: fit on the voxels inside ``batch[mask_key]`` only (e.g. ``"fov"`` for
            fundus images, ``"brainmask"``); the validation batches must carry that mask.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: medfocal.tasks.calibration.TemperatureScaling
              init_args:
                mask_key: fov      # DRIVE: fit inside the field of view
    """

    def __init__(
        self,
        use_best_checkpoint: bool = True,
        n_bins: int = 15,
        max_iter: int = 100,
        max_voxels_per_batch: int | None = 100_000,
        save_path: str | None = None,
        logits_fn: LogitsFn | None = None,
        mask_key: str | None = None,
    ) -> None:
        super().__init__()
        self.mask_key = mask_key
        self.use_best_checkpoint = use_best_checkpoint
        self.n_bins = n_bins
        self.max_iter = max_iter
        self.max_voxels_per_batch = max_voxels_per_batch
        self.save_path = save_path
        self.logits_fn = logits_fn
        self.results: dict[str, float] = {}
        self._done = False  # on_fit_end ran in this fit (``OperatingPoint`` may run it first)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._done = False

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or trainer.state.stage == "sanity_check" or self._done:
            return
        self._done = True
        original_device = pl_module.device
        best = load_best_weights(trainer, pl_module) if self.use_best_checkpoint else None
        pl_module.to(trainer.strategy.root_device)
        try:
            logits, labels = collect_logits(
                pl_module,
                _val_dataloader(trainer),
                logits_fn=self.logits_fn,
                max_voxels_per_batch=self.max_voxels_per_batch,
                mask_key=self.mask_key,
            )
        finally:
            pl_module.to(original_device)
        activation = pl_module_activation(pl_module)
        temperature = fit_temperature(logits, labels, activation=activation, max_iter=self.max_iter)
        pl_module.temperature = temperature
        self.results = {
            "temperature": temperature,
            "ece_before": scaled_ece(logits, labels, 1.0, activation, self.n_bins),
            "ece_after": scaled_ece(logits, labels, temperature, activation, self.n_bins),
            "nll_before": nll(logits, labels, 1.0, activation),
            "nll_after": nll(logits, labels, temperature, activation),
            "n_samples": int(logits.shape[0]),
        }
        if trainer.is_global_zero:
            for path in checkpoint_files_to_update(trainer, best):
                update_card_file(path, trust=True, temperature=temperature)  # this run's own files
            if self.save_path:
                trainer.save_checkpoint(self.save_path)
        self._report(trainer)

    def _report(self, trainer: Trainer) -> None:
        r = self.results
        rank_zero_info(
            f"medfocal: temperature scaling on validation: T = {r['temperature']:.3f}; "
            f"ECE {r['ece_before']:.4f} -> {r['ece_after']:.4f}; "
            f"NLL {r['nll_before']:.4f} -> {r['nll_after']:.4f}"
        )
        metrics = {f"calibration/{k}": float(v) for k, v in r.items()}
        for logger in trainer.loggers:
            try:
                logger.log_metrics(metrics, step=trainer.global_step)
                logger.save()
            except Exception as error:  # a finalized logger must not fail the run
                warnings.warn(
                    f"TemperatureScaling: could not log to {type(logger).__name__}: {error}", stacklevel=2
                )
        log_dir = trainer.log_dir or trainer.default_root_dir
        if trainer.is_global_zero and log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / "temperature_scaling.json").write_text(json.dumps(r, indent=2))


def _adafocal_losses(loss: nn.Module) -> list[nn.Module]:
    return [m for m in loss.modules() if callable(getattr(m, "update_from_calibration", None))]


def _loss_n_bins(loss: nn.Module, default: int) -> int:
    for name in ("n_bins", "num_bins"):
        value = getattr(loss, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


class AdaFocalCalibration(Callback):
    """Update every ``AdaFocalLoss`` in the module's loss from the validation calibration, each epoch.

    During validation, bins the top-label confidence of the (uncalibrated) predictions into the loss's
    equal-width bins (its ``n_bins``/``num_bins``, else ``n_bins`` here) and, at the end of the epoch,
    calls ``loss.update_from_calibration(bin_confidence, bin_accuracy)`` (float32 ``(n_bins,)`` each).
    An empty bin reports its centre as both confidence and accuracy (no evidence: its gamma is left
    unchanged by the AdaFocal update ``gamma_b <- gamma_b * exp(lambda (C_b - A_b))``). Skipped
    during the sanity check.

    The logits are the ``outputs["logits"]`` that ``validation_step`` returns (medfocal's task modules
    return ``{"loss", "logits"}``), so validation runs the network once.

    Args:
        n_bins: bins when the loss does not say.
        max_voxels_per_batch: segmentation voxel subsample per batch.
        mask_key: segmentation: bin only the voxels inside ``batch[mask_key]`` (e.g. ``"fov"``).

    Reference:
        Ghosh, Schaaf, Gormley, "AdaFocal: Calibration-aware Adaptive Focal Loss", NeurIPS 2022.
    """

    def __init__(
        self,
        n_bins: int = 15,
        max_voxels_per_batch: int | None = 100_000,
        mask_key: str | None = None,
    ) -> None:
        super().__init__()
        self.mask_key = mask_key
        self.n_bins = n_bins
        self.max_voxels_per_batch = max_voxels_per_batch
        self._bins: dict[int, CalibrationBins] = {}
        self.last_bins: CalibrationBins | None = None

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._bins = {}

    @torch.no_grad()
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking:
            return
        losses = _adafocal_losses(pl_module.loss)
        if not losses:
            return
        _, label = _batch_image_label(batch)
        if not (isinstance(outputs, Mapping) and torch.is_tensor(outputs.get("logits"))):
            raise ValueError(
                f"AdaFocalCalibration: {type(pl_module).__name__}.validation_step must return a dict with "
                f"the batch's 'logits' (medfocal's task modules do), got {type(outputs).__name__}"
            )
        logits = outputs["logits"].detach().float()
        label = torch.as_tensor(label).to(logits.device)
        if pl_module_activation(pl_module) == "sigmoid":
            probs = torch.sigmoid(logits)
            if probs.ndim > 1 and probs.shape[1] > 1:
                raise ValueError("AdaFocalCalibration: multi-label sigmoid outputs are not supported")
        else:
            probs = torch.softmax(logits, dim=1)
        if label.is_floating_point():
            label = label.round().long()
        mask = _batch_mask(batch, self.mask_key, logits) if probs.ndim > 2 else None
        for index, loss in enumerate(losses):
            n_bins = _loss_n_bins(loss, self.n_bins)
            bins = calibration_bins(
                probs,
                label,
                n_bins,
                mask=mask,
                max_samples=self.max_voxels_per_batch if probs.ndim > 2 else None,
            )
            self._bins[index] = self._bins[index] + bins if index in self._bins else bins

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self._bins:
            return
        for index, loss in enumerate(_adafocal_losses(pl_module.loss)):
            bins = self._bins.get(index)
            if bins is None or bins.total <= 0:
                continue
            device = next((b.device for b in loss.buffers()), torch.device("cpu"))
            loss.update_from_calibration(
                bins.bin_confidence().float().to(device), bins.bin_accuracy().float().to(device)
            )
            self.last_bins = bins
        self._bins = {}
