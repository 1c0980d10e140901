"""Nets with medfocal losses (tests may import both; the packages do not import each other)."""

from __future__ import annotations

import torch

from medfocal.losses import DiceFocalLoss, FocalLoss, set_class_counts
from medfocal.nets import DeepSupervisionLoss, create_model


def test_deep_supervision_with_dice_focal_and_auto_alpha():
    torch.manual_seed(0)
    net = create_model(
        "dynunet",
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        num_levels=3,
        base_filters=4,
        deep_supervision=True,
    )
    loss = set_class_counts(DeepSupervisionLoss(DiceFocalLoss(alpha="auto")), torch.tensor([1000.0, 10.0]))
    target = torch.randint(0, 2, (2, 1, 16, 16, 16)).float()
    value = loss(net(torch.randn(2, 1, 16, 16, 16)), target)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()


def test_focal_head_starts_at_the_loss_of_the_prior():
    """With the head at the prior, the initial focal loss is the one of constant prior predictions."""
    net = create_model("resnet18", spatial_dims=2, in_channels=1, out_channels=3, widen_factor=0.125).eval()
    logits = net(torch.randn(4, 1, 32, 32))
    const = torch.log(torch.tensor([0.98, 0.01, 0.01])).expand(4, 3)
    target = torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(FocalLoss()(logits, target), FocalLoss()(const, target))
