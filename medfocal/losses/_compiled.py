"""Compiled per-voxel kernels of the fused softmax focal + region loss (``torch.compile``, CPU).

The eager fused path (:mod:`medfocal.losses._fused`) still makes a dozen passes over voxel-sized tensors
(softmax, gather, log, pow, per-class sums, the gradient); on a CPU that is arithmetic and memory traffic
that a compiler can fuse. Here the per-voxel work is written as two pure functions of the logits that
inductor turns into one C++/OpenMP loop nest each:

- forward (:func:`voxel_sums`): one pass over ``x (B, C, N)`` and the class indices gives the focal sum
  ``sum_v -w_v (1 - p_t)^gamma log p_t``, the region statistics ``TP``, ``sum p``, ``sum y`` per
  (batch, class) and the range of the class indices (the label check, without a pass of its own);
- backward (:func:`grad_logits`): one pass gives

  .. math::
      \\frac{\\partial L}{\\partial x_c} = p_c (q S_c - q r - h) + [c = t] \\, h, \\quad
      r = \\sum_k p_k S_k, \\quad h = s_f \\, w \\, \\frac{\\partial FL}{\\partial \\log p_t} + q \\, p_t A_t

  from the ``(B, C)`` derivatives ``S = dL/d(sum p)`` and ``A = dL/dTP`` of the region term (autograd on
  the tiny statistics, so every region index shares this path), with entries below 1e-30 flushed to 0.

The sigmoid terms (:func:`sigmoid_sums`: focal sum and region statistics of one-vs-rest channels) are
elementwise; there autograd differentiates the compiled formulas and inductor fuses forward and backward
into one pass each.

The softmax over classes is unrolled (``C <= MAX_CLASSES``), so no ``(B, C, N)`` intermediate is stored;
``N`` is compiled as a dynamic size, so one compilation serves every patch or volume size of a given batch
size and class count. ``log p_t = x_t - max - log sum exp`` is exact for logits up to ±1e4.

When it runs: CPU tensors of at least ``MIN_NUMEL`` logits (smaller ones are not worth a compilation),
float32/float64, outside an enclosing ``torch.compile``. ``MEDFOCAL_COMPILED_LOSS`` (environment) or
:func:`set_mode` choose ``"auto"`` (default), ``"always"`` (any size: tests) or ``"off"``.
``MEDFOCAL_COMPILED_LOSS_DEVICES`` (or :func:`set_devices`) lists the device types, ``cpu`` by default;
``cpu,cuda`` lets inductor fuse the same kernels for a GPU (Triton), an opt-in until a GPU run measures
it (``bench/losses.py --device cuda --compiled-devices cpu,cuda``); there the class-index check stays
asynchronous (:func:`medfocal.losses._targets.check_values`), with no host sync in the forward. The first call
of each (batch, classes, dtype, options) compiles (seconds; inductor's on-disk cache makes later processes
quicker). If compilation fails (no C++ compiler, an unsupported platform), the kernel's result comes
from the same function run eagerly, a warning says so once, and later calls take the eager fused path.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

MODES = ("auto", "always", "off")
ENV = "MEDFOCAL_COMPILED_LOSS"
#: logits below this many elements stay on the eager path in "auto" mode: a compilation costs seconds
#: (10-30 s in a fresh process without inductor's cache, 1-3 s with it), which the ~7 ms saved per step
#: at 2^20 logits repays within a few hundred steps; small test tensors never compile
MIN_NUMEL = 1 << 20
#: the softmax is unrolled over classes; more classes take the eager fused path
MAX_CLASSES = 16
#: compiled variants kept per kernel (batch size, classes, dtype, gamma, options); more run eagerly
_RECOMPILE_LIMIT = 32
_FLUSH_BELOW = 1e-30  # as medfocal.losses._fused: float32 subnormals slow every later CPU kernel

DEVICES_ENV = "MEDFOCAL_COMPILED_LOSS_DEVICES"
_KNOWN_DEVICES = ("cpu", "cuda")

_state: dict = {"mode": None, "broken": None, "devices": None}


def set_mode(mode: str | None) -> None:
    """Use the compiled kernels ``"auto"`` (CPU, large inputs), ``"always"`` or ``"off"``; None: from env."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"compiled loss mode: expected one of {MODES}, got {mode!r}")
    _state["mode"] = mode


