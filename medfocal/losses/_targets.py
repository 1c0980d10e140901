"""Target normalisation and argument validation shared by every loss.

Every loss calls :func:`normalise_target` once per forward; the terms (focal, Dice, Jaccard, Tversky)
then read one :class:`Target` instead of re-parsing flags.

Accepted targets for logits of shape ``(B, C, *spatial)`` (``spatial`` may be empty for classification):

- class indices ``(B, *spatial)`` or ``(B, 1, *spatial)`` (MONAI convention), integer or integer-valued
  float dtype;
- dense targets of the logits' shape: one-hot, multi-label (sigmoid) or soft (probabilities per class).

``(B, 1, *spatial)`` with ``C == 1`` is a binary mask, i.e. both readings agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from medfocal.losses.activation import Activation

REDUCTIONS = ("mean", "sum", "none")


@dataclass
class Target:
    """A target in the one internal format.

    Attributes:
        index: ``(B, *spatial)`` long class indices (ignored voxels set to 0), or None for dense targets.
        dense: ``(B, C, *spatial)`` float one-hot/multi-label/soft target (ignored voxels zeroed), or None
            when ``index`` suffices (softmax with class indices: no one-hot is materialised). Exactly one
            of ``index`` and ``dense`` is set; sigmoid losses always get ``dense``.
        valid: ``(B, *spatial)`` bool mask of non-ignored voxels, or None when nothing can be ignored.
        num_classes: ``C``.
    """

    index: Tensor | None
    dense: Tensor | None
    valid: Tensor | None
    num_classes: int
    #: the class-index range check, when ``normalise_target(check_range=False)`` left it to the caller
    #: (the compiled loss kernels read the range in their own pass); raises the usual ValueError
    check_range: Callable[[], None] | None = None

    def valid_as(self, like: Tensor) -> Tensor | None:
        """``valid`` as ``like``'s float dtype, or None."""
        return None if self.valid is None else self.valid.to(like.dtype)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError naming both."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_non_negative(name: str, value: float) -> float:
    """Return ``float(value)`` if it is finite and >= 0, else raise a ValueError (NaN and inf too)."""
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite value >= 0, got {value}")
    return value


def as_float(logits: Tensor) -> Tensor:
    """Logits as float32 (float64 kept for gradcheck): fp16/bf16 autocast outputs are upcast."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def class_vector(
    name: str, value: Sequence[float] | Tensor | None, num_classes: int, like: Tensor
) -> Tensor | None:
    """Per-class values as a ``(C,)`` tensor on ``like``'s device/dtype, checking the length."""
    if value is None:
        return None
    vec = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
    if vec.numel() != num_classes:
        raise ValueError(f"{name}: expected {num_classes} values (one per class), got {vec.numel()}")
    return vec


def check_activation_channels(activation: str, logits: Tensor) -> None:
    """Raise for logits that cannot be used with ``activation``."""
    if logits.ndim < 2:
        raise ValueError(f"logits: expected shape (B, C, *spatial) or (B, C), got {tuple(logits.shape)}")
    if activation == Activation.SOFTMAX and logits.shape[1] < 2:
        raise ValueError(
            f"activation='softmax' needs C >= 2 channels, got logits of shape {tuple(logits.shape)} "
            "(use activation='sigmoid' for a single-channel binary output)"
        )


# Keys (what, shape, dtype, device) of CUDA targets whose values were checked synchronously once.
_CHECKED_ON_DEVICE: set[tuple] = set()


def check_values(what: str, target: Tensor, bad: Callable[[], Tensor], message: Callable[[], str]) -> None:
    """Raise ``ValueError(message())`` when the 0-d bool tensor ``bad()`` is True.

    CPU: checked on every call (no device sync to pay; a pass over the target). CUDA: the first target of
    each (what, shape, dtype, device) is checked synchronously with the full message; later ones with
    ``torch._assert_async`` (no host sync on the training hot path; a bad batch then stops the run with a
    device-side assert carrying no message, after the first one of its shape was reported in full).
    """
    if target.is_cuda:
        key = (what, tuple(target.shape), target.dtype, target.device)
        if key in _CHECKED_ON_DEVICE:
            torch._assert_async(bad().logical_not())
            return
    if bool(bad()):
        raise ValueError(message())
    if target.is_cuda:
        _CHECKED_ON_DEVICE.add(key)


def _check_index_values(target: Tensor) -> None:
    """Float class indices must be integers."""
    if target.is_floating_point():
        check_values(
            "integer", target, lambda: (target != target.round()).any(),
            lambda: "target: class indices must be whole numbers, got non-integer values such as "
            f"[{', '.join(f'{v:.6g}' for v in target[target != target.round()][:3].tolist())}] in a "
            f"{target.dtype} target (casting would "
            "turn 0.9 into class 0); round or threshold the labels (e.g. preprocessing.label_threshold), "
            "or pass probabilities as a one-hot/soft target of the logits' shape",
        )  # fmt: skip


