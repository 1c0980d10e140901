"""Reference formulas written out directly (no medfocal code), used by the loss tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rand_case(shape, dtype=torch.float64, ignore: int | None = None, scale: float = 2.0):
    """Logits of ``shape`` (requires_grad) and class indices ``(B, *spatial)``, some set to ``ignore``."""
    b, c, *spatial = shape
    x = (scale * torch.randn(shape, dtype=dtype)).requires_grad_()
    t = torch.randint(0, c, (b, *spatial))
    if ignore is not None:
        t.view(-1)[::3] = ignore
    return x, t


def one_hot(t: torch.Tensor, c: int, dtype=torch.float64) -> torch.Tensor:
    return F.one_hot(t, c).movedim(-1, 1).to(dtype)


def softmax_focal_ref(x, t, gamma, alpha=None, ignore_index=None):
    """-alpha_t (1 - p_t)^gamma log p_t, mean over non-ignored voxels."""
    valid = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
    tt = torch.where(valid, t, torch.zeros_like(t))
    p = torch.softmax(x, 1)
    p_t = p.gather(1, tt.unsqueeze(1)).squeeze(1)
    loss = -((1 - p_t) ** gamma) * torch.log(p_t)
    if alpha is not None:
        loss = loss * torch.as_tensor(alpha, dtype=x.dtype)[tt]
    return (loss * valid).sum() / valid.sum()


def torchvision_sigmoid_focal(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """``torchvision.ops.sigmoid_focal_loss`` (v0.18), copied here since torchvision is not installed."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


def soft_dice_ref(p, y, smooth=1e-5, dims=None):
    """1 - (2 sum(p y) + s) / (sum p + sum y + s) per (b, c)."""
    dims = dims if dims is not None else tuple(range(2, p.ndim))
    inter = (p * y).sum(dims)
    return 1 - (2 * inter + smooth) / (p.sum(dims) + y.sum(dims) + smooth)
