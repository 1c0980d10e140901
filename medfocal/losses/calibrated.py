"""Focal losses for calibration: FLSD-53 (sample-dependent gamma) and AdaFocal (per-bin adaptive gamma)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from medfocal.losses._targets import check_non_negative
from medfocal.losses.focal import FocalLoss
from medfocal.losses.registry import register_loss
from medfocal.losses.weights import AlphaSpec

__all__ = ["AdaFocalLoss", "FLSD53FocalLoss"]


@register_loss("flsd53_focal")
class FLSD53FocalLoss(FocalLoss):
    """Focal loss with the sample-dependent gamma "FLSD-53" of Mukhoti et al.

    .. math::
        \\gamma(p_t) = \\begin{cases} 5 & p_t < 0.2 \\\\ 3 & p_t \\ge 0.2 \\end{cases}, \\qquad
        FL = -\\alpha_t (1 - p_t)^{\\gamma(p_t)} \\log p_t

    ``p_t`` is detached when choosing gamma (the schedule is not differentiated). Vectorised: gamma is a
    ``torch.where`` over the voxels/samples. Other arguments, shapes and the sigmoid variant are as
    :class:`FocalLoss` (for sigmoid, ``p_t = exp(-BCE)`` per element).

    Args:
        threshold: ``p_t`` below which ``gamma_hard`` applies (0.2).
        gamma_hard: gamma for ``p_t < threshold`` (5).
        gamma_easy: gamma for ``p_t >= threshold`` (3).

    Example:
        >>> import torch
        >>> logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> loss = FLSD53FocalLoss("softmax")(logits, target)
        >>> bool(torch.isfinite(loss))
        True

    Paper: Mukhoti et al., "Calibrating Deep Neural Networks using Focal Loss", NeurIPS 2020.
    """

    def __init__(
        self,
        activation: str = "softmax",
        alpha: AlphaSpec = None,
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        include_background: bool = True,
        threshold: float = 0.2,
        gamma_hard: float = 5.0,
        gamma_easy: float = 3.0,
    ) -> None:
        gamma_hard = check_non_negative("gamma_hard", gamma_hard)
        gamma_easy = check_non_negative("gamma_easy", gamma_easy)
        super().__init__(activation, gamma_easy, alpha, weight, ignore_index, label_smoothing, reduction,
                         include_background)  # fmt: skip
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold: expected a value in (0, 1), got {threshold}")
        self.threshold = float(threshold)
        self.gamma_hard, self.gamma_easy = gamma_hard, gamma_easy

    def gamma_for(self, log_p_t: Tensor) -> Tensor:
        """Per-sample gamma from (detached) ``log p_t``."""
        hard = log_p_t < math.log(self.threshold)
        return torch.where(hard, self.gamma_hard, self.gamma_easy).to(log_p_t.dtype)

    def _gamma_fn(self) -> Callable[[Tensor, Tensor | None], Tensor]:
        return lambda log_p_t, valid: self.gamma_for(log_p_t)


@register_loss("adafocal")
class AdaFocalLoss(FocalLoss):
    """AdaFocal: focal loss whose gamma is adapted per confidence bin from validation calibration.

    The gamma of a sample is the gamma of the bin of its detached ``p_t`` (``n_bins`` equal-width bins of
    ``[0, 1]``). After each validation, a callback calls :meth:`update_from_calibration` with the mean
    confidence ``C_b`` and accuracy ``A_b`` per bin:

    .. math:: \\gamma_b \\leftarrow \\mathrm{clip}\\big(\\gamma_b \\, e^{\\lambda (C_b - A_b)},
              \\gamma_{min}, \\gamma_{max}\\big)

    so over-confident bins get a larger gamma. A negative gamma (possible with ``gamma_min < 0`` and a
    negative ``gamma_init``) uses the inverse-focal factor ``(1 + p_t)^{|\\gamma|}``, as the paper does.
    The gammas are a buffer, so they are saved in checkpoints. Other arguments as :class:`FocalLoss`.

    Args:
        n_bins: number of confidence bins (15).
        gamma_init: initial gamma of every bin (1).
        lam: update rate lambda (1).
        gamma_min: lower clip (0).
        gamma_max: upper clip (20).

    Example:
        >>> import torch
        >>> loss = AdaFocalLoss("softmax", n_bins=5)
        >>> loss.update_from_calibration(torch.full((5,), 0.9), torch.full((5,), 0.7))
        >>> round(float(loss.gammas[0]), 4) == round(float(torch.exp(torch.tensor(0.2))), 4)
        True

    Paper: Ghosh, Schaaf & Gormley, "AdaFocal: Calibration-aware Adaptive Focal Loss", NeurIPS 2022.
    """

    gammas: Tensor

    def __init__(
        self,
        activation: str = "softmax",
        alpha: AlphaSpec = None,
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        include_background: bool = True,
        n_bins: int = 15,
        gamma_init: float = 1.0,
        lam: float = 1.0,
        gamma_min: float = 0.0,
        gamma_max: float = 20.0,
    ) -> None:
        super().__init__(activation, 0.0, alpha, weight, ignore_index, label_smoothing, reduction,
                         include_background)  # fmt: skip
        for name, value in (("gamma_init", gamma_init), ("gamma_min", gamma_min), ("gamma_max", gamma_max)):
            if not math.isfinite(value):  # may be negative (inverse focal), never NaN or infinite
                raise ValueError(f"{name}: expected a finite value, got {value}")
        if n_bins < 1:
            raise ValueError(f"n_bins: expected an integer >= 1, got {n_bins}")
        if not gamma_min <= gamma_init <= gamma_max:
            raise ValueError(
                f"gamma_init: expected a value in [gamma_min, gamma_max] = [{gamma_min}, {gamma_max}], "
                f"got {gamma_init}"
            )
        self.n_bins = int(n_bins)
        self.lam = float(lam)
        self.gamma_min = float(gamma_min)
        self.gamma_max = float(gamma_max)
        self.register_buffer("gammas", torch.full((self.n_bins,), float(gamma_init)))

    def bin_index(self, p_t: Tensor) -> Tensor:
        """Bin of each probability: ``floor(p * n_bins)``, with ``p = 1`` in the last bin."""
        return (p_t * self.n_bins).long().clamp_(0, self.n_bins - 1)

    def gamma_for(self, log_p_t: Tensor) -> Tensor:
        """Per-sample gamma: the gamma of the bin of ``p_t = exp(log_p_t)``."""
        return self.gammas.to(log_p_t.device, log_p_t.dtype).take(self.bin_index(log_p_t.exp()))

    def _gamma_fn(self) -> Callable[[Tensor, Tensor | None], Tensor]:
        return lambda log_p_t, valid: self.gamma_for(log_p_t)

    @torch.no_grad()
    def update_from_calibration(self, bin_confidence: Tensor, bin_accuracy: Tensor) -> None:
        """``gamma_b <- clip(gamma_b * exp(lam * (conf_b - acc_b)))``; NaN entries (empty bins) are skipped.

        Args:
            bin_confidence: ``(n_bins,)`` mean confidence per bin on the validation set.
            bin_accuracy: ``(n_bins,)`` accuracy per bin.
        """
        conf = torch.as_tensor(bin_confidence, dtype=torch.float32).reshape(-1)
        acc = torch.as_tensor(bin_accuracy, dtype=torch.float32).reshape(-1)
        if conf.numel() != self.n_bins or acc.numel() != self.n_bins:
            raise ValueError(
                f"update_from_calibration: expected ({self.n_bins},) bin confidences and accuracies, "
                f"got {tuple(conf.shape)} and {tuple(acc.shape)}"
            )
        gap = torch.nan_to_num(conf - acc, nan=0.0).to(self.gammas)
        updated = self.gammas * torch.exp(self.lam * gap)
        self.gammas.copy_(updated.clamp(self.gamma_min, self.gamma_max))
