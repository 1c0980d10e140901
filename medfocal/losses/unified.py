"""Unified focal loss (Yeung et al. 2022), symmetric and asymmetric, multi-class, logits in."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfocal.losses._targets import Target, check_activation_channels, normalise_target
from medfocal.losses.activation import Activation, look_up_activation
from medfocal.losses.focal import Activated, modulating_factor
from medfocal.losses.region import RegionStats, focal_power, soft_region_stats, tversky_loss
from medfocal.losses.registry import register_loss

__all__ = ["UnifiedFocalLoss"]


@register_loss("unified_focal")
class UnifiedFocalLoss(nn.Module):
    """Unified focal loss: a modified focal loss plus a modified focal Tversky loss (Yeung et al. 2022).

    Class 0 is the background; every other class is a "rare" (foreground) class. With ``delta`` the
    weight of the foreground, ``p_t`` the softmax probability of the true class and
    :math:`mTI_c = (TP_c + s) / (TP_c + \\delta FN_c + (1 - \\delta) FP_c + s)`:

    .. math::
        L_{mF} = \\mathrm{mean}_v \\big[ -w_t (1 - p_t)^{\\gamma_t} \\log p_t \\big], \\quad
        w_0 = 1 - \\delta, \\; w_{c \\ge 1} = \\delta

        L_{mFT} = \\mathrm{mean}_{b,c} \\, (1 - mTI_c)^{1 - \\gamma_c}, \\qquad
        L = \\lambda L_{mF} + (1 - \\lambda) L_{mFT}

    asymmetric (default): the focal suppression ``gamma`` applies to the background only in ``L_mF``
    (``gamma_t = 0`` for rare classes) and the focal enhancement to the rare classes only in ``L_mFT``
    (background ``(1 - mTI)^1``); symmetric: both to every class.

    Shapes: logits ``(B, C, *spatial)`` (C >= 2 with softmax; C = 1 with sigmoid, read as the two classes
    ``[1 - p, p]``), targets as every medfocal loss. Output: scalar.

    Differences from MONAI's ``AsymmetricUnifiedFocalLoss`` (and why):

    - logits in, log-space inside: MONAI applies no activation (it expects probabilities, clamps them to
      ``[eps, 1 - eps]`` — zero gradient outside — and takes ``log``); here ``log_softmax`` gives exact
      values and gradients and fp16/bf16 safety.
    - multi-class: MONAI supports 2 classes only (issue 8603); here class 0 is background, all others rare.
    - safe without foreground: ``(1 - mTI)^{1 - gamma}`` has an infinite slope at ``mTI = 1`` (an absent
      class predicted absent, or a perfect one); the power is continued linearly below 1e-6, so no
      NaN/Inf, and a perfect prediction still reaches 0.
    - scale: MONAI's focal part averages over the 2 channels (half of the paper's per-voxel sum over
      classes); here the per-voxel value as in the authors' code. ``weight`` multiplies the focal part as in
      the paper's equation and MONAI (the authors' code puts it on the Tversky part; equal at 0.5).
    - ``delta`` defaults to the paper's 0.6 for the unified loss (MONAI: 0.7); ``ignore_index`` and
      ``batch`` (pooled Tversky statistics) are supported; a symmetric variant is available.

    Args:
        activation: ``"softmax"`` or ``"sigmoid"`` (single channel).
        weight: ``lambda``, weight of the focal part (the Tversky part gets ``1 - lambda``).
        delta: weight of the rare classes / of false negatives in mTI, in ``[0, 1]``.
        gamma: focal parameter in ``[0, 1)``: suppression exponent in ``L_mF``, ``1 - gamma`` in ``L_mFT``.
        asymmetric: asymmetric (True) or symmetric (False) variant.
        ignore_index: target value excluded from both parts.
        batch: pool the Tversky statistics over the batch.
        smooth: ``s`` in mTI.

    Raises:
        ValueError: bad arguments, sigmoid with C > 1, and the target errors of every medfocal loss.

    Example:
        >>> import torch
        >>> loss = UnifiedFocalLoss()
        >>> logits = torch.randn(2, 3, 8, 8, 8)
        >>> empty = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)  # no foreground at all
        >>> value = loss(logits, empty)
        >>> bool(torch.isfinite(value))
        True

    Paper: Yeung et al., "Unified Focal loss: Generalising Dice and cross entropy-based losses to handle
    class imbalanced medical image segmentation", Computerized Medical Imaging and Graphics 95, 2022.
    """

    def __init__(
        self,
        activation: str = "softmax",
        weight: float = 0.5,
        delta: float = 0.6,
        gamma: float = 0.5,
        asymmetric: bool = True,
        ignore_index: int | None = None,
        batch: bool = False,
        smooth: float = 1e-6,
    ) -> None:
        super().__init__()
        self.activation = look_up_activation(activation)
        for name, value in (("weight", weight), ("delta", delta)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1], got {value}")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma: expected a value in [0, 1), got {gamma}")
        if smooth < 0:
            raise ValueError(f"smooth: expected a value >= 0, got {smooth}")
        self.weight, self.delta, self.gamma = float(weight), float(delta), float(gamma)
        self.asymmetric = asymmetric
        self.ignore_index = ignore_index
        self.batch = batch
        self.smooth = float(smooth)

    def _two_class(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """A single sigmoid channel as the 2-class softmax ``[0, x]`` (exact: ``softmax = [1 - p, p]``)."""
        check_activation_channels(Activation.SIGMOID, logits)
        if logits.shape[1] != 1:
            raise ValueError(
                "UnifiedFocalLoss with activation='sigmoid' supports a single channel (binary), "
                f"got logits of shape {tuple(logits.shape)}; use activation='softmax' for several classes"
            )
        logits2 = torch.cat([torch.zeros_like(logits), logits], dim=1)
        if target.shape == logits.shape and target.is_floating_point() and self.ignore_index is None:
            target = torch.cat([1.0 - target, target], dim=1)  # soft binary target
        return logits2, target

    def focal_part(self, act: Activated, target: Target) -> Tensor:
        """``L_mF``: per-voxel weighted (asymmetric) focal cross-entropy, mean over non-ignored voxels."""
        c = act.x.shape[1]
        w = torch.full((c,), self.delta, dtype=act.x.dtype, device=act.x.device)
        w[0] = 1.0 - self.delta
        g = torch.full((c,), 0.0 if self.asymmetric else self.gamma, dtype=act.x.dtype, device=act.x.device)
        g[0] = self.gamma
        valid = target.valid_as(act.x)
        if target.index is not None:
            logp_t = act.logp.gather(1, target.index.unsqueeze(1)).squeeze(1)
            loss = -w.take(target.index) * modulating_factor(logp_t, g.take(target.index)) * logp_t
        else:
            shape = (1, c, *([1] * (act.x.ndim - 2)))
            per_class = -w.view(shape) * modulating_factor(act.logp, g.view(shape)) * act.logp
            loss = (target.dense * per_class).sum(1)
        if valid is None:
            return loss.mean()
        return (loss * valid).sum() / valid.sum().clamp_min(1.0)

    def tversky_part(self, stats: RegionStats) -> Tensor:
        """``L_mFT``: (asymmetric) focal Tversky, mean over (batch,) classes."""
        if self.batch:
            stats = stats.pooled()
        base = tversky_loss(stats, self.delta, 1.0 - self.delta, self.smooth, self.smooth)
        enhanced = focal_power(base, 1.0 - self.gamma)
        if self.asymmetric:
            enhanced = torch.cat([base[..., :1], enhanced[..., 1:]], dim=-1)
        return enhanced.mean()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``weight * L_mF + (1 - weight) * L_mFT`` for logits ``(B, C, *spatial)``."""
        with torch.autocast(logits.device.type, enabled=False):  # float32 inside, whatever autocast says
            return self._forward(logits, target)

    def _forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.activation == Activation.SIGMOID:
            logits, target = self._two_class(logits, target)
        act = Activated(logits, Activation.SOFTMAX)
        t = normalise_target(act.x, target, Activation.SOFTMAX, self.ignore_index)
        total = act.x.new_zeros(())
        if self.weight > 0:
            total = total + self.weight * self.focal_part(act, t)
        if self.weight < 1:
            stats = soft_region_stats(act.probs, t.index, t.dense, t.valid_as(act.x))
            total = total + (1.0 - self.weight) * self.tversky_part(stats)
        return total