def mode() -> str:
    """The mode in force: :func:`set_mode`'s, else ``$MEDFOCAL_COMPILED_LOSS``, else ``"auto"``."""
    chosen = _state["mode"] or os.environ.get(ENV, "auto").strip().lower() or "auto"
    if chosen not in MODES:
        raise ValueError(f"{ENV}: expected one of {MODES}, got {chosen!r}")
    return chosen


def set_devices(device_types: tuple[str, ...] | list[str] | None) -> None:
    """Device types the compiled kernels run on (``("cpu",)``, ``("cpu", "cuda")``); None: from env."""
    if device_types is not None:
        _check_devices(tuple(device_types), "compiled loss devices")
    _state["devices"] = None if device_types is None else tuple(device_types)


def devices() -> tuple[str, ...]:
    """The device types in force: :func:`set_devices`'s, else ``$MEDFOCAL_COMPILED_LOSS_DEVICES``, else
    ``("cpu",)``."""
    if _state["devices"] is not None:
        return _state["devices"]
    chosen = tuple(d.strip().lower() for d in os.environ.get(DEVICES_ENV, "cpu").split(",") if d.strip())
    return _check_devices(chosen or ("cpu",), DEVICES_ENV)


def _check_devices(chosen: tuple[str, ...], what: str) -> tuple[str, ...]:
    unknown = [d for d in chosen if d not in _KNOWN_DEVICES]
    if unknown:
        raise ValueError(f"{what}: expected device types among {_KNOWN_DEVICES}, got {unknown}")
    return chosen


def applies(x: Tensor) -> bool:
    """True when the fused loss of logits ``x`` should run the compiled kernels."""
    chosen = mode()
    return (
        chosen != "off"
        and _state["broken"] is None
        and x.device.type in devices()
        and x.dtype in (torch.float32, torch.float64)
        and 2 <= x.shape[1] <= MAX_CLASSES
        and (chosen == "always" or x.numel() >= MIN_NUMEL)
        and not torch.compiler.is_compiling()
    )


