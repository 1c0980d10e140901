"""Temperature scaling as pure functions: fit ``T``, score ``logits / T``, and apply it.

- :func:`fit_temperature` fits one temperature ``T > 0`` that minimises the negative log-likelihood of
  ``logits / T`` on held-out data (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).
  Dividing by ``T`` never changes the argmax, so accuracy is unchanged while the confidence is
  corrected.
- :func:`nll` and :func:`scaled_ece` score a temperature.
- :func:`calibrated_probabilities` is the one place where a temperature is applied:
  ``activation(logits / T)``; the task modules (``predict_step``, metrics) and ``medfocal infer`` call it.

The Lightning callback that fits ``T`` after training is ``medfocal.tasks.TemperatureScaling``.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from medfocal.metrics.calibration import calibration_bins

__all__ = ["calibrated_probabilities", "fit_temperature", "nll", "scaled_ece"]

_MIN_LOG_T, _MAX_LOG_T = math.log(0.05), math.log(20.0)
_ACTIVATIONS = ("softmax", "sigmoid")


def calibrated_probabilities(logits: Tensor, activation: str = "softmax", temperature: float = 1.0) -> Tensor:
    """``activation(logits / temperature)`` in float32 over the channel axis 1.

    Args:
        logits: ``(B, C, *spatial)`` or ``(B, C)``.
        activation: ``"softmax"`` (over C) or ``"sigmoid"`` (each channel).
        temperature: ``T > 0`` (1.0: uncalibrated).

    Raises:
        ValueError: unknown activation or ``T <= 0``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0]])
        >>> probs = calibrated_probabilities(logits, temperature=2.0)
        >>> bool(torch.equal(probs, torch.softmax(logits / 2, dim=1)))
        True
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {_ACTIVATIONS}, got {activation!r}")
    if not float(temperature) > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    scaled = logits.float() / float(temperature)
    return torch.softmax(scaled, dim=1) if activation == "softmax" else torch.sigmoid(scaled)


def _flatten(logits: Tensor, labels: Tensor, activation: str) -> tuple[Tensor, Tensor]:
    """``(N, C)`` logits and matching labels from classification or ``(B, C, *spatial)`` inputs.

    softmax: labels become ``(N,)`` class indices; sigmoid: labels become ``(N, C)`` floats in [0, 1].
    """
    if activation not in _ACTIVATIONS:
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
