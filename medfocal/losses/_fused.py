"""Fused softmax focal + region loss for class-index targets (the common segmentation case).

One ``softmax`` pass, one ``gather`` of ``p_t``, region statistics by per-class sums (no one-hot), and the
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
from torch.autograd.function import once_differentiable

from medfocal.losses import _compiled as compiled
from medfocal.losses.region import RegionStats, class_sums

# p_t below this (float32) has lost relative precision in softmax: use the exact log-sum-exp value.
_UNDERFLOW = {torch.float32: 1e-30, torch.float64: 1e-300}


def _log_p_t(x: Tensor, p_t: Tensor, idx1: Tensor) -> Tensor:
    """``log p_t`` from the softmax output, exact also where ``p_t`` underflows (logits up to ±1e4)."""
    threshold = _UNDERFLOW.get(p_t.dtype, 1e-30)
    if x.is_cuda or float(p_t.min()) < threshold:  # CPU: log(p_t) is 5x cheaper than log_softmax
        exact = torch.log_softmax(x, dim=1).gather(1, idx1).squeeze(1)
        return torch.where(p_t < threshold, exact, torch.log(p_t.clamp_min(torch.finfo(p_t.dtype).tiny)))
    return torch.log(p_t)


def _pow(base: Tensor, gamma: float) -> Tensor:
    if float(gamma).is_integer():
        return base.pow(int(gamma))
    return torch.exp(gamma * torch.log(base))


class FusedSoftmaxIndexLoss(torch.autograd.Function):
    """``lambda_f * focal + lambda_r * region(stats)`` for softmax logits and class-index targets.

    Voxel-sized temporaries are few and updated in place (on CPU each fresh multi-MB tensor costs page
    faults), and the softmax buffer itself becomes the gradient.
    """

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
        with torch.autocast(x.device.type, enabled=False):  # float32 throughout (bmm, dot under autocast)
            return FusedSoftmaxIndexLoss._forward(
                ctx, x, index, valid, gamma, factor, norm, lambda_f, region_fn, lambda_r, need_grad
            )

    @staticmethod
    def _forward(
        ctx, x, index, valid, gamma, factor, norm, lambda_f, region_fn, lambda_r, need_grad
    ) -> Tensor:
        b = x.shape[0]
        p = torch.softmax(x, dim=1)
        idx1 = index.unsqueeze(1)
        p_t = p.gather(1, idx1).squeeze(1)
        total = x.new_zeros(())
        h = None  # dL/dlog p_t, then plus the region's p_t * dL/dTP_t
        if lambda_f > 0:  # (a pure region loss, e.g. FocalTverskyLoss, needs no log p_t)
            logp_t = _log_p_t(x, p_t, idx1)
            scale = lambda_f / norm if isinstance(norm, float) else lambda_f / norm.clamp_min(1e-12)
            weight_v = None if factor is None else factor.take(index)
            if valid is not None:
                weight_v = valid if weight_v is None else weight_v * valid
            focal, h = _focal_value_and_grad(p_t, logp_t, gamma, weight_v, need_grad)
            total = total + scale * focal
            if h is not None:
                h.mul_(scale)
        s_bc = None
        if region_fn is not None and lambda_r > 0:
            idx = index.reshape(b, -1)
            region, a_bc, s_bc = region_value_and_grads(
                _index_stats(p, p_t, idx, valid), region_fn, need_grad
            )
            total = total + lambda_r * region
            if a_bc is not None:
                a_bc, s_bc = a_bc * lambda_r, s_bc * lambda_r
                a_t = a_bc.gather(1, idx).view(p_t.shape)
                if valid is not None:
                    a_t.mul_(valid)
                h = a_t.mul_(p_t) if h is None else h.addcmul_(a_t, p_t)  # h += q p_t A_t, one pass
        if need_grad:
            if h is None:
                h = torch.zeros_like(p_t)
            ctx.save_for_backward(_flush_subnormal_(_grad_logits_(p, idx1, h, s_bc, valid)))
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (dx,) = ctx.saved_tensors
        if not grad_out.is_cuda and float(grad_out) == 1.0:  # loss.backward(): skip a full-size multiply
            return (dx, *([None] * 9))
        return (grad_out * dx, *([None] * 9))


def region_value_and_grads(
    stats: RegionStats, region_fn: Callable[[RegionStats], Tensor], need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``region_fn(stats)`` and, when ``need_grad``, its derivatives w.r.t. ``TP`` and ``sum p`` (``(B, C)``).

    Autograd on the tiny statistics, so every region index (Dice, Jaccard, Tversky, ...) shares the fused
    voxel paths; an index that ignores ``TP`` or ``sum p`` gets zeros.
    """
    with torch.enable_grad():
        tp, sum_p = stats.tp.detach().requires_grad_(), stats.sum_p.detach().requires_grad_()
        region = region_fn(RegionStats(tp, sum_p, stats.sum_y))
        if not need_grad:
            return region.detach(), None, None
        grads = torch.autograd.grad(region, (tp, sum_p), allow_unused=True)
    a_bc, s_bc = (torch.zeros_like(tp) if g is None else g for g in grads)
    return region.detach(), a_bc, s_bc


