"""DynUNet deep supervision outputs and the DeepSupervisionLoss wrapper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medfocal.nets import DeepSupervisionLoss, create_model


class CrossEntropy(nn.Module):
    """Stand-in for a medfocal loss: (B, C, *sp) logits, (B, 1, *sp) integer targets."""

    def forward(self, logits, target):
        assert target.dtype == torch.long
        return F.cross_entropy(logits, target[:, 0])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_dynunet_deep_supervision_shapes(spatial_dims):
    model = create_model(
        "dynunet", spatial_dims=spatial_dims, in_channels=1, out_channels=3, num_levels=4, base_filters=4,
        deep_supervision=True, deep_supr_num=2,
    )  # fmt: skip
    size = (16,) * spatial_dims
    x = torch.randn(2, 1, *size)
    assert model.train()(x).shape == (2, 3, 3, *size)  # (B, 1 + deep_supr_num, C, *spatial)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 3, *size)


def test_exp_weights_are_normalised_powers_of_two():
    assert DeepSupervisionLoss(CrossEntropy()).get_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert DeepSupervisionLoss(CrossEntropy(), normalize=False).get_weights(3) == [1.0, 0.5, 0.25]
    assert DeepSupervisionLoss(CrossEntropy(), weight_mode="same").get_weights(4) == [0.25] * 4
    assert DeepSupervisionLoss(CrossEntropy(), weights=[3, 1]).get_weights(2) == [0.75, 0.25]


def test_stacked_output_loss_equals_weighted_sum():
    torch.manual_seed(0)
    out = torch.randn(2, 3, 4, 8, 8)
    target = torch.randint(0, 4, (2, 1, 8, 8))
    loss = DeepSupervisionLoss(CrossEntropy())(out, target)
    ce = [F.cross_entropy(out[:, i], target[:, 0]) for i in range(3)]
    torch.testing.assert_close(loss, (4 * ce[0] + 2 * ce[1] + ce[2]) / 7)


def test_list_output_downsamples_targets_by_nearest():
    torch.manual_seed(0)
    full, half = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 4, 4)
    target = torch.randint(0, 2, (2, 1, 8, 8))
    loss = DeepSupervisionLoss(CrossEntropy())([full, half], target)
    small = F.interpolate(target.float(), size=(4, 4), mode="nearest-exact").long()
    expected = (2 * F.cross_entropy(full, target[:, 0]) + F.cross_entropy(half, small[:, 0])) / 3
    torch.testing.assert_close(loss, expected)


def test_plain_output_passes_through():
    out, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 1, 8, 8))
    torch.testing.assert_close(
        DeepSupervisionLoss(CrossEntropy())(out, target), F.cross_entropy(out, target[:, 0])
    )


def test_backward_through_dynunet():
    model = create_model(
        "dynunet",
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        num_levels=3,
        base_filters=4,
        deep_supervision=True,
    )
    loss = DeepSupervisionLoss(CrossEntropy())(
        model(torch.randn(2, 1, 16, 16)), torch.randint(0, 2, (2, 1, 16, 16))
    )
    loss.backward()
    assert all(p.grad is not None for p in model.deep_supervision_heads.parameters())


def test_errors():
    with pytest.raises(ValueError, match="weight_mode must be one of"):
        DeepSupervisionLoss(CrossEntropy(), weight_mode="linear")
    with pytest.raises(ValueError, match="got 1 weights for 2"):
        DeepSupervisionLoss(CrossEntropy(), weights=[1.0])(
            torch.randn(1, 2, 2, 4, 4), torch.zeros(1, 1, 4, 4).long()
        )
    with pytest.raises(ValueError, match="got None"):
        DeepSupervisionLoss(CrossEntropy())(None, torch.zeros(1, 1, 4, 4))
