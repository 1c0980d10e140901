"""Hybrid losses: a focal (or cross-entropy) term plus a soft region term, sharing one ``log_softmax``.

``loss = lambda_focal * focal + lambda_region * region``. Both terms honour the same ``activation``,
``ignore_index``, ``include_background`` and per-class ``weight``; the target is normalised once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medfocal.losses._fused import fused_softmax_index_loss
from medfocal.losses._targets import check_choice, check_non_negative, normalise_target
from medfocal.losses.activation import Activation
from medfocal.losses.focal import Activated, FocalLoss, reduce_loss
from medfocal.losses.region import (
    RegionStats,
    dice_loss,
    focal_tversky_loss,
    jaccard_loss,
    soft_region_stats,
    tversky_loss,
)
from medfocal.losses.registry import register_loss
from medfocal.losses.weights import AlphaSpec

__all__ = ["DiceCELoss", "DiceFocalLoss", "FocalTverskyLoss", "JaccardFocalLoss", "TverskyFocalLoss"]


class _RegionFocalLoss(nn.Module):
    """Shared forward of the hybrids: subclasses only define :meth:`region_per_class`."""

    def __init__(
        self,
        activation: str,
        gamma: float,
        alpha: AlphaSpec,
        weight: Sequence[float] | Tensor | None,
        ignore_index: int | None,
        include_background: bool,
        lambda_focal: float,
        lambda_region: float,
        batch: bool,
        smooth_nr: float,
        smooth_dr: float,
        reduction: str,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, ("mean", "sum"))
        self.focal = FocalLoss(
            activation=activation,
            gamma=gamma,
            alpha=alpha,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            reduction=reduction,
            # softmax: the voxel-wise term always covers every class. Dropping class 0 there would give
            # background voxels zero loss, and nothing but the region term (which saturates on patches
            # without a class) would stop the net from calling normal tissue a lesion. MONAI's DiceCELoss
            # and nnU-Net keep all classes in the CE term too. Sigmoid: channel 0 is dropped, as MONAI.
            include_background=include_background or activation == Activation.SOFTMAX,
        )
        self.activation = self.focal.activation
        self.ignore_index = ignore_index
        self.include_background = include_background
        self.lambda_focal = check_non_negative("lambda_focal", lambda_focal)
        self.lambda_region = check_non_negative("lambda_region", lambda_region)
        self.batch = batch
        self.smooth_nr = check_non_negative("smooth_nr", smooth_nr)
        self.smooth_dr = check_non_negative("smooth_dr", smooth_dr)

    def region_per_class(self, stats: RegionStats) -> Tensor:
        raise NotImplementedError

    def region_from_stats(self, stats: RegionStats) -> Tensor:
        """Region loss reduced over (batch,) classes, with per-class weights and ``include_background``."""
        if self.batch:
            stats = stats.pooled()
        per_class = self.region_per_class(stats)
        weight = self.focal.weight
        if weight is not None:
            c = per_class.shape[-1]
            if weight.numel() != c:
                raise ValueError(f"weight: expected {c} values (one per class), got {weight.numel()}")
            per_class = per_class * weight.to(per_class)
        if not self.include_background:
            if per_class.shape[-1] == 1:
                raise ValueError("include_background=False needs C >= 2 channels, got C=1")
            per_class = per_class[..., 1:]
        return per_class.mean() if self.reduction == "mean" else per_class.sum()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``lambda_focal * focal + lambda_region * region`` for logits ``(B, C, *spatial)``."""
        with torch.autocast(logits.device.type, enabled=False):  # float32 inside, whatever autocast says
            return self._forward(logits, target)

    def _forward(self, logits: Tensor, target: Tensor) -> Tensor:
        act = Activated(logits, self.activation)
        defer = self.focal.defers_range_check(act.x)
        t = normalise_target(act.x, target, self.activation, self.ignore_index, not defer)
        if self.focal.can_fuse(t):
            factor, norm = self.focal.fused_inputs(act.x, t)
            return fused_softmax_index_loss(
                act.x, t.index, t.valid_as(act.x), self.focal.gamma, factor, norm, self.lambda_focal,
                self.region_from_stats, self.lambda_region, t.check_range,
            )  # fmt: skip
        if t.check_range is not None:
            t.check_range()
        total = act.x.new_zeros(())
        if self.focal.can_compile_sigmoid(act.x):
            focal, region = self.lambda_focal > 0, self.lambda_region > 0
            value, stats = self.focal.compiled_sigmoid(act, t, focal, region)
            if focal:
                total = total + self.lambda_focal * value
            if region:
                total = total + self.lambda_region * self.region_from_stats(stats)
            return total
        p_t = None
        if self.lambda_focal > 0:
            terms = self.focal.terms(act, t)
            total = total + self.lambda_focal * reduce_loss(terms, self.reduction)
            if terms.p_t is not None:
                p_t = terms.p_t.exp()
        if self.lambda_region > 0:
            stats = soft_region_stats(act.probs, t.index, t.dense, t.valid_as(act.x), p_t)
            total = total + self.lambda_region * self.region_from_stats(stats)
        return total


