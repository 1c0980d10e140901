"""Class weights: class-balanced alpha (effective number of samples) and ``alpha="auto"`` resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medfocal.losses.activation import Activation

__all__ = ["class_balanced_alpha", "set_class_counts"]

AlphaSpec = float | Sequence[float] | Tensor | str | None


def class_balanced_alpha(counts: Sequence[float] | Tensor, beta: float = 0.999) -> Tensor:
    """Class-balanced weights from per-class voxel or sample counts (effective number of samples).

    .. math::
        E_c = \\frac{1 - \\beta^{n_c}}{1 - \\beta}, \\qquad
        \\alpha_c = C \\, \\frac{1 / E_c}{\\sum_k 1 / E_k}

    so the weights sum to ``C`` (Cui et al.'s normalisation). ``beta=0`` gives equal weights, ``beta -> 1``
    inverse-frequency weights. A class with zero count is treated as having one sample.

    Args:
        counts: ``(C,)`` non-negative per-class counts (e.g. ``datamodule.class_counts()``).
        beta: in ``[0, 1)``.

    Returns:
        ``(C,)`` float32 tensor.

    Raises:
        ValueError: ``beta`` outside ``[0, 1)``, counts not 1-D, empty or negative.

    Example:
        >>> w = class_balanced_alpha([9000.0, 100.0], beta=0.999)
        >>> bool(w[1] > w[0]) and abs(float(w.sum()) - 2.0) < 1e-5
        True

    Paper: Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta: expected a value in [0, 1), got {beta}")
    n = torch.as_tensor(counts, dtype=torch.float64).detach().cpu()
    if n.ndim != 1 or n.numel() == 0:
        raise ValueError(
            f"counts: expected a non-empty 1-D tensor (one count per class), got shape {tuple(n.shape)}"
        )
    if bool((n < 0).any()):
        raise ValueError(f"counts: expected non-negative values, got {n.tolist()}")
    n = n.clamp_min(1.0)
    if beta == 0.0:
        effective = torch.ones_like(n)
    else:
        # 1 - beta**n as -expm1(n * log(beta)) keeps precision for beta close to 1.
        effective = -torch.expm1(n * torch.log(torch.tensor(beta, dtype=torch.float64))) / (1.0 - beta)
    inv = 1.0 / effective
    return (inv / inv.sum() * n.numel()).float()


def parse_alpha(alpha: AlphaSpec) -> tuple[bool, Tensor | None]:
    """Split an ``alpha`` argument into (is_auto, tensor or None), validating the values."""
    if isinstance(alpha, str) and alpha.strip().lower() in ("none", "null"):
        # `--model.init_args.loss.init_args.alpha=null` reaches a nested loss as the string 'None' through
        # LightningCLI (the `str` member of AlphaSpec); on a command line it can only mean no alpha
        alpha = None
    if isinstance(alpha, str):
        if alpha != "auto":
            raise ValueError(f"alpha: expected None, a number, a per-class sequence or 'auto', got {alpha!r}")
        return True, None
    if alpha is None:
        return False, None
    tensor = torch.as_tensor(alpha, dtype=torch.float32).detach().clone()
    if tensor.ndim > 1:
        raise ValueError(
            f"alpha: expected a scalar or a 1-D per-class sequence, got shape {tuple(tensor.shape)}"
        )
    if bool((tensor < 0).any()):
        raise ValueError(f"alpha: expected non-negative values, got {tensor.tolist()}")
    return False, tensor


def alpha_from_counts(counts: Sequence[float] | Tensor, activation: str, beta: float = 0.999) -> Tensor:
    """The alpha that ``"auto"`` resolves to for a loss with the given activation.

    softmax: the per-class :func:`class_balanced_alpha`. sigmoid (binary): ``counts`` must be
    ``(negatives, positives)``; alpha is the positives' share of the two class-balanced weights, in (0, 1).
    """
    weights = class_balanced_alpha(counts, beta)
    if activation == Activation.SOFTMAX:
        return weights
    if weights.numel() != 2:
        raise ValueError(
            "alpha='auto' with activation='sigmoid' needs counts of (negatives, positives), "
            f"got {weights.numel()} counts"
        )
    return weights[1] / weights.sum()


def set_class_counts(loss: nn.Module, counts: Sequence[float] | Tensor, beta: float = 0.999) -> nn.Module:
    """Resolve every ``alpha="auto"`` in ``loss`` (and its sub-losses) from per-class counts.

    Args:
        loss: any medfocal loss (or a module containing some).
        counts: ``(C,)`` per-class voxel/sample counts of the training split.
        beta: effective-number parameter of :func:`class_balanced_alpha`.

    Returns:
        ``loss`` itself, for chaining.

    Example:
        >>> from medfocal.losses import DiceFocalLoss
        >>> loss = set_class_counts(DiceFocalLoss(alpha="auto"), torch.tensor([9000.0, 100.0]))
        >>> loss.focal.alpha.shape
        torch.Size([2])
    """
    for module in loss.modules():
        resolve = getattr(module, "_resolve_auto_alpha", None)
        if resolve is not None and getattr(module, "alpha_auto", False):
            resolve(counts, beta)
    return loss
