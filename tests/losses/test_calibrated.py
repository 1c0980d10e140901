"""FLSD-53 and AdaFocal: gamma values against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from _losses_ref import rand_case

from medfocal.losses import AdaFocalLoss, FLSD53FocalLoss


def _focal_with_gamma(x, t, gamma_fn):
    p = torch.softmax(x, 1)
    p_t = p.gather(1, t.unsqueeze(1)).squeeze(1)
    return (-((1 - p_t) ** gamma_fn(p_t.detach())) * torch.log(p_t)).mean()


def test_flsd53_gamma_values(seg_shape):
    loss = FLSD53FocalLoss()
    p = torch.tensor([0.01, 0.1999, 0.2, 0.5, 1.0], dtype=torch.float64)
    assert loss.gamma_for(p.log()).tolist() == [5.0, 5.0, 3.0, 3.0, 3.0]
    x, t = rand_case(seg_shape)
    ref = _focal_with_gamma(x, t, lambda p_t: torch.where(p_t < 0.2, 5.0, 3.0).double())
    value = loss(x, t)
    torch.testing.assert_close(value, ref)
    # gamma is not differentiated: the gradient equals that of a focal loss with gamma frozen per voxel
    torch.testing.assert_close(torch.autograd.grad(value, x)[0], torch.autograd.grad(ref, x)[0])


def test_adafocal_bins_and_update_rule():
    loss = AdaFocalLoss(n_bins=4, gamma_init=1.0, lam=2.0, gamma_max=5.0)
    assert loss.bin_index(torch.tensor([0.0, 0.24, 0.25, 0.99, 1.0])).tolist() == [0, 0, 1, 3, 3]
    conf = torch.tensor([0.2, 0.4, float("nan"), 0.9])
    acc = torch.tensor([0.1, 0.5, 0.5, 0.0])
    loss.update_from_calibration(conf, acc)
    expected = [math.exp(2 * 0.1), math.exp(2 * -0.1), 1.0, min(math.exp(2 * 0.9), 5.0)]
    torch.testing.assert_close(loss.gammas, torch.tensor(expected))
    assert "gammas" in loss.state_dict()


def test_adafocal_loss_uses_bin_gamma(seg_shape):
    loss = AdaFocalLoss(n_bins=5)
    loss.gammas.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    x, t = rand_case(seg_shape)
    ref = _focal_with_gamma(x, t, lambda p_t: (p_t * 5).long().clamp(0, 4).double())
    torch.testing.assert_close(loss(x, t), ref)


def test_adafocal_negative_gamma_is_inverse_focal():
    loss = AdaFocalLoss(n_bins=1, gamma_init=-1.5, gamma_min=-2.0)
    x, t = rand_case((5, 3))
    p_t = torch.softmax(x, 1).gather(1, t.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(loss(x, t), (-((1 + p_t) ** 1.5) * torch.log(p_t)).mean())


def test_adafocal_errors_and_gradcheck():
    loss = AdaFocalLoss(n_bins=3)
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        loss.update_from_calibration(torch.zeros(4), torch.zeros(4))
    x, t = rand_case((2, 3, 2, 2), ignore=255)
    for module in (AdaFocalLoss(ignore_index=255), FLSD53FocalLoss(ignore_index=255, label_smoothing=0.1)):
        assert torch.autograd.gradcheck(lambda z, m=module: m(z, t), (x,), fast_mode=True)