@register_loss("dice_focal")
class DiceFocalLoss(_RegionFocalLoss):
    """Focal loss plus soft Dice loss, both on the same activation.

    .. math::
        L = \\lambda_f FL + \\lambda_r \\, \\mathrm{mean}_{b,c} (1 - (2 TP + s_{nr}) / (P + Y + s_{dr}))

    with ``FL`` as :class:`FocalLoss` and ``TP, P, Y`` the soft true positives, predicted and target volumes
    per (batch, class). With ``activation="softmax"`` the focal term is the softmax focal loss (MONAI's
    ``DiceFocalLoss(softmax=True)`` uses a sigmoid focal term, MONAI issue 8242); the Dice term equals
    MONAI's ``DiceLoss(softmax=True, to_onehot_y=True)`` with the same smoothing.

    Shapes: logits ``(B, C, *spatial)``; target indices ``(B, *spatial)`` / ``(B, 1, *spatial)`` or dense
    ``(B, C, *spatial)``. Output: scalar.

    Softmax with class indices takes one fused pass (softmax once, ``p_t`` shared by the focal term and the
    soft TP, no one-hot, analytic gradient; double backward raises). On the CPU, from 2^20 logits, the
    fused pass is compiled into one loop over the voxels forward and one backward
    (:mod:`medfocal.losses._compiled`; ``MEDFOCAL_COMPILED_LOSS=off`` keeps it eager), as is the sigmoid
    variant: 5.7-12x MONAI's ``DiceFocalLoss`` with a fifth of its saved memory (``bench/losses.py``).

    Args:
        gamma: focal focusing parameter.
        alpha: focal balancing factor (see :class:`FocalLoss`), including ``"auto"``.
        activation: ``"softmax"`` or ``"sigmoid"``, used by both terms.
        weight: per-class weights: ``F.cross_entropy``-style in the focal term, multiplying each class's
            region loss (as MONAI's ``DiceLoss(weight=...)``) in the region term. Length C.
        ignore_index: target value excluded from both terms.
        include_background: if False, class 0 is left out of the region term; with ``"sigmoid"`` also
            of the focal term (channel 0 dropped, as MONAI). With ``"softmax"`` the focal term always
            covers every voxel and class, as the CE term of MONAI's ``DiceCELoss`` and of nnU-Net: a
            softmax focal term without class 0 gives background voxels zero loss, and the net then
            over-calls the foreground classes.
        lambda_focal: weight of the focal term (>= 0).
        lambda_region: weight of the region term (>= 0).
        batch: pool the region statistics over the batch before the ratio (nnU-Net's batch Dice).
        smooth_nr: added to the numerator of the region index.
        smooth_dr: added to the denominator of the region index.
        reduction: ``"mean"`` or ``"sum"`` (focal: over voxels; region: over batch x classes).

    Example:
        >>> import torch
        >>> logits, target = torch.randn(2, 3, 16, 16, 16), torch.randint(0, 3, (2, 1, 16, 16, 16))
        >>> loss = DiceFocalLoss("softmax", gamma=2.0)(logits, target)
        >>> perfect = DiceFocalLoss("softmax")(100.0 * (2 * torch.nn.functional.one_hot(target[:, 0], 3)
        ...     .movedim(-1, 1) - 1).float(), target)
        >>> bool(perfect < 1e-4 < loss)
        True

    Papers: Lin et al., ICCV 2017 (focal); Milletari et al., 3DV 2016 (V-Net Dice); Zhu et al.,
    "AnatomyNet", Medical Physics 2019 (Dice + focal).
    """

    def __init__(
        self,
        activation: str = "softmax",
        gamma: float = 2.0,
        alpha: AlphaSpec = None,
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        include_background: bool = True,
        lambda_focal: float = 1.0,
        lambda_region: float = 1.0,
        batch: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        reduction: str = "mean",
    ) -> None:
        super().__init__(
            activation, gamma, alpha, weight, ignore_index, include_background, lambda_focal, lambda_region,
            batch, smooth_nr, smooth_dr, reduction,
        )  # fmt: skip

    def region_per_class(self, stats: RegionStats) -> Tensor:
        return dice_loss(stats, self.smooth_nr, self.smooth_dr)


