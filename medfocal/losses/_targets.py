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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = ("softmax", "sigmoid")
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

    def valid_as(self, like: Tensor) -> Tensor | None:
        """``valid`` as ``like``'s float dtype, or None."""
        return None if self.valid is None else self.valid.to(like.dtype)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError naming both."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_non_negative(name: str, value: float) -> float:
    """Return ``float(value)`` if it is >= 0, else raise a ValueError."""
    if value < 0:
        raise ValueError(f"{name}: expected a value >= 0, got {value}")
    return float(value)


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
    if activation == "softmax" and logits.shape[1] < 2:
        raise ValueError(
            f"activation='softmax' needs C >= 2 channels, got logits of shape {tuple(logits.shape)} "
            "(use activation='sigmoid' for a single-channel binary output)"
        )


def normalise_target(
    logits: Tensor, target: Tensor, activation: str, ignore_index: int | None = None
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

    Raises:
        ValueError: wrong target shape, class index out of range, C=1 with softmax.
    """
    check_activation_channels(activation, logits)
    shape = tuple(logits.shape)
    b, c, spatial = shape[0], shape[1], shape[2:]
    tshape = tuple(target.shape)
    if tshape == shape:
        return _dense_target(logits, target, ignore_index)
    if tshape == (b, *spatial):
        index = target
    elif tshape == (b, 1, *spatial):
        index = target.reshape((b, *spatial))
    else:
        raise ValueError(
            f"target: expected class indices of shape {(b, *spatial)} or {(b, 1, *spatial)}, "
            f"or a one-hot/soft target of the logits' shape {shape}, got {tshape}"
        )
    index = index.long()
    valid = None
    if ignore_index is not None:
        valid = index != ignore_index
        index = index.masked_fill(~valid, 0)
    n_labels = max(c, 2)  # a single sigmoid channel takes labels 0 and 1
    if index.numel():
        lo, hi = torch.stack(torch.aminmax(index)).tolist()  # one device sync for both bounds
        if lo < 0 or hi >= n_labels:
            raise ValueError(
                f"target: class indices must lie in [0, {n_labels - 1}] for logits with C={c}"
                f"{'' if ignore_index is None else f' (or equal ignore_index={ignore_index})'}, "
                f"got values in [{lo}, {hi}]"
            )
    if activation == "softmax":
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


def _dense_target(logits: Tensor, target: Tensor, ignore_index: int | None) -> Target:
    valid = None
    dense = target.to(logits.dtype)
    if ignore_index is not None:
        valid = (target != ignore_index).all(dim=1)
        dense = dense * valid.unsqueeze(1).to(dense.dtype)
    return Target(index=None, dense=dense, valid=valid, num_classes=logits.shape[1])


def one_hot(index: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(B, *spatial)`` indices to a channel-first ``(B, C, *spatial)`` one-hot (tests and references)."""
    return F.one_hot(index.long(), num_classes).movedim(-1, 1).to(dtype)
