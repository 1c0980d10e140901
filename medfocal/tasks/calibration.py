"""Post-hoc calibration for the medfocal task modules: temperature scaling and AdaFocal updates.

- :func:`fit_temperature` fits one temperature ``T > 0`` that minimises the negative log-likelihood of
  ``logits / T`` on held-out data (Guo et al., ICML 2017). Dividing by ``T`` never changes the argmax,
  so accuracy is unchanged while the confidence is corrected.
- :class:`TemperatureScaling` (Lightning callback) does it after ``trainer.fit`` on the validation set
  with the selected (best) weights, stores ``T`` in the module's ``temperature`` buffer and in the
  checkpoint (``state_dict["temperature"]`` and ``checkpoint["medfocal"]["temperature"]``), and reports
  ECE and NLL before and after. ``predict_step`` and ``medfocal infer`` divide the logits by it.
- :class:`AdaFocalCalibration` (Lightning callback) bins the validation predictions after each
  validation epoch and hands the per-bin confidence and accuracy to every ``AdaFocalLoss`` in the
  module's loss (Ghosh et al., "AdaFocal: Calibration-aware Adaptive Focal Loss", NeurIPS 2022).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from medfocal.metrics import CalibrationBins, calibration_bins

__all__ = [
    "AdaFocalCalibration",
    "TemperatureScaling",
    "collect_logits",
    "fit_temperature",
    "nll",
    "scaled_ece",
]

LogitsFn = Callable[[LightningModule, Tensor], Tensor]

_MIN_LOG_T, _MAX_LOG_T = math.log(0.05), math.log(20.0)


# ----------------------------------------------------------------------------- functional core
def _flatten(logits: Tensor, labels: Tensor, activation: str) -> tuple[Tensor, Tensor]:
    """``(N, C)`` logits and matching labels from classification or ``(B, C, *spatial)`` inputs.

    softmax: labels become ``(N,)`` class indices; sigmoid: labels become ``(N, C)`` floats in [0, 1].
    """
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation: expected 'softmax' or 'sigmoid', got {activation!r}")
    if logits.ndim == 1:
        logits = logits[:, None]
    n_classes = logits.shape[1]
    if activation == "softmax" and n_classes < 2:
        raise ValueError(
            f"softmax temperature scaling needs C >= 2 logit channels, got shape {tuple(logits.shape)}"
        )
    spatial = tuple(logits.shape[2:])
    flat = logits.movedim(1, -1).reshape(-1, n_classes)
    if activation == "softmax":
        if labels.ndim == logits.ndim and labels.shape[1] == n_classes and labels.shape == logits.shape:
            labels = labels.argmax(dim=1)
        elif labels.ndim == logits.ndim and labels.shape[1] == 1:
            labels = labels[:, 0]
        if tuple(labels.shape) != (logits.shape[0], *spatial):
            raise ValueError(
                f"labels: expected class indices of shape {(logits.shape[0], *spatial)} for logits "
                f"{tuple(logits.shape)}, got {tuple(labels.shape)}"
            )
        return flat, labels.reshape(-1).long()
    if labels.ndim == logits.ndim - 1 and n_classes == 1:
        labels = labels.unsqueeze(1)
    if labels.shape != logits.shape:
        raise ValueError(
            f"labels: expected {tuple(logits.shape)} (the logits' shape) for sigmoid, "
            f"got {tuple(labels.shape)}"
        )
    return flat, labels.movedim(1, -1).reshape(-1, n_classes).float()


def nll(logits: Tensor, labels: Tensor, temperature: float = 1.0, activation: str = "softmax") -> float:
    """Mean negative log-likelihood of ``logits / temperature`` (cross-entropy, or BCE for sigmoid).

    Shapes as in :func:`fit_temperature`.
    """
    flat, target = _flatten(logits.detach(), labels.detach(), activation)
    scaled = flat.double() / temperature
    if activation == "softmax":
        return F.cross_entropy(scaled, target.to(flat.device)).item()
    return F.binary_cross_entropy_with_logits(scaled, target.double().to(flat.device)).item()


def scaled_ece(
    logits: Tensor, labels: Tensor, temperature: float = 1.0, activation: str = "softmax", n_bins: int = 15
) -> float:
    """Expected calibration error of ``activation(logits / temperature)``.

    softmax: top-label ECE (:func:`medfocal.metrics.expected_calibration_error`); sigmoid: the mean of the
    binary ECE of each output channel.
    """
    flat, target = _flatten(logits.detach(), labels.detach(), activation)
    scaled = flat.double() / temperature
    if activation == "softmax":
        return calibration_bins(torch.softmax(scaled, dim=1), target, n_bins).ece().item()
    probs = torch.sigmoid(scaled)
    values = [
        calibration_bins(probs[:, c], target[:, c].round().long(), n_bins).ece()
        for c in range(probs.shape[1])
    ]
    return torch.stack(values).mean().item()


def fit_temperature(
    logits: Tensor,
    labels: Tensor,
    *,
    activation: str = "softmax",
    max_iter: int = 100,
    max_samples: int | None = 2_000_000,
    generator: torch.Generator | None = None,
) -> float:
    """Temperature ``T`` minimising the NLL of ``logits / T`` (temperature scaling, Guo et al. 2017).

    Optimises ``log T`` (so ``T > 0``) with L-BFGS and a strong-Wolfe line search in float64, starting
    from ``T = 1``; ``T`` is kept in ``[0.05, 20]``. ``T > 1`` softens over-confident predictions,
    ``T < 1`` sharpens under-confident ones (focal losses often give ``T < 1``). The argmax, hence the
    accuracy, is unchanged.

    Args:
        logits: ``(N, C)`` classification logits or ``(B, C, *spatial)`` segmentation logits (held-out
            data, e.g. the validation set); ``(N,)`` or ``C = 1`` with ``activation="sigmoid"``.
        labels: softmax: class indices ``(N,)`` / ``(B, *spatial)`` / ``(B, 1, *spatial)`` (or one-hot);
            sigmoid: ``{0, 1}`` targets of the logits' shape.
        activation: ``"softmax"`` (cross-entropy) or ``"sigmoid"`` (binary cross-entropy).
        max_iter: L-BFGS iterations.
        max_samples: fit on a uniform random subset of at most this many samples/voxels (None: all).
        generator: random generator of that subset.

    Returns:
        The temperature as a Python float (1.0 if the fit failed to improve the NLL).

    Raises:
        ValueError: mismatched shapes, an unknown activation, or no samples.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.randint(0, 3, (2000,), generator=g)
        >>> logits = torch.randn(2000, 3, generator=g) + 2 * torch.nn.functional.one_hot(labels, 3)
        >>> t1, t3 = fit_temperature(logits, labels), fit_temperature(3 * logits, labels)
        >>> round(t3 / t1, 1)  # T follows a known scaling of the logits
        3.0
    """
    flat, target = _flatten(logits.detach(), labels.detach(), activation)
    if flat.shape[0] == 0:
        raise ValueError("fit_temperature: no samples")
    if max_samples is not None and flat.shape[0] > max_samples:
        pick = torch.randperm(flat.shape[0], generator=generator)[:max_samples].to(flat.device)
        flat, target = flat[pick], target[pick]
    flat = flat.double()
    target = target.double() if activation == "sigmoid" else target

    def objective(log_t: Tensor) -> Tensor:
        scaled = flat / log_t.clamp(_MIN_LOG_T, _MAX_LOG_T).exp()
        if activation == "softmax":
            return F.cross_entropy(scaled, target)
        return F.binary_cross_entropy_with_logits(scaled, target)

    log_t = torch.zeros((), dtype=torch.float64, device=flat.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = objective(log_t)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
        with torch.no_grad():
            fitted = float(log_t.clamp(_MIN_LOG_T, _MAX_LOG_T))
            improved = objective(torch.tensor(fitted, dtype=torch.float64, device=flat.device)) <= objective(
                torch.zeros((), dtype=torch.float64, device=flat.device)
            )
    if not math.isfinite(fitted) or not bool(improved):
        warnings.warn("fit_temperature: the fit did not lower the NLL; keeping T = 1", stacklevel=2)
        return 1.0
    return math.exp(fitted)


# ----------------------------------------------------------------------------- logits of a module
def _default_logits(pl_module: LightningModule, image: Tensor) -> Tensor:
    """Uncalibrated logits of a whole batch.

    ``pl_module.infer_logits(image)`` if defined; else the module's own ``forward`` when it has one
    (medfocal's modules: the network, with a sliding window for segmentation with ``roi_size``, and
    no temperature); else ``pl_module.model(image)``.
    """
    infer = getattr(pl_module, "infer_logits", None)
    if callable(infer):
        return infer(image)
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
        logits_fn: ``(pl_module, image) -> logits``; default: ``pl_module.infer_logits`` if defined,
            else the module's ``forward`` (which must not divide by the temperature; medfocal's
            modules do not), else ``pl_module.model``.
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


def _checkpoint_callbacks(trainer: Trainer) -> list[Any]:
    from pytorch_lightning.callbacks import ModelCheckpoint

    return [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]


def write_temperature(path: str | os.PathLike[str], temperature: float) -> None:
    """Set the temperature of a saved medfocal checkpoint in place (atomically).

    Updates ``state_dict["temperature"]`` and ``checkpoint["medfocal"]["temperature"]``.
    """
    path = Path(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint.setdefault("state_dict", {})["temperature"] = torch.tensor(float(temperature))
    meta = checkpoint.get("medfocal")
    if isinstance(meta, dict):
        meta["temperature"] = float(temperature)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- callbacks
class TemperatureScaling(Callback):
    """Fit a temperature on the validation set after ``trainer.fit`` and store it in the checkpoint.

    At ``on_fit_end``: load the best checkpoint's weights (if a ``ModelCheckpoint`` kept one and
    ``use_best_checkpoint``), collect the validation logits of the network (uncalibrated), fit ``T``
    with :func:`fit_temperature`, write it into the module's ``temperature`` buffer, and into the best
    checkpoint file (or, without one, the last one), and into ``save_path`` if given. ECE and NLL before
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

    def _load_best(self, trainer: Trainer, pl_module: LightningModule) -> str | None:
        if not self.use_best_checkpoint:
            return None
        for callback in _checkpoint_callbacks(trainer):
            best = getattr(callback, "best_model_path", "")
            if best and Path(best).is_file():
                checkpoint = torch.load(best, map_location="cpu", weights_only=False)
                pl_module.load_state_dict(checkpoint["state_dict"])
                return best
        return None

    def _files_to_update(self, trainer: Trainer, best: str | None) -> list[str]:
        if best is not None:
            return [best]
        paths = []
        for callback in _checkpoint_callbacks(trainer):
            last = getattr(callback, "last_model_path", "")
            if last and Path(last).is_file():
                paths.append(last)
        return paths

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or trainer.state.stage == "sanity_check":
            return
        original_device = pl_module.device
        best = self._load_best(trainer, pl_module)
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
        with torch.no_grad():
            pl_module.temperature.fill_(temperature)
        self.results = {
            "temperature": temperature,
            "ece_before": scaled_ece(logits, labels, 1.0, activation, self.n_bins),
            "ece_after": scaled_ece(logits, labels, temperature, activation, self.n_bins),
            "nll_before": nll(logits, labels, 1.0, activation),
            "nll_after": nll(logits, labels, temperature, activation),
            "n_samples": int(logits.shape[0]),
        }
        if trainer.is_global_zero:
            for path in self._files_to_update(trainer, best):
                write_temperature(path, temperature)
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

    Uses ``outputs["logits"]`` of ``validation_step`` when the module returns it (no extra forward);
    otherwise runs the network on the batch again.

    Args:
        n_bins: bins when the loss does not say.
        max_voxels_per_batch: segmentation voxel subsample per batch.
        logits_fn: ``(pl_module, image) -> logits`` (default: see :func:`collect_logits`).
        mask_key: segmentation: bin only the voxels inside ``batch[mask_key]`` (e.g. ``"fov"``).

    Reference:
        Ghosh, Schaaf, Gormley, "AdaFocal: Calibration-aware Adaptive Focal Loss", NeurIPS 2022.
    """

    def __init__(
        self,
        n_bins: int = 15,
        max_voxels_per_batch: int | None = 100_000,
        logits_fn: LogitsFn | None = None,
        mask_key: str | None = None,
    ) -> None:
        super().__init__()
        self.mask_key = mask_key
        self.n_bins = n_bins
        self.max_voxels_per_batch = max_voxels_per_batch
        self.logits_fn = logits_fn or _default_logits
        self._bins: dict[int, CalibrationBins] = {}
        self._generator = torch.Generator().manual_seed(0)
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
        image, label = _batch_image_label(batch)
        if isinstance(outputs, Mapping) and torch.is_tensor(outputs.get("logits")):
            logits = outputs["logits"]
        else:
            logits = self.logits_fn(pl_module, image)
        logits = logits.detach().float()
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
