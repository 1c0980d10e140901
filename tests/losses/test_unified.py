"""UnifiedFocalLoss: MONAI parity on its binary case (up to documented scale), multi-class, empty patches."""

from __future__ import annotations

import pytest
import torch
from _losses_ref import one_hot, rand_case
from monai.losses.unified_focal_loss import AsymmetricFocalLoss, AsymmetricFocalTverskyLoss

from medfocal.losses import UnifiedFocalLoss
from medfocal.losses._targets import normalise_target
from medfocal.losses.focal import Activated
from medfocal.losses.region import soft_region_stats


def _parts(loss, x, t):
    act = Activated(x, "softmax")
    nt = normalise_target(act.x, t, "softmax", None)
    return loss.focal_part(act, nt), loss.tversky_part(soft_region_stats(act.probs, nt.index, nt.dense))


@pytest.mark.parametrize("delta,gamma", [(0.6, 0.5), (0.7, 0.2)])
def test_binary_parts_equal_monai(seg_shape, delta, gamma):
    shape = (seg_shape[0], 2, *seg_shape[2:])
    x, t = rand_case(shape, dtype=torch.float32, scale=1.0)
    p, y = torch.softmax(x, 1), one_hot(t, 2, torch.float32)
    loss = UnifiedFocalLoss(delta=delta, gamma=gamma, smooth=1e-7)
    focal, tversky = _parts(loss, x, t)
    # MONAI's focal part averages over the 2 channels: half the per-voxel value
    monai_focal = AsymmetricFocalLoss(delta=delta, gamma=gamma, epsilon=1e-12)(p, y)
    monai_ftl = AsymmetricFocalTverskyLoss(delta=delta, gamma=gamma, epsilon=1e-7)(p, y)
    torch.testing.assert_close(focal / 2, monai_focal, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tversky, monai_ftl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss(x, t), 0.5 * focal + 0.5 * tversky)


def test_sigmoid_single_channel_equals_two_class_softmax():
    x, t = rand_case((2, 1, 5, 5), scale=2.0)
    t = (torch.rand(2, 5, 5) > 0.7).long()
    two = torch.cat([torch.zeros_like(x), x], 1)
    torch.testing.assert_close(UnifiedFocalLoss("sigmoid")(x, t), UnifiedFocalLoss()(two, t))
    torch.testing.assert_close(
        UnifiedFocalLoss("sigmoid")(x, t.unsqueeze(1).double()), UnifiedFocalLoss()(two, t)
    )


def test_multiclass_formula(seg_shape):
    x, t = rand_case(seg_shape)
    delta, gamma = 0.6, 0.5
    p = torch.softmax(x, 1)
    p_t = p.gather(1, t.unsqueeze(1)).squeeze(1)
    w = torch.where(t == 0, 1 - delta, delta)
    g = torch.where(t == 0, gamma, 0.0)
    focal = (-w * (1 - p_t) ** g * torch.log(p_t)).mean()
    y = one_hot(t, 3)
    dims = tuple(range(2, x.ndim))
    tp, fn, fp = (p * y).sum(dims), ((1 - p) * y).sum(dims), (p * (1 - y)).sum(dims)
    mti = (tp + 1e-6) / (tp + delta * fn + (1 - delta) * fp + 1e-6)
    ftl = torch.cat([1 - mti[:, :1], (1 - mti[:, 1:]) ** (1 - gamma)], 1).mean()
    torch.testing.assert_close(UnifiedFocalLoss()(x, t), 0.5 * focal + 0.5 * ftl)
    sym_ftl = ((1 - mti) ** (1 - gamma)).mean()
    sym_focal = (-w * (1 - p_t) ** gamma * torch.log(p_t)).mean()
    torch.testing.assert_close(UnifiedFocalLoss(asymmetric=False)(x, t), 0.5 * sym_focal + 0.5 * sym_ftl)


@pytest.mark.parametrize("asymmetric", [True, False])
def test_empty_foreground_and_perfect_prediction(asymmetric):
    t = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    x = torch.randn(2, 3, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    loss = UnifiedFocalLoss(asymmetric=asymmetric)
    value = loss(x, t)
    assert torch.isfinite(value) and torch.isfinite(torch.autograd.grad(value, x)[0]).all()
    perfect = (30.0 * (2 * one_hot(t, 3) - 1)).requires_grad_()
    value = loss(perfect, t)
    assert float(value.detach()) < 1e-6
    assert torch.isfinite(torch.autograd.grad(value, perfect)[0]).all()


def test_ignore_index_and_gradcheck():
    x, t = rand_case((2, 3, 2, 3), ignore=255)
    loss = UnifiedFocalLoss(ignore_index=255, batch=True)
    assert torch.autograd.gradcheck(lambda z: loss(z, t), (x,), fast_mode=True)


def test_errors():
    with pytest.raises(ValueError, match="single channel"):
        UnifiedFocalLoss("sigmoid")(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="gamma"):
        UnifiedFocalLoss(gamma=1.0)
    with pytest.raises(ValueError, match="delta"):
        UnifiedFocalLoss(delta=1.5)