def _softmax_terms(x: Tensor, idx: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    """Per-class probabilities ``p_k (B, N)``, label masks, ``log p_t`` and ``p_t``, unrolled over classes."""
    c = x.shape[1]
    xs = [x[:, k] for k in range(c)]
    top = xs[0]
    for k in range(1, c):
        top = torch.maximum(top, xs[k])
    es = [torch.exp(xk - top) for xk in xs]
    total = es[0]
    for k in range(1, c):
        total = total + es[k]
    inv = 1.0 / total
    ps = [e * inv for e in es]
    hit = [idx == k for k in range(c)]
    x_t, p_t = xs[0], ps[0]  # class indices were checked to lie in [0, C)
    for k in range(1, c):
        x_t = torch.where(hit[k], xs[k], x_t)
        p_t = torch.where(hit[k], ps[k], p_t)
    return ps, hit, x_t - top - torch.log(total), p_t


def _per_class(hit: list[Tensor], values: Tensor) -> Tensor:
    """``values[c]`` at each voxel's class ``c`` (``values``: ``(C,)`` or ``(B, C)``), as ``(1|B, N)``."""
    col = (lambda k: values[k]) if values.ndim == 1 else (lambda k: values[:, k : k + 1])
    out = col(0)
    for k in range(1, len(hit)):
        out = torch.where(hit[k], col(k), out)
    return out if values.ndim == 2 else out.expand_as(hit[0])


def _voxel_weight(hit: list[Tensor], valid: Tensor | None, factor: Tensor | None) -> Tensor | None:
    if factor is None:
        return valid
    w = _per_class(hit, factor)
    return w if valid is None else w * valid


def _one_minus(logp_t: Tensor) -> Tensor:
    """``1 - p_t`` without cancellation, clamped at the smallest normal (finite fractional powers)."""
    return (-torch.expm1(logp_t)).clamp_min(torch.finfo(logp_t.dtype).tiny)


def _power(base: Tensor, gamma: float) -> Tensor:
    return base ** int(gamma) if float(gamma).is_integer() else torch.pow(base, gamma)


def voxel_sums(
    x: Tensor,
    idx: Tensor,
    valid: Tensor | None,
    factor: Tensor | None,
    gamma: float,
    focal: bool,
    region: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, Tensor, Tensor]:
    """Focal sum, ``(TP, sum p, sum y)`` per (batch, class) and the index range: one pass over ``x``.

    ``idx``: ``(B, N)`` class indices; ``valid``: ``(B, N)`` mask or None; ``factor``: ``(C,)`` per-class
    focal weight (alpha x weight) or None. Unrequested parts come back as None; the last two outputs are
    the smallest and largest index of each batch element (an index outside ``[0, C)`` matches no class
    here, so the caller checks them instead of a separate pass over the target).
    """
    ps, hit, logp_t, _ = _softmax_terms(x, idx)
    focal_sum = tp = sum_p = sum_y = None
    if focal:
        term = logp_t if gamma == 0 else _power(_one_minus(logp_t), gamma) * logp_t
        w = _voxel_weight(hit, valid, factor)
        # per batch first: every reduction then has the (B, N) -> (B,) shape and inductor fuses them all
        focal_sum = -(term if w is None else term * w).sum(-1).sum()
    if region:
        pq = ps if valid is None else [pk * valid for pk in ps]
        ones = torch.ones((), dtype=x.dtype, device=x.device) if valid is None else valid
        sum_p = torch.stack([pk.sum(-1) for pk in pq], 1)
        tp = torch.stack([torch.where(h, pk, 0).sum(-1) for h, pk in zip(hit, pq)], 1)
        sum_y = torch.stack([torch.where(h, ones, 0).sum(-1) for h in hit], 1)
    return focal_sum, tp, sum_p, sum_y, idx.amin(-1), idx.amax(-1)


def _focal_grad(logp_t: Tensor, p_t: Tensor, gamma: float) -> Tensor:
    """``d/d log p_t`` of ``-(1 - p_t)^gamma log p_t``."""
    if gamma == 0:
        return torch.full_like(logp_t, -1.0)
    base = _one_minus(logp_t)
    if gamma >= 1:  # (1 - p)^(g-1) (g p log p - (1 - p)): no division
        inner = gamma * p_t * logp_t - base
        return inner if gamma == 1 else _power(base, gamma - 1) * inner
    return _power(base, gamma) * (gamma * p_t * logp_t / base - 1.0)


def grad_logits(
    x: Tensor,
    idx: Tensor,
    valid: Tensor | None,
    factor: Tensor | None,
    gamma: float,
    focal_scale: Tensor | None,
    a_bc: Tensor | None,
    s_bc: Tensor | None,
) -> Tensor:
    """``dL/dx`` of ``focal_scale * focal + region`` for ``x (B, C, N)``, one pass (see module docstring).

    ``focal_scale``: 0-d (None: no focal term); ``a_bc``, ``s_bc``: ``(B, C)`` region derivatives (None:
    no region term). Entries below 1e-30 in magnitude are returned as 0.
    """
    ps, hit, logp_t, p_t = _softmax_terms(x, idx)
    h = None
    if focal_scale is not None:
        w = _voxel_weight(hit, valid, factor)
        g = _focal_grad(logp_t, p_t, gamma) * focal_scale
        h = g if w is None else g * w
    if a_bc is not None:
        pa = p_t * _per_class(hit, a_bc)
        pa = pa if valid is None else pa * valid
        h = pa if h is None else h + pa
    if h is None:
        h = torch.zeros_like(logp_t)
    if s_bc is not None:
        r = ps[0] * s_bc[:, 0:1]
        for k in range(1, len(ps)):
            r = r + ps[k] * s_bc[:, k : k + 1]
    outs = []
    for k, (pk, hk) in enumerate(zip(ps, hit)):
        if s_bc is None:
            inner = -h
        else:
            inner = s_bc[:, k : k + 1] - r
            inner = (inner if valid is None else inner * valid) - h
        d = pk * inner + torch.where(hk, h, 0)
        outs.append(torch.where(d.abs() < _FLUSH_BELOW, 0, d))
    return torch.stack(outs, 1)


def sigmoid_sums(
    x: Tensor,
    y: Tensor,
    valid: Tensor | None,
    alpha: Tensor | None,
    weight: Tensor | None,
    gamma: float,
    focal: bool,
    region: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """Sigmoid focal sum and ``(TP, sum p, sum y)`` per (batch, channel) for ``x, y (B, C, N)``.

    The formulas of :func:`medfocal.losses.focal.sigmoid_focal` and
    :func:`medfocal.losses.region.soft_region_stats`, differentiated by autograd: compiled, the forward
    and the backward are one elementwise pass each. ``alpha``: 0-d or ``(C,)``; ``weight``: ``(C,)``
    (0 for a dropped background channel); ``valid``: ``(B, N)``; ``y`` zero where not valid.
    """
    q = None if valid is None else valid.unsqueeze(1)
    focal_sum = tp = sum_p = sum_y = None
    if focal:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
        if gamma != 0:
            one_minus_pt = y * torch.sigmoid(-x) + (1.0 - y) * torch.sigmoid(x)
            loss = one_minus_pt.clamp_min(torch.finfo(x.dtype).tiny).pow(gamma) * loss
        if alpha is not None:
            a = alpha.view(1, -1, 1) if alpha.ndim else alpha
            loss = loss * (a * y + (1.0 - a) * (1.0 - y))
        if weight is not None:
            loss = loss * weight.view(1, -1, 1)
        if q is not None:
            loss = loss * q
        focal_sum = loss.sum(-1).sum()
    if region:
        p = torch.sigmoid(x)
        sum_p = (p if q is None else p * q).sum(-1)
        tp, sum_y = (p * y).sum(-1), y.sum(-1)
    return focal_sum, tp, sum_p, sum_y


class _Kernel:
    """A function run through ``torch.compile`` (dynamic voxel count), falling back to eager on failure.

    ``dynamic``: ``(argument position, dimension)`` pairs of the voxel axis, compiled as a dynamic size.
    """

    def __init__(self, fn: Callable, dynamic: tuple[tuple[int, int], ...] = ((0, 2), (1, 1), (2, 1))) -> None:
        self.fn = fn
        self.dynamic = dynamic
        self.compiled: Callable | None = None

    def __call__(self, *args):
        if _state["broken"] is not None:
            return self.fn(*args)
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, fullgraph=True, dynamic=False)
        for position, dim in self.dynamic:
            if args[position] is not None:
                torch._dynamo.maybe_mark_dynamic(args[position], dim)
        try:
            with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT):
                return self.compiled(*args)
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            return self.fn(*args)  # too many variants: this one runs eagerly
        except Exception as err:  # the eager run below tells a bad input from a bad compiler
            out = self.fn(*args)  # raises the real error if the inputs are at fault
            _disable(err)
            return out


def _disable(err: Exception) -> None:
    first = (str(err).strip().splitlines() or [""])[0][:200]
    _state["broken"] = f"{type(err).__name__}: {first}"
    warnings.warn(
        f"medfocal: compiling the fused loss kernel failed ({_state['broken']}); the loss runs on its eager "
        f"path from now on (same results, slower on the CPU). Set {ENV}=off to skip the attempt.",
        RuntimeWarning,
        stacklevel=3,
    )


def reset() -> None:
    """Forget a failed compilation (tests), so the next call tries again."""
    _state["broken"] = None


voxel_sums_kernel = _Kernel(voxel_sums)
grad_logits_kernel = _Kernel(grad_logits)
sigmoid_sums_kernel = _Kernel(sigmoid_sums, dynamic=((0, 2), (1, 2), (2, 1)))
