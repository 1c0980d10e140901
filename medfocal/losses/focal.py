"""Focal loss (softmax and sigmoid), computed in log space and float32.

The functional core (:class:`Activated`, :func:`modulating_factor`, :func:`softmax_focal_index`,
:func:`softmax_focal_dense`, :func:`sigmoid_focal`) is testable alone and shared by the hybrid losses,
which compute ``log_softmax`` once for the focal and the region terms.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfocal.losses import _compiled as compiled
from medfocal.losses._fused import flush_tiny_grad, fused_softmax_index_loss
from medfocal.losses._targets import (
    REDUCTIONS,
    Target,
    as_float,
    check_choice,
    check_non_negative,
    class_vector,
    normalise_target,
)
from medfocal.losses.activation import Activation, look_up_activation
from medfocal.losses.region import RegionStats
from medfocal.losses.registry import register_loss
from medfocal.losses.weights import AlphaSpec, alpha_from_counts, parse_alpha

__all__ = [
    "Activated",
    "FocalLoss",
    "modulating_factor",
    "sigmoid_focal",
    "softmax_focal_dense",
    "softmax_focal_index",
]

Gamma = float | Tensor


class Activated:
    """Logits with their log-probabilities, computed once (float32) and shared by all terms.

    softmax: ``logp = log_softmax(x, 1)``; sigmoid: ``logp = logsigmoid(x)`` (lazily).
    ``probs`` is ``exp(logp)`` (softmax) or ``sigmoid(x)``.
    """

    def __init__(self, logits: Tensor, activation: str) -> None:
        self.x = as_float(logits)
        self.activation = activation

    @cached_property
    def x_flushed(self) -> Tensor:
        # the autograd paths flush their near-subnormal gradients here (the fused path does it itself)
        return flush_tiny_grad(self.x)

    @cached_property
    def logp(self) -> Tensor:
        if self.activation == Activation.SOFTMAX:
            return F.log_softmax(self.x_flushed, dim=1)
        return F.logsigmoid(self.x_flushed)

    @cached_property
    def probs(self) -> Tensor:
        if self.activation == Activation.SOFTMAX:
            return self.logp.exp()
        return torch.sigmoid(self.x_flushed)


def modulating_factor(logp_t: Tensor, gamma: Gamma) -> Tensor | None:
    """The focal modulating factor ``(1 - p_t) ** gamma`` from ``log p_t``; None when ``gamma == 0``.

    ``1 - p_t = -expm1(log p_t)`` is exact for p_t near 1; the base is clamped at the smallest normal
    float so fractional gammas give finite gradients when ``p_t`` rounds to 1. A tensor ``gamma`` (per
    sample, e.g. FLSD-53 or AdaFocal) may be negative: then the factor is the inverse-focal
    ``(1 + p_t) ** |gamma|`` (Ghosh et al. 2022).
    """
    if not isinstance(gamma, Tensor):
        if gamma == 0:
            return None
        return (-torch.expm1(logp_t)).clamp_min(torch.finfo(logp_t.dtype).tiny).pow(gamma)
    one_minus_p = (-torch.expm1(logp_t)).clamp_min(torch.finfo(logp_t.dtype).tiny)
    gamma = gamma.to(logp_t.dtype)
    return one_minus_p.pow(gamma.clamp_min(0)) * (2.0 - one_minus_p).pow((-gamma).clamp_min(0))


@dataclass
class FocalTerms:
    """Unreduced focal loss, its mean normaliser and (softmax with indices) ``p_t`` for region terms."""

    loss: Tensor
    normaliser: Tensor | float
    p_t: Tensor | None = None


def _normaliser(weight_t: Tensor | None, valid: Tensor | None, numel: int) -> Tensor | float:
    if weight_t is None:
        return float(numel) if valid is None else valid.sum()
    return weight_t.sum() if valid is None else (weight_t * valid).sum()


def softmax_focal_index(
    logp: Tensor,
    index: Tensor,
    valid: Tensor | None,
    gamma: Gamma | None = 2.0,
    alpha: Tensor | None = None,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    gamma_fn=None,
) -> FocalTerms:
    """Softmax focal loss per voxel for class-index targets, via ``gather`` (no one-hot).

    .. math:: FL = -\\alpha_t w_t (1 - p_t)^\\gamma \\log p_t

    with label smoothing ``eps``: ``(1 - eps) FL_t + eps / C * sum_c FL_c`` (as ``F.cross_entropy``).

    Args:
        logp: ``(B, C, *spatial)`` log-probabilities.
        index: ``(B, *spatial)`` long class indices (ignored voxels hold any valid index).
        valid: ``(B, *spatial)`` float mask or None.
        gamma: focusing parameter (float or tensor broadcastable to ``index``).
        alpha: ``(C,)`` per-class balancing factor (mean still divides by the voxel count), or None.
        weight: ``(C,)`` per-class weights as ``F.cross_entropy`` (mean divides by the summed weights).
        label_smoothing: in ``[0, 1]``.
        gamma_fn: optional callable ``(log p_t (detached), valid) -> gamma`` overriding ``gamma``.

    Returns:
        :class:`FocalTerms` with ``loss`` of shape ``(B, *spatial)`` (zero where ignored).
    """
    logp_t = logp.gather(1, index.unsqueeze(1)).squeeze(1)
    if gamma_fn is not None:
        gamma = gamma_fn(logp_t.detach(), valid)
    mod = modulating_factor(logp_t, gamma)
    loss = -logp_t if mod is None else -mod * logp_t
    factor = _combine(alpha, weight)
    if factor is not None:
        loss = loss * factor.take(index)
    if label_smoothing > 0:
        c = logp.shape[1]
        g_all = gamma.unsqueeze(1) if isinstance(gamma, Tensor) and gamma.ndim else gamma
        mod_all = modulating_factor(logp, g_all)
        per_class = -logp if mod_all is None else -mod_all * logp
        if factor is not None:
            per_class = per_class * factor.view(1, c, *([1] * (logp.ndim - 2)))
        loss = (1.0 - label_smoothing) * loss + (label_smoothing / c) * per_class.sum(1)
    if valid is not None:
        loss = loss * valid
    weight_t = None if weight is None else weight.take(index)
    return FocalTerms(loss, _normaliser(weight_t, valid, index.numel()), logp_t)


def softmax_focal_dense(
    logp: Tensor,
    target: Tensor,
    valid: Tensor | None,
    gamma: Gamma | None = 2.0,
    alpha: Tensor | None = None,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    gamma_fn=None,
) -> FocalTerms:
    """Softmax focal loss per voxel for one-hot or soft targets ``y`` of shape ``(B, C, *spatial)``.

    .. math:: FL = -\\sum_c y_c \\alpha_c w_c (1 - p_c)^\\gamma \\log p_c

    For one-hot ``y`` this equals :func:`softmax_focal_index` (the mean divides by ``sum_c y_c w_c``, so
    one-hot and index targets agree, also with ``weight``). A per-voxel ``gamma`` from ``gamma_fn`` reads
    ``log p_t = sum_c y_c log p_c``.
    """
    c = logp.shape[1]
    shape = (1, c, *([1] * (logp.ndim - 2)))
    if gamma_fn is not None:
        gamma = gamma_fn((target * logp.detach()).sum(1), valid)
    if isinstance(gamma, Tensor) and gamma.ndim:
        gamma = gamma.unsqueeze(1)
    y = target
    if label_smoothing > 0:
        y = (1.0 - label_smoothing) * target + label_smoothing / c
    mod = modulating_factor(logp, gamma)
    per_class = -logp if mod is None else -mod * logp
    factor = _combine(alpha, weight)
    if factor is not None:
        per_class = per_class * factor.view(shape)
    loss = (y * per_class).sum(1)
    if valid is not None:
        loss = loss * valid
    weight_t = None if weight is None else (target * weight.view(shape)).sum(1)
    return FocalTerms(loss, _normaliser(weight_t, valid, loss.numel()))


def sigmoid_focal(
    x: Tensor,
    target: Tensor,
    valid: Tensor | None,
    gamma: Gamma | None = 2.0,
    alpha: Tensor | None = None,
    weight: Tensor | None = None,
    gamma_fn=None,
) -> FocalTerms:
    """Sigmoid focal loss per element (RetinaNet / ``torchvision.ops.sigmoid_focal_loss`` convention).

    .. math::
        CE = \\mathrm{BCEWithLogits}(x, y), \\quad 1 - p_t = y\\,\\sigma(-x) + (1 - y)\\,\\sigma(x), \\\\
        FL = \\alpha_t w_c (1 - p_t)^\\gamma CE, \\quad \\alpha_t = \\alpha y + (1 - \\alpha)(1 - y)

    Args:
        x: ``(B, C, *spatial)`` float logits.
        target: ``(B, C, *spatial)`` binary / multi-label / soft target.
        valid: ``(B, *spatial)`` float mask or None.
        alpha: scalar or ``(C,)`` weight of the positives, or None (no balancing).
        weight: ``(C,)`` per-channel weights (as ``binary_cross_entropy_with_logits``: the mean divides by the
            element count).
    """
    c = x.shape[1]
    shape = (1, c, *([1] * (x.ndim - 2)))
    ce = F.binary_cross_entropy_with_logits(x, target, reduction="none")
    if gamma_fn is not None:
        gamma = gamma_fn(-ce.detach(), None if valid is None else valid.unsqueeze(1))
    loss = ce
    if isinstance(gamma, Tensor):  # sample-dependent gamma: p_t = exp(-CE), exact for hard labels
        loss = modulating_factor(-ce, gamma) * ce
    elif gamma != 0:
        one_minus_pt = target * torch.sigmoid(-x) + (1.0 - target) * torch.sigmoid(x)
        loss = _pow(one_minus_pt, gamma) * ce
    if alpha is not None:
        a = alpha.view(shape) if alpha.ndim else alpha
        loss = loss * (a * target + (1.0 - a) * (1.0 - target))
    if weight is not None:
        loss = loss * weight.view(shape)
    if valid is not None:
        loss = loss * valid.unsqueeze(1)
        return FocalTerms(loss, valid.sum() * c)
    return FocalTerms(loss, float(loss.numel()))


def _pow(base: Tensor, gamma: float) -> Tensor:
    return base.clamp_min(torch.finfo(base.dtype).tiny).pow(gamma)


def _combine(alpha: Tensor | None, weight: Tensor | None) -> Tensor | None:
    if alpha is None:
        return weight
    return alpha if weight is None else alpha * weight


def reduce_loss(terms: FocalTerms, reduction: str) -> Tensor:
    """``mean`` (over non-ignored voxels, or the summed target weights), ``sum`` or ``none``."""
    if reduction == "none":
        return terms.loss
    total = terms.loss.sum()
    if reduction == "sum":
        return total
    norm = terms.normaliser
    if isinstance(norm, Tensor):
        return total / norm.to(total.dtype).clamp_min(torch.finfo(total.dtype).tiny)
    return total / max(norm, 1.0)


@register_loss("focal")
class FocalLoss(nn.Module):
    """Focal loss for logits, softmax (multi-class) or sigmoid (binary / multi-label), in log space.

    softmax, with ``p_t`` the softmax probability of the true class:

    .. math:: FL = -\\alpha_t \\, w_t \\, (1 - p_t)^{\\gamma} \\log p_t

    ``reduction="mean"`` divides by the number of non-ignored voxels/samples (by ``sum w_t`` when
    ``weight`` is given), so ``gamma=0, alpha=None`` equals ``F.cross_entropy`` (also with ``weight``,
    ``ignore_index`` and ``label_smoothing``).

    sigmoid, elementwise on every channel with ``alpha`` for positives and ``1 - alpha`` for negatives
    (RetinaNet convention, equal to ``torchvision.ops.sigmoid_focal_loss``); ``gamma=0, alpha=None`` equals
    ``F.binary_cross_entropy_with_logits``.

    Shapes: logits ``(B, C, *spatial)`` (``BCH[WD]``) or ``(B, C)``; target class indices ``(B, *spatial)``,
    ``(B, 1, *spatial)``, ``(B,)``, or one-hot / multi-label / soft of the logits' shape. Output: scalar, or
    with ``reduction="none"`` ``(B, *spatial)`` (softmax) / ``(B, C, *spatial)`` (sigmoid).

    Computed from ``log_softmax`` / ``logsigmoid`` in float32 (fp16/bf16 autocast inputs are upcast), so
    loss and gradients stay finite for logits up to ±1e4. Unlike MONAI's ``FocalLoss(use_softmax=True)``
    the mean is over voxels, not voxels x channels (MONAI's value is this one divided by ``C``).
    Softmax with class-index targets runs a fused kernel with an analytic gradient
    (:mod:`medfocal.losses._fused`): first derivatives only (double backward raises). On the CPU, from
    2^20 logits, it and the sigmoid terms run compiled (:mod:`medfocal.losses._compiled`: one pass forward,
    one backward; the first call compiles; ``MEDFOCAL_COMPILED_LOSS=off`` keeps everything eager).

    Args:
        activation: ``"softmax"`` (mutually exclusive classes, C >= 2) or ``"sigmoid"``.
        gamma: focusing parameter >= 0; 0 gives cross-entropy.
        alpha: None; a scalar (softmax: ``1 - alpha`` for class 0, ``alpha`` for the others, as MONAI;
            sigmoid: weight of positives); a per-class sequence; or ``"auto"``, resolved from class counts by
            :func:`medfocal.losses.set_class_counts` (class-balanced weights).
        weight: per-class rescaling as ``F.cross_entropy``'s (softmax) / per-channel as BCE's (sigmoid).
        ignore_index: target value excluded from the loss and from the mean.
        label_smoothing: in ``[0, 1]`` (softmax only), as ``F.cross_entropy``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        include_background: if False, class/channel 0 contributes nothing (softmax: voxels of class 0 add
            zero loss but still count in the mean; probabilities remain the softmax over all classes).

    Raises:
        ValueError: bad arguments; in forward, wrong target shape, class index out of range, C=1 with
            softmax, alpha/weight length != C, unresolved ``alpha="auto"``.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
        >>> ce = FocalLoss("softmax", gamma=0.0)(logits, target)
        >>> torch.allclose(ce, F.cross_entropy(logits, target))
        True
        >>> bool(FocalLoss("softmax", gamma=2.0)(logits, target) < ce)
        True

    Paper: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
    """

    def __init__(
        self,
        activation: str = "softmax",
        gamma: float = 2.0,
        alpha: AlphaSpec = None,
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        include_background: bool = True,
    ) -> None:
        super().__init__()
        self.activation = look_up_activation(activation)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.gamma = check_non_negative("gamma", gamma)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")
        if label_smoothing > 0 and activation == Activation.SIGMOID:
            raise ValueError(
                "label_smoothing: only defined for activation='softmax', got activation='sigmoid'"
            )
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = ignore_index
        self.include_background = include_background
        if not include_background and self.activation == Activation.SOFTMAX:
            warnings.warn(
                f"{type(self).__name__}(activation='softmax', include_background=False): voxels of class 0 "
                "add no loss, so nothing stops the network from predicting a foreground class everywhere "
                "(the loss then goes to 0 while Dice falls to the foreground fraction). Keep "
                "include_background=True for a voxel-wise loss; the hybrids (DiceFocalLoss, ...) already "
                "keep every class in their focal term",
                UserWarning,
                stacklevel=2,
            )
        self.alpha_auto, alpha_tensor = parse_alpha(alpha)
        self.register_buffer("alpha", alpha_tensor, persistent=False)
        weight_tensor = None if weight is None else torch.as_tensor(weight, dtype=torch.float32).reshape(-1)
        if weight_tensor is not None and bool((weight_tensor < 0).any()):
            raise ValueError(f"weight: expected non-negative values, got {weight_tensor.tolist()}")
        self.register_buffer("weight", weight_tensor, persistent=False)

    def _resolve_auto_alpha(self, counts: Sequence[float] | Tensor, beta: float) -> None:
        self.alpha = alpha_from_counts(counts, self.activation, beta).to(
            self.weight.device if self.weight is not None else "cpu"
        )

    def _gamma_fn(self) -> Callable[[Tensor, Tensor | None], Tensor] | None:
        """A callable ``(log p_t, valid mask) -> gamma`` for sample-dependent gammas (subclasses), or None."""
        return None

    def class_factors(self, num_classes: int, like: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """``(alpha, weight)`` as per-class tensors for ``num_classes`` classes (validated)."""
        if self.alpha_auto and self.alpha is None:
            raise ValueError(
                "alpha='auto' is unresolved: call medfocal.losses.set_class_counts(loss, counts) "
                "before the forward"
            )
        alpha = self.alpha
        if alpha is not None:
            alpha = alpha.to(device=like.device, dtype=like.dtype)
            if self.activation == Activation.SOFTMAX and alpha.ndim == 0:
                alpha = torch.cat([(1.0 - alpha).reshape(1), alpha.expand(num_classes - 1)])
            elif alpha.ndim:
                alpha = class_vector("alpha", alpha, num_classes, like)
        weight = class_vector("weight", self.weight, num_classes, like)
        if not self.include_background:
            keep = torch.ones(num_classes, dtype=like.dtype, device=like.device)
            keep[0] = 0.0
            if self.activation == Activation.SOFTMAX:
                alpha = keep if alpha is None else alpha * keep
        return alpha, weight

    def can_fuse(self, target: Target) -> bool:
        """True when the fused softmax/class-index path (:mod:`medfocal.losses._fused`) applies."""
        return (
            self.activation == Activation.SOFTMAX
            and target.index is not None
            and self.label_smoothing == 0
            and self._gamma_fn() is None
        )

    def defers_range_check(self, x: Tensor) -> bool:
        """True when the compiled fused kernel will check the class-index range in its own pass (the
        target's separate check pass is skipped: ``normalise_target(check_range=False)``)."""
        return (
            self.activation == Activation.SOFTMAX
            and self.label_smoothing == 0
            and self._gamma_fn() is None
            and self.weight is None  # fused_inputs indexes the weights by class before the kernel runs
            and compiled.applies(x)
        )

    def fused_inputs(self, x: Tensor, target: Target) -> tuple[Tensor | None, Tensor | float]:
        """Per-class factor (alpha x weight) and the reduction's normaliser for the fused path."""
        alpha, weight = self.class_factors(x.shape[1], x)
        if self.reduction == "sum":
            return _combine(alpha, weight), 1.0
        valid = target.valid_as(x)
        weight_t = None if weight is None else weight.take(target.index)
        return _combine(alpha, weight), _normaliser(weight_t, valid, target.index.numel())

    def can_compile_sigmoid(self, x: Tensor) -> bool:
        """True when the sigmoid terms run as compiled kernels (:func:`medfocal.losses._compiled.applies`)."""
        return self.activation == Activation.SIGMOID and self._gamma_fn() is None and compiled.applies(x)

    def compiled_sigmoid(
        self, act: Activated, target: Target, focal: bool = True, region: bool = False
    ) -> tuple[Tensor | None, RegionStats | None]:
        """The reduced sigmoid focal term and the soft region statistics of every channel, compiled.

        The same formulas as :meth:`terms` and :func:`medfocal.losses.region.soft_region_stats` (a dropped
        background channel gets focal weight 0), differentiated by autograd; forward and backward are one
        pass each (:func:`medfocal.losses._compiled.sigmoid_sums`).
        """
        x = act.x_flushed
        b, c = x.shape[:2]
        alpha, weight = self.class_factors(c, act.x)
        valid = target.valid_as(act.x)
        kept = c
        if not self.include_background:
            if c == 1:
                raise ValueError("include_background=False needs C >= 2 channels, got C=1")
            keep = torch.ones(c, dtype=x.dtype, device=x.device)
            keep[0] = 0.0
            weight, kept = (keep if weight is None else weight * keep), c - 1
        q = None if valid is None else valid.reshape(b, -1)
        focal_sum, tp, sum_p, sum_y = compiled.sigmoid_sums_kernel(
            x.reshape(b, c, -1), target.dense.reshape(b, c, -1), q, alpha, weight, self.gamma, focal, region
        )
        value = None
        if focal:
            norm = float(x.numel() // c * kept) if valid is None else valid.sum() * kept
            value = reduce_loss(FocalTerms(focal_sum, norm), self.reduction)
        return value, RegionStats(tp, sum_p, sum_y) if region else None

    def terms(self, act: Activated, target: Target) -> FocalTerms:
        """Unreduced focal loss from shared log-probabilities (used by the hybrid losses)."""
        c = act.x.shape[1]
        alpha, weight = self.class_factors(c, act.x)
        valid = target.valid_as(act.x)
        if self.activation == Activation.SOFTMAX:
            if target.index is not None:
                return softmax_focal_index(
                    act.logp,
                    target.index,
                    valid,
                    self.gamma,
                    alpha,
                    weight,
                    self.label_smoothing,
                    self._gamma_fn(),
                )
            return softmax_focal_dense(
                act.logp,
                target.dense,
                valid,
                self.gamma,
                alpha,
                weight,
                self.label_smoothing,
                self._gamma_fn(),
            )
        x, y = act.x_flushed, target.dense
        if not self.include_background:
            if c == 1:
                raise ValueError("include_background=False needs C >= 2 channels, got C=1")
            x, y = x[:, 1:], y[:, 1:]
            alpha = alpha[1:] if alpha is not None and alpha.ndim else alpha
            weight = weight[1:] if weight is not None else None
        return sigmoid_focal(x, y, valid, self.gamma, alpha, weight, self._gamma_fn())

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Focal loss of ``logits`` ``(B, C, *spatial)`` against ``target`` (see the class docstring)."""
        with torch.autocast(logits.device.type, enabled=False):
            return self._forward(logits, target)

    def _forward(self, logits: Tensor, target: Tensor) -> Tensor:
        act = Activated(logits, self.activation)
        defer = self.reduction != "none" and self.defers_range_check(act.x)
        norm_target = normalise_target(act.x, target, self.activation, self.ignore_index, not defer)
        if self.reduction != "none" and self.can_fuse(norm_target):
            factor, norm = self.fused_inputs(act.x, norm_target)
            valid = norm_target.valid_as(act.x)
            return fused_softmax_index_loss(
                act.x, norm_target.index, valid, self.gamma, factor, norm, 1.0,
                check_range=norm_target.check_range,
            )  # fmt: skip
        if norm_target.check_range is not None:
            norm_target.check_range()
        if self.reduction != "none" and self.can_compile_sigmoid(act.x):
            return self.compiled_sigmoid(act, norm_target)[0]
        return reduce_loss(self.terms(act, norm_target), self.reduction)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}, gamma={self.gamma}, reduction={self.reduction!r}"