@register_loss("jaccard_focal")
class JaccardFocalLoss(DiceFocalLoss):
    """Focal loss plus soft Jaccard (IoU) loss: ``1 - (TP + s_nr) / (TP + FP + FN + s_dr)``.

    Same arguments as :class:`DiceFocalLoss`. MONAI's ``DiceLoss(jaccard=True)`` equals the region term
    with doubled smoothing values (it writes ``(2TP + s) / (2(TP + FP + FN) + s)``).

    Example:
        >>> import torch
        >>> logits, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
        >>> bool(JaccardFocalLoss("softmax", lambda_focal=0.0)(logits, target)
        ...      >= DiceFocalLoss("softmax", lambda_focal=0.0)(logits, target))
        True

    Papers: Lin et al., ICCV 2017; Rahman & Wang, "Optimizing Intersection-over-Union in Deep Neural
    Networks for Image Segmentation", ISVC 2016.
    """

    def region_per_class(self, stats: RegionStats) -> Tensor:
        return jaccard_loss(stats, self.smooth_nr, self.smooth_dr)


@register_loss("tversky_focal")
class TverskyFocalLoss(DiceFocalLoss):
    """Focal loss plus Tversky loss ``1 - TI``, :math:`TI = (TP + s) / (TP + \\alpha FN + \\beta FP + s)`.

    Same arguments as :class:`DiceFocalLoss` (``alpha`` is the focal alpha) plus ``tversky_alpha`` (weight of
    false negatives, default 0.7) and ``tversky_beta`` (false positives, 0.3). ``tversky_alpha =
    tversky_beta = 0.5`` gives the Dice term (up to the smoothing terms).

    Example:
        >>> import torch
        >>> logits, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
        >>> a = TverskyFocalLoss(tversky_alpha=0.5, tversky_beta=0.5)(logits, target)
        >>> torch.allclose(a, DiceFocalLoss()(logits, target))
        True

    Papers: Salehi et al., "Tversky loss function for image segmentation using 3D fully convolutional
    deep networks", MLMI 2017; Lin et al., ICCV 2017.
    """

    def __init__(
        self,
        activation: str = "softmax",
        gamma: float = 2.0,
        alpha: AlphaSpec = None,
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        include_background: bool = True,
        lambda_focal: float = 1.0,
        lambda_region: float = 1.0,
        batch: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        reduction: str = "mean",
        tversky_alpha: float = 0.7,
        tversky_beta: float = 0.3,
    ) -> None:
        super().__init__(
            activation, gamma, alpha, weight, ignore_index, include_background, lambda_focal, lambda_region,
            batch, smooth_nr, smooth_dr, reduction,
        )  # fmt: skip
        self.tversky_alpha = check_non_negative("tversky_alpha", tversky_alpha)
        self.tversky_beta = check_non_negative("tversky_beta", tversky_beta)

    def region_per_class(self, stats: RegionStats) -> Tensor:
        return tversky_loss(stats, self.tversky_alpha, self.tversky_beta, self.smooth_nr, self.smooth_dr)


