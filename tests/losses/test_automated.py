"""AutomatedFocalLoss: gamma = -log of the EMA of the true-class probability."""

from __future__ import annotations

import math

import torch
from _losses_ref import rand_case, softmax_focal_ref

from medfocal.losses import AutomatedFocalLoss


def _mean_p_t(x, t, ignore_index=None):
    valid = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
    tt = torch.where(valid, t, torch.zeros_like(t))
    p_t = torch.softmax(x.detach(), 1).gather(1, tt.unsqueeze(1)).squeeze(1)
    return float(p_t[valid].mean())


def test_gamma_follows_ema_and_loss_uses_it(seg_shape):
    loss = AutomatedFocalLoss(momentum=0.9, ignore_index=255)
    assert loss.gamma == 2.0  # before any training batch
    x1, t1 = rand_case(seg_shape, ignore=255)
    v1 = loss(x1, t1)
    p_hat = _mean_p_t(x1, t1, 255)
    assert math.isclose(loss.gamma, -math.log(p_hat), rel_tol=1e-6)
    torch.testing.assert_close(v1, softmax_focal_ref(x1, t1, -math.log(p_hat), ignore_index=255))
    x2, t2 = rand_case(seg_shape, ignore=255)
    loss(x2, t2)
    p_hat = 0.9 * p_hat + 0.1 * _mean_p_t(x2, t2, 255)
    assert math.isclose(loss.gamma, -math.log(p_hat), rel_tol=1e-6)


def test_eval_mode_and_no_grad_do_not_update():
    loss = AutomatedFocalLoss()
    x, t = rand_case((4, 3))
    loss(x, t)
    gamma = loss.gamma
    loss.eval()
    loss(3 * x, t)
    loss.train()
    with torch.no_grad():
        loss(3 * x, t)
    assert loss.gamma == gamma


def test_all_ignored_batch_keeps_estimate_and_is_finite():
    loss = AutomatedFocalLoss(ignore_index=255)
    x, t = rand_case((2, 3, 4, 4))
    loss(x, t)
    gamma = loss.gamma
    value = loss(x, torch.full_like(t, 255))
    assert loss.gamma == gamma and float(value.detach()) == 0.0


def test_state_is_checkpointed_and_gradcheck():
    loss = AutomatedFocalLoss("sigmoid")
    x = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(2, 3, 3) > 0.5).double()
    loss(x, y)
    fresh = AutomatedFocalLoss("sigmoid")
    fresh.load_state_dict(loss.state_dict())
    assert fresh.gamma == loss.gamma
    loss.eval()
    assert torch.autograd.gradcheck(lambda z: loss(z, y), (x,), fast_mode=True)