# far below any gradient that can move a weight (losses are means over >= 1 voxel, lr * 1e-30 is nothing),
# and far enough above float32's smallest normal (1.2e-38) that products in the backward stay normal
_FLUSH_BELOW = 1e-30


def _flush_subnormal_(t: Tensor) -> Tensor:
    """Set tiny entries (``|t| < 1e-30``, near and below float32 subnormals) to zero, in place.

    Confident voxels give gradients like ``p_k * S_k ~ 1e-40``: float32 subnormals. They change nothing
    numerically, but every CPU kernel of the network's backward that meets them runs on a slow path
    (a 3D U-Net step measured 3.5 s instead of 0.1 s), so they are flushed where they are made.
    """
    # hardshrink is the flush in one pass (abs, compare and masked_fill were three, and 20% of the loss);
    # it keeps NaN and inf, so a broken gradient still shows
    return torch.hardshrink(t, _FLUSH_BELOW, out=t)


class _FlushTinyGrad(torch.autograd.Function):
    """Identity whose backward flushes near-subnormal gradient entries (see :func:`_flush_subnormal_`)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return torch.hardshrink(grad, _FLUSH_BELOW)


def flush_tiny_grad(x: Tensor) -> Tensor:
    """``x`` unchanged, with gradients below 1e-30 set to 0 on the way back (autograd paths of the losses)."""
    return _FlushTinyGrad.apply(x) if x.requires_grad else x


def _focal_value_and_grad(
    p_t: Tensor, logp_t: Tensor, gamma: float, weight_v: Tensor | None, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """``sum_v -w (1 - p_t)^gamma log p_t`` and its derivative w.r.t. ``log p_t`` (unscaled)."""
    if gamma == 0:
        value = -(logp_t.sum() if weight_v is None else torch.dot(weight_v.reshape(-1), logp_t.reshape(-1)))
        grad = None
        if need_grad:
            grad = torch.full_like(p_t, -1.0) if weight_v is None else weight_v.neg()
        return value, grad
    base = torch.sub(1.0, p_t).clamp_min_(torch.finfo(p_t.dtype).tiny)
    if gamma >= 1:
        # d/dlog p [-(1 - p)^g log p] = (1 - p)^(g-1) (g p log p - (1 - p)): no division, one pass fewer
        below = base if gamma == 2 else (None if gamma == 1 else _pow(base, gamma - 1))
        mod = base if below is None else below * base
    else:
        below, mod = None, _pow(base, gamma)
    weighted = mod if weight_v is None else mod * weight_v
    value = -torch.dot(weighted.reshape(-1), logp_t.reshape(-1))
    if not need_grad:
        return value, None
    if gamma >= 1:
        grad = torch.mul(p_t, logp_t).mul_(gamma).sub_(base)
        if below is not None:
            grad.mul_(below)
        return value, grad if weight_v is None else grad.mul_(weight_v)
    # gamma < 1: (1 - p)^g (g p log p / (1 - p) - 1), finite where 1 - p is clamped at tiny
    grad = torch.mul(p_t, logp_t).mul_(gamma).div_(base).sub_(1.0).mul_(weighted)
    return value, grad


def _index_stats(p: Tensor, p_t: Tensor, idx: Tensor, valid: Tensor | None) -> RegionStats:
    """TP, sum p and sum y per (batch, class) by per-class sums of ``p_t`` (no one-hot)."""
    b, c = p.shape[:2]
    flat_p = p.reshape(b, c, -1)
    pt = p_t.reshape(b, -1)
    if valid is None:
        sum_p = flat_p.sum(-1)
        ones = torch.ones((), dtype=p.dtype, device=p.device).expand_as(pt)
    else:
        q = valid.reshape(b, -1)
        sum_p = torch.bmm(flat_p, q.unsqueeze(-1)).squeeze(-1)
        pt, ones = pt * q, q
    tp, sum_y = class_sums(idx, (pt, ones), c)
    return RegionStats(tp, sum_p, sum_y)


def _grad_logits_(p: Tensor, idx1: Tensor, h: Tensor, s_bc: Tensor | None, valid: Tensor | None) -> Tensor:
    """``dL/dx_c = p_c (q S_c - q r - h) + [c = t] h`` with ``r = sum_k p_k S_k``, written into ``p``.

    For few classes a loop over channels of voxel-sized operations avoids the slow doubly broadcast
    ``(B, C, 1..) - (B, 1, *spatial)`` kernels; many classes use the vectorised form.
    """
    b, c = p.shape[:2]
    if s_bc is None:
        p.mul_(h.neg().unsqueeze(1))
    elif c <= 16:
        per_batch = (b, *([1] * (p.ndim - 2)))
        s_c = [s_bc[:, k].reshape(per_batch) for k in range(c)]
        w = p[:, 0] * s_c[0]
        for k in range(1, c):
            w.addcmul_(p[:, k], s_c[k])
        if valid is not None:
            w.mul_(valid)
        w.add_(h)  # w = q r + h
        tmp = torch.empty_like(w)
        for k in range(c):
            if valid is None:
                torch.sub(s_c[k], w, out=tmp)
            else:
                torch.mul(valid, s_c[k], out=tmp).sub_(w)
            p[:, k].mul_(tmp)
    else:
        shape = (b, c, *([1] * (p.ndim - 2)))
        r = (p * s_bc.view(shape)).sum(1, keepdim=True)
        inner = s_bc.view(shape) - r
        if valid is not None:
            inner = inner * valid.unsqueeze(1)
        p.mul_(inner - h.unsqueeze(1))
    return p.scatter_add_(1, idx1, h.unsqueeze(1))


class CompiledSoftmaxIndexLoss(torch.autograd.Function):
    """:class:`FusedSoftmaxIndexLoss` on the compiled one-pass kernels of :mod:`medfocal.losses._compiled`.

    Forward: one pass for the focal sum and the region statistics; backward: one pass for ``dL/dx``
    (recomputing the softmax from the saved logits costs less than storing and re-reading the gradient).
    """

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
        check_range: Callable[[], None] | None = None,
    ) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            b, c = x.shape[:2]
            xf, idx = x.reshape(b, c, -1), index.reshape(b, -1)
            q = None if valid is None else valid.reshape(b, -1)
            focal, region = lambda_f > 0, region_fn is not None and lambda_r > 0
            focal_sum, tp, sum_p, sum_y, lo, hi = compiled.voxel_sums_kernel(
                xf, idx, q, factor, gamma, focal, region
            )
            if check_range is not None and x.is_cuda:
                check_range()  # asynchronous after the first batch of a shape: no host sync here
            elif check_range is not None and bool((lo.min() < 0) | (hi.max() >= c)):
                check_range()  # raises the target's ValueError (out-of-range labels matched no class)
            total = x.new_zeros(())
            scale = a_bc = s_bc = None
            if focal:
                scale = lambda_f / norm if isinstance(norm, float) else lambda_f / norm.clamp_min(1e-12)
                scale = torch.as_tensor(scale, dtype=x.dtype)
                total = total + scale * focal_sum
            if region:
                value, a_bc, s_bc = region_value_and_grads(
                    RegionStats(tp, sum_p, sum_y), region_fn, need_grad
                )
                total = total + lambda_r * value
                if a_bc is not None:
                    a_bc, s_bc = a_bc * lambda_r, s_bc * lambda_r
            if need_grad:
                ctx.save_for_backward(x, index, valid, factor, scale, a_bc, s_bc)
                ctx.gamma = gamma
            return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, index, valid, factor, scale, a_bc, s_bc = ctx.saved_tensors
        b, c = x.shape[:2]
        go = grad_out.to(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            dx = compiled.grad_logits_kernel(
                x.reshape(b, c, -1), index.reshape(b, -1), None if valid is None else valid.reshape(b, -1),
                factor, ctx.gamma, None if scale is None else scale * go,
                None if a_bc is None else a_bc * go, None if s_bc is None else s_bc * go,
            )  # fmt: skip
        return (dx.view(x.shape), *([None] * 10))


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
    check_range: Callable[[], None] | None = None,
) -> Tensor:
    """``lambda_f * focal + lambda_r * region`` for softmax logits and class indices, fused.

    On the CPU (large inputs) the compiled one-pass kernels (:class:`CompiledSoftmaxIndexLoss`), else the
    eager :class:`FusedSoftmaxIndexLoss`; the gradient is prepared only when autograd will ask for it.
    ``check_range``: the target's deferred class-index check (:attr:`Target.check_range`); the compiled
    forward reads the index range in its own pass and calls it only when the range is wrong.
    """
    need_grad = torch.is_grad_enabled() and x.requires_grad
    args = (x, index, valid, gamma, factor, norm, lambda_f, region_fn, lambda_r, need_grad)
    if compiled.applies(x):
        return CompiledSoftmaxIndexLoss.apply(*args, check_range)
    if check_range is not None:
        check_range()
    return FusedSoftmaxIndexLoss.apply(*args)
