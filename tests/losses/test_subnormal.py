"""Gradients of confident predictions hold no near-subnormal floats (they slow later CPU kernels)."""

from __future__ import annotations

import pytest
import torch

from medfocal.losses import DiceCELoss, DiceFocalLoss, FocalLoss, FocalTverskyLoss, UnifiedFocalLoss

CASES = [
    (DiceFocalLoss, "softmax"),  # fused path
    (FocalLoss, "softmax"),  # fused path
    (DiceFocalLoss, "sigmoid"),  # autograd paths below
    (FocalLoss, "sigmoid"),
    (FocalTverskyLoss, "softmax"),
    (DiceCELoss, "softmax"),
    (UnifiedFocalLoss, "softmax"),
]


@pytest.mark.parametrize("loss_cls,activation", CASES)
def test_confident_gradient_has_no_tiny_values(loss_cls, activation):
    generator = torch.Generator().manual_seed(0)
    if activation == "sigmoid":
        target = (torch.rand(2, 3, 8, 8, 4, generator=generator) > 0.7).float()
    else:
        target = torch.randint(0, 3, (2, 8, 8, 4), generator=generator)
    # widely spread logits: probabilities from ~1 down to ~1e-40, as after a few steps on imbalanced data
    logits = (torch.randn(2, 3, 8, 8, 4, generator=generator) * 20.0).requires_grad_(True)
    loss = loss_cls(activation=activation)
    loss(logits, target).backward()
    grad = logits.grad.abs()
    assert torch.isfinite(grad).all()
    assert not ((grad > 0) & (grad < 1e-30)).any()  # without the flush: dozens of such entries here
    assert (grad > 1e-6).any()