@register_loss("focal_tversky")
class FocalTverskyLoss(_RegionFocalLoss):
    """Focal Tversky loss :math:`(1 - TI_c)^{\\gamma}`, optionally plus a focal term (``lambda_focal``).

    .. math:: TI_c = \\frac{TP_c + s_{nr}}{TP_c + \\alpha FN_c + \\beta FP_c + s_{dr}}, \\qquad
              L = \\lambda_r \\, \\mathrm{mean}_{b,c} (1 - TI_c)^{\\gamma} + \\lambda_f FL

    ``gamma`` is the exponent itself: 0.75 here is Abraham & Khan's gamma = 4/3 (they write
    ``(1 - TI)^{1/gamma}``). ``1 - TI`` is computed without cancellation and the fractional power is
    continued linearly below 1e-6, so loss and gradients stay finite as ``TI -> 1`` (perfect or empty
    classes) and a perfect prediction still reaches 0.
    ``alpha`` weighs false negatives (MONAI's ``TverskyLoss`` calls that weight ``beta``).

    Args:
        alpha: Tversky weight of false negatives.
        beta: Tversky weight of false positives.
        gamma: focal Tversky exponent.
        focal_gamma: gamma of the optional focal term.
        focal_alpha: alpha of the optional focal term (see :class:`FocalLoss`), including ``"auto"``.
        lambda_focal: default 0 (pure focal Tversky).
        others: as :class:`DiceFocalLoss`.

    Example:
        >>> import torch
        >>> logits, target = torch.randn(1, 2, 8, 8, 8), torch.randint(0, 2, (1, 8, 8, 8))
        >>> ftl = FocalTverskyLoss(gamma=1.0, alpha=0.5, beta=0.5)(logits, target)
        >>> torch.allclose(ftl, DiceFocalLoss(lambda_focal=0.0)(logits, target))
        True

    Paper: Abraham & Khan, "A Novel Focal Tversky Loss Function with Improved Attention U-Net for Lesion
    Segmentation", ISBI 2019.
    """

    def __init__(
        self,
        activation: str = "softmax",
        alpha: float = 0.7,
        beta: float = 0.3,
        gamma: float = 0.75,
        focal_gamma: float = 2.0,
        focal_alpha: AlphaSpec = None,
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        include_background: bool = True,
        lambda_focal: float = 0.0,
        lambda_region: float = 1.0,
        batch: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        reduction: str = "mean",
    ) -> None:
        super().__init__(
            activation, focal_gamma, focal_alpha, weight, ignore_index, include_background, lambda_focal,
            lambda_region, batch, smooth_nr, smooth_dr, reduction,
        )  # fmt: skip
        self.alpha = check_non_negative("alpha", alpha)
        self.beta = check_non_negative("beta", beta)
        self.gamma = check_non_negative("gamma", gamma)
        if self.gamma == 0:
            raise ValueError("gamma: expected a value > 0 for the focal Tversky exponent, got 0")

    def region_per_class(self, stats: RegionStats) -> Tensor:
        return focal_tversky_loss(stats, self.alpha, self.beta, self.gamma, self.smooth_nr, self.smooth_dr)


@register_loss("dice_ce")
class DiceCELoss(DiceFocalLoss):
    """Soft Dice plus cross-entropy, the nnU-Net default, with medfocal's target handling (baseline).

    .. math:: L = \\lambda_{ce} CE + \\lambda_{dice} (1 - \\mathrm{Dice})

    The CE term is ``F.cross_entropy`` (softmax; with ``weight``, ``ignore_index``, ``label_smoothing``) or
    ``F.binary_cross_entropy_with_logits`` (sigmoid), i.e. :class:`DiceFocalLoss` with ``gamma=0`` — so
    benchmarks compare focal against CE with everything else equal. nnU-Net uses ``batch=True``,
    ``include_background=False`` for the Dice term and ``smooth_nr=0, smooth_dr=1e-5``-like smoothing.

    Args:
        lambda_ce: weight of the cross-entropy term.
        lambda_dice: weight of the Dice term.
        label_smoothing: as ``F.cross_entropy`` (softmax only).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
        >>> ce_only = DiceCELoss(lambda_dice=0.0)(logits, target)
        >>> torch.allclose(ce_only, F.cross_entropy(logits, target))
        True

    Papers: Isensee et al., "nnU-Net", Nature Methods 2021; Drozdzal et al., 2016.
    """

    def __init__(
        self,
        activation: str = "softmax",
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
        include_background: bool = True,
        lambda_ce: float = 1.0,
        lambda_dice: float = 1.0,
        label_smoothing: float = 0.0,
        batch: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        reduction: str = "mean",
    ) -> None:
        _RegionFocalLoss.__init__(
            self, activation, 0.0, None, weight, ignore_index, include_background, lambda_ce, lambda_dice,
            batch, smooth_nr, smooth_dr, reduction, label_smoothing,
        )  # fmt: skip
