"""Automated focal loss: gamma derived from training progress (Weber et al. 2019)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from medfocal.losses._targets import check_non_negative
from medfocal.losses.focal import FocalLoss
from medfocal.losses.registry import register_loss
from medfocal.losses.weights import AlphaSpec

__all__ = ["AutomatedFocalLoss"]


@register_loss("automated_focal")
class AutomatedFocalLoss(FocalLoss):
    """Focal loss whose gamma follows the running probability of the correct class.

    .. math::
        \\hat p \\leftarrow m \\hat p + (1 - m)\\, \\overline{p_t}, \\qquad
        \\gamma = -\\log \\hat p, \\qquad FL = -\\alpha_t (1 - p_t)^{\\gamma} \\log p_t

    ``\\overline{p_t}`` is the mean (detached) probability of the true class over the non-ignored
    voxels/samples of the batch. The estimate is updated in training mode only (before computing the batch
    loss; the first training batch initialises it); before any training batch ``gamma = gamma_init``.
    ``gamma`` (float) is readable for logging; the estimate is a buffer, saved in checkpoints.
    Other arguments as :class:`FocalLoss`.

    Args:
        momentum: EMA factor ``m`` of the old estimate (0.95).
        gamma_init: gamma used before the first training batch (2).

    Example:
        >>> import torch
        >>> loss = AutomatedFocalLoss("softmax")
        >>> logits, target = torch.randn(8, 4), torch.randint(0, 4, (8,))
        >>> _ = loss(logits, target)
        >>> p = torch.softmax(logits, 1).gather(1, target[:, None]).mean()
        >>> abs(loss.gamma + float(torch.log(p))) < 1e-5
        True

    Paper: Weber et al., "Automated Focal Loss for Image based Object Detection", arXiv:1904.09048, 2019.
    """

    p_correct: Tensor
    initialised: Tensor

    def __init__(
        self,
        activation: str = "softmax",
        alpha: AlphaSpec = None,
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        include_background: bool = True,
        momentum: float = 0.95,
        gamma_init: float = 2.0,
    ) -> None:
        gamma_init = check_non_negative("gamma_init", gamma_init)
        super().__init__(activation, gamma_init, alpha, weight, ignore_index, label_smoothing, reduction,
                         include_background)  # fmt: skip
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected a value in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.register_buffer("p_correct", torch.tensor(float(torch.exp(torch.tensor(-gamma_init)))))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def gamma(self) -> float:  # type: ignore[override]
        """Current gamma ``-log p_hat`` (float, for logging)."""
        return float(self.gamma_tensor())

    @gamma.setter
    def gamma(self, value: float) -> None:
        # FocalLoss.__init__ assigns gamma; the initial value is carried by p_correct instead.
        pass

    def gamma_tensor(self) -> Tensor:
        """Current gamma as a 0-d tensor (no host sync)."""
        return -torch.log(self.p_correct.clamp_min(torch.finfo(self.p_correct.dtype).tiny))

    @torch.no_grad()
    def _update(self, log_p_t: Tensor, valid: Tensor | None) -> None:
        p = log_p_t.exp()
        if valid is None:
            count = torch.tensor(float(p.numel()), device=p.device)
            total = p.sum()
        else:
            valid = valid.expand_as(p)
            count, total = valid.sum(), (p * valid).sum()
        batch_mean = (total / count.clamp_min(1)).to(self.p_correct)
        ema = self.momentum * self.p_correct + (1.0 - self.momentum) * batch_mean
        new = torch.where(self.initialised, ema, batch_mean)
        self.p_correct.copy_(torch.where(count > 0, new, self.p_correct))
        self.initialised.copy_(self.initialised | (count > 0))

    def _gamma_fn(self) -> Callable[[Tensor, Tensor | None], Tensor]:
        def gamma_fn(log_p_t: Tensor, valid: Tensor | None) -> Tensor:
            if self.training and torch.is_grad_enabled():
                self._update(log_p_t, valid)
            return self.gamma_tensor().to(log_p_t.dtype)

        return gamma_fn
