"""Fused softmax focal + region loss for class-index targets (the common segmentation case).

One ``softmax`` pass, one ``gather`` of ``p_t``, region statistics by ``scatter_add`` (no one-hot), and the
gradient with respect to the logits written analytically:

.. math::
    \\frac{\\partial L}{\\partial x_c} = p_c (q S_c - q r - h) + [c = t] \\, h, \\quad
    r = \\sum_k p_k S_k, \\quad h = g + q \\, p_t A_t

with ``g = dL/d log p_t`` (focal term), ``S = dL/d(sum p)`` and ``A = dL/dTP`` (region term, obtained by
autograd on the small ``(B, C)`` statistics, so every region index shares this path) and ``q`` the
non-ignored mask. The gradient is computed in the forward pass when it will be needed and stored instead
of the probabilities (same memory), so backward is one multiplication. Double backward is not supported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from medfocal.losses.region import RegionStats

# p_t below this (float32) has lost relative precision in softmax: use the exact log-sum-exp value.
_UNDERFLOW = {torch.float32: 1e-30, torch.float64: 1e-300}


def _log_p_t(x: Tensor, p_t: Tensor, idx1: Tensor) -> Tensor:
    """``log p_t`` from the softmax output, exact also where ``p_t`` underflows (logits up to ±1e4)."""
    tiny = p_t < _UNDERFLOW.get(p_t.dtype, 1e-30)
    if x.is_cuda or bool(tiny.any()):  # CPU: log(p_t) is 5x cheaper than log_softmax; check once
        exact = torch.log_softmax(x, dim=1).gather(1, idx1).squeeze(1)
        return torch.where(tiny, exact, torch.log(p_t.clamp_min(torch.finfo(p_t.dtype).tiny)))
    return torch.log(p_t)


def _pow(base: Tensor, gamma: float) -> Tensor:
    if float(gamma).is_integer():
        return base.pow(int(gamma))
    return torch.exp(gamma * torch.log(base))


class FusedSoftmaxIndexLoss(torch.autograd.Function):
    """``lambda_f * focal + lambda_r * region(stats)`` for softmax logits and class-index targets."""

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        index: Tensor,
        valid: Tensor | None,
        gamma: float,
        factor: Tensor | None,
        norm: Tensor | float,
        lambda_f: float,
        region_fn: Callable[[RegionStats], Tensor] | None,
        lambda_r: float,
        need_grad: bool,
    ) -> Tensor:
        b, c = x.shape[:2]
        p = torch.softmax(x, dim=1)
        idx1 = index.unsqueeze(1)
        p_t = p.gather(1, idx1).squeeze(1)
        logp_t = _log_p_t(x, p_t, idx1)
        total = x.new_zeros(())
        g = None
        if lambda_f > 0:
            base = (1.0 - p_t).clamp_min(torch.finfo(p_t.dtype).tiny)
            mod = _pow(base, gamma) if gamma != 0 else None
            scale = lambda_f / norm if isinstance(norm, float) else lambda_f / norm.clamp_min(1e-12)
            weight_v = None if factor is None else factor.take(index)
            if valid is not None:
                weight_v = valid if weight_v is None else weight_v * valid
            f = -logp_t if mod is None else -mod * logp_t
            if weight_v is not None:
                f = f * weight_v
            total = total + scale * f.sum()
            if need_grad:
                if mod is None:
                    g = torch.full_like(p_t, -1.0)
                else:
                    g = gamma * (mod / base) * p_t * logp_t - mod
                g = g * scale if weight_v is None else g * (weight_v * scale)
        a_t = s_bc = None
        if region_fn is not None and lambda_r > 0:
            flat_p = p.reshape(b, c, -1)
            idx = index.reshape(b, -1)
            q = None if valid is None else valid.reshape(b, -1)
            sum_p = flat_p.sum(-1) if q is None else (flat_p * q.unsqueeze(1)).sum(-1)
            pt_q = p_t.reshape(b, -1) if q is None else p_t.reshape(b, -1) * q
            zeros = x.new_zeros(b, c)
            tp = zeros.scatter_add(1, idx, pt_q)
            sum_y = zeros.scatter_add(1, idx, torch.ones_like(pt_q) if q is None else q)
            with torch.enable_grad():
                tp_, sp_ = tp.requires_grad_(), sum_p.requires_grad_()
                region = region_fn(RegionStats(tp_, sp_, sum_y))
                grads = torch.autograd.grad(region, (tp_, sp_), allow_unused=True) if need_grad else None
            total = total + lambda_r * region.detach()
            if grads is not None:
                a_bc = torch.zeros_like(tp) if grads[0] is None else grads[0] * lambda_r
                s_bc = torch.zeros_like(tp) if grads[1] is None else grads[1] * lambda_r
                a_t = a_bc.gather(1, idx).reshape(p_t.shape) * p_t
                if valid is not None:
                    a_t = a_t * valid
        if need_grad:
            h = g if a_t is None else (a_t if g is None else g + a_t)
            if h is None:
                h = torch.zeros_like(p_t)
            shape = (b, c, *([1] * (x.ndim - 2)))
            if s_bc is not None:
                r = (p * s_bc.view(shape)).sum(1)
                inner = s_bc.view(shape) - r.unsqueeze(1)
                if valid is not None:
                    inner = inner * valid.unsqueeze(1)
                dx = p * (inner - h.unsqueeze(1))
            else:
                dx = p * (-h.unsqueeze(1))
            dx.scatter_add_(1, idx1, h.unsqueeze(1))
            ctx.save_for_backward(dx)
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (dx,) = ctx.saved_tensors
        return (grad_out * dx, *([None] * 9))


def fused_softmax_index_loss(
    x: Tensor,
    index: Tensor,
    valid: Tensor | None,
    gamma: float,
    factor: Tensor | None,
    norm: Tensor | float,
    lambda_f: float,
    region_fn: Callable[[RegionStats], Tensor] | None = None,
    lambda_r: float = 0.0,
) -> Tensor:
    """Apply :class:`FusedSoftmaxIndexLoss` (gradient prepared only when autograd will ask for it)."""
    need_grad = torch.is_grad_enabled() and x.requires_grad
    return FusedSoftmaxIndexLoss.apply(
        x, index, valid, gamma, factor, norm, lambda_f, region_fn, lambda_r, need_grad
    )
