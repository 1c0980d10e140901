"""Deep supervision loss wrapper for DynUNet's stacked outputs (wraps any loss module)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss as _MonaiDeepSupervisionLoss
from torch import nn

__all__ = ["DeepSupervisionLoss"]

_WEIGHT_MODES = ("exp", "same", "two")


class DeepSupervisionLoss(_MonaiDeepSupervisionLoss):
    """Weighted sum of a loss over deep-supervision outputs, ``sum_i w_i * loss(out_i, target_i)``.

    Accepts what a deeply supervised network returns:

    - a stacked tensor ``(B, S, C, *spatial)`` (MONAI ``DynUNet`` in training mode; level 0 is the full
      resolution output), recognised by having one dimension more than ``target``;
    - a list/tuple of ``(B, C, *spatial_i)`` tensors, highest resolution first;
    - a plain ``(B, C, *spatial)`` tensor (eval mode), passed to the loss unchanged.

    Targets are ``(B, 1 or C, *spatial)``; for a level with a smaller spatial size they are resized by
    nearest-neighbour interpolation (integer targets keep their dtype). Weights: ``"exp"`` ``1/2^i``,
    ``"same"`` 1, ``"two"`` ``1, 0.5, 0.5, ...``, or explicit ``weights``; normalised to sum to 1 when
    ``normalize`` (so the loss scale does not depend on the number of levels).

    Args:
        loss: any loss module ``loss(logits, target) -> Tensor``, e.g. a medfocal ``DiceFocalLoss``.
        weight_mode: ``"exp"``, ``"same"`` or ``"two"``.
        weights: explicit per-level weights (override ``weight_mode``; at least as many as levels).
        normalize: divide the weights by their sum.

    Raises:
        ValueError: for an unknown ``weight_mode``, too few ``weights``, or ``None`` input.

    Example::

        >>> ds = DeepSupervisionLoss(torch.nn.MSELoss())
        >>> ds.get_weights(3)
        [0.5714285714285714, 0.2857142857142857, 0.14285714285714285]

    Wraps ``monai.losses.DeepSupervisionLoss``; Lee et al., Deeply-Supervised Nets, AISTATS 2015.
    """

    def __init__(
        self,
        loss: nn.Module,
        weight_mode: str = "exp",
        weights: Sequence[float] | None = None,
        normalize: bool = True,
    ) -> None:
        if weight_mode not in _WEIGHT_MODES:
            raise ValueError(f"weight_mode must be one of {_WEIGHT_MODES}, got {weight_mode!r}")
        super().__init__(
            loss=loss, weight_mode=weight_mode, weights=None if weights is None else list(weights)
        )
        self.normalize = normalize

    def get_weights(self, levels: int = 1) -> list[float]:
        """Per-level weights for ``levels`` outputs (normalised to sum 1 when ``normalize``)."""
        levels = max(1, levels)
        if self.weights is not None:
            if len(self.weights) < levels:
                raise ValueError(f"got {len(self.weights)} weights for {levels} deep supervision levels")
            weights = [float(w) for w in self.weights[:levels]]
        elif self.weight_mode == "exp":
            weights = [0.5**i for i in range(levels)]
        else:
            weights = super().get_weights(levels)
        if self.normalize:
            total = sum(weights)
            weights = [w / total for w in weights]
        return weights

    def get_loss(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of one level, the target resized (nearest) to the level's spatial size if it differs."""
        if input.shape[2:] != target.shape[2:]:
            resized = F.interpolate(target.float(), size=input.shape[2:], mode=self.interp_mode)
            target = resized.to(target.dtype)
        return self.loss(input, target)

    def forward(
        self, input: torch.Tensor | Sequence[torch.Tensor] | None, target: torch.Tensor
    ) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.ndim == target.ndim + 1:
            input = list(torch.unbind(input, dim=1))
        if isinstance(input, (list, tuple)):
            weights = self.get_weights(len(input))
            return sum(w * self.get_loss(out.float(), target) for w, out in zip(weights, input))
        if input is None:
            raise ValueError("input should be a tensor or a list of tensors, got None")
        return self.loss(input.float(), target)