def _check_index_range(index: Tensor, n_labels: int, c: int, ignore_index: int | None) -> None:
    """Every class index in ``[0, n_labels)`` (ignored voxels, already set to 0, excluded)."""

    def message() -> str:
        lo, hi = torch.stack(torch.aminmax(index)).tolist()
        hint = ""
        if hi == 255 and n_labels == 2:
            hint = " (a 0/255 mask: divide it by 255 or set preprocessing.label_threshold)"
        return (
            f"target: class indices must lie in [0, {n_labels - 1}] for logits with C={c}"
            f"{'' if ignore_index is None else f' (or equal ignore_index={ignore_index})'}, "
            f"got values in [{lo}, {hi}]{hint}"
        )

    def bad() -> Tensor:
        lo, hi = torch.aminmax(index)  # one pass for both bounds
        return (lo < 0) | (hi >= n_labels)

    check_values(f"range {n_labels}", index, bad, message)


def _check_dense_values(dense: Tensor, activation: str) -> None:
    """Dense (one-hot / multi-label / soft) targets must be probabilities in [0, 1] (NaN refused)."""

    def message() -> str:
        finite = dense[torch.isfinite(dense)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (math.nan, math.nan)
        hint = "divide it by 255 or set preprocessing.label_threshold" if hi > 1 else "clip or fix the labels"
        if hi == 255:
            hint = "a 0/255 mask: " + hint
        kind = "multi-label/binary" if activation == Activation.SIGMOID else "one-hot/soft"
        nan = ", and NaN" if bool(torch.isnan(dense).any()) else ""
        return (
            f"target: a {kind} target of the logits' shape must hold values in [0, 1] "
            f"(activation={str(activation)!r}), got values in [{lo:g}, {hi:g}]{nan}; {hint}"
        )

    check_values("dense", dense, lambda: ((dense >= 0) & (dense <= 1)).logical_not().any(), message)


def normalise_target(
    logits: Tensor, target: Tensor, activation: str, ignore_index: int | None = None, check_range: bool = True
) -> Target:
    """Bring any accepted target format into a :class:`Target`.

    Args:
        logits: ``(B, C, *spatial)`` or ``(B, C)``.
        target: class indices ``(B, *spatial)`` / ``(B, 1, *spatial)`` / ``(B,)``, or a dense target of the
            logits' shape.
        activation: ``"softmax"`` or ``"sigmoid"``; with sigmoid, class indices become a one-hot (one vs
            rest) target, or the binary mask itself when ``C == 1``.
        ignore_index: label value excluded from every term (for dense targets: voxels where any channel
            equals it).
        check_range: False leaves the class-index range check of a softmax index target to the caller, as
            :attr:`Target.check_range` (a pass over the target saved where a kernel reads the range anyway).

    Raises:
        ValueError: wrong target shape, class index out of range, non-integer float class indices, dense
            values outside [0, 1], an empty batch, C=1 with softmax.
    """
    check_activation_channels(activation, logits)
    shape = tuple(logits.shape)
    b, c, spatial = shape[0], shape[1], shape[2:]
    if logits.numel() == 0:
        raise ValueError(
            f"logits: empty batch of shape {shape}; a loss needs at least one sample and voxel "
            "(drop empty batches before the loss, e.g. drop_last=True)"
        )
    tshape = tuple(target.shape)
    if tshape == shape:
        return _dense_target(logits, target, activation, ignore_index)
    if tshape == (b, *spatial):
        index = target
    elif tshape == (b, 1, *spatial):
        index = target.reshape((b, *spatial))
    else:
        raise ValueError(
            f"target: expected class indices of shape {(b, *spatial)} or {(b, 1, *spatial)}, "
            f"or a one-hot/soft target of the logits' shape {shape}, got {tshape}"
        )
    raw = index
    index = index.long()
    valid = None
    if ignore_index is not None:
        valid = index != ignore_index
        index = index.masked_fill(~valid, 0)
    n_labels = max(c, 2)  # a single sigmoid channel takes labels 0 and 1
    _check_index_values(raw)
    if not check_range and activation == Activation.SOFTMAX:
        pending = lambda: _check_index_range(index, n_labels, c, ignore_index)  # noqa: E731
        return Target(index=index, dense=None, valid=valid, num_classes=c, check_range=pending)
    _check_index_range(index, n_labels, c, ignore_index)
    if activation == Activation.SOFTMAX:
        return Target(index=index, dense=None, valid=valid, num_classes=c)
    if c == 1:
        dense = index.unsqueeze(1).to(logits.dtype)
    else:
        dense = torch.zeros(shape, dtype=logits.dtype, device=logits.device).scatter_(
            1, index.unsqueeze(1), 1.0
        )
    if valid is not None:
        dense = dense * valid.unsqueeze(1).to(dense.dtype)
    return Target(index=None, dense=dense, valid=valid, num_classes=c)


def _dense_target(logits: Tensor, target: Tensor, activation: str, ignore_index: int | None) -> Target:
    valid = None
    dense = target.to(logits.dtype)
    if ignore_index is not None:
        valid = (target != ignore_index).all(dim=1)
        dense = dense * valid.unsqueeze(1).to(dense.dtype)
    _check_dense_values(dense, activation)
    return Target(index=None, dense=dense, valid=valid, num_classes=logits.shape[1])


def one_hot(index: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(B, *spatial)`` indices to a channel-first ``(B, C, *spatial)`` one-hot (tests and references)."""
    return F.one_hot(index.long(), num_classes).movedim(-1, 1).to(dtype)
