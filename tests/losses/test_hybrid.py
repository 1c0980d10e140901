"""Hybrid losses: decomposition, MONAI parity, gradients (fused and generic paths), DiceCE baseline."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _losses_ref import one_hot, rand_case, soft_dice_ref, softmax_focal_ref, torchvision_sigmoid_focal
from monai.losses import DiceCELoss as MonaiDiceCELoss
from monai.losses import DiceFocalLoss as MonaiDiceFocalLoss

from medfocal.losses import (
    DiceCELoss,
    DiceFocalLoss,
    FocalLoss,
    FocalTverskyLoss,
    JaccardFocalLoss,
    TverskyFocalLoss,
)

HYBRIDS = [DiceFocalLoss, JaccardFocalLoss, TverskyFocalLoss, FocalTverskyLoss, DiceCELoss]


@pytest.mark.parametrize("gamma", [0.0, 2.0, 0.7])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_dice_focal_is_weighted_sum_of_terms(seg_shape, gamma, ignore_index):
    x, t = rand_case(seg_shape, ignore=ignore_index)
    lf, lr = 0.3, 1.7
    loss = DiceFocalLoss(gamma=gamma, lambda_focal=lf, lambda_region=lr, ignore_index=ignore_index)(x, t)
    focal = FocalLoss(gamma=gamma, ignore_index=ignore_index)(x, t)
    dice = DiceFocalLoss(lambda_focal=0.0, ignore_index=ignore_index)(x, t)
    torch.testing.assert_close(loss, lf * focal + lr * dice)
    if ignore_index is None:
        ref = (
            lf * softmax_focal_ref(x, t, gamma)
            + lr * soft_dice_ref(torch.softmax(x, 1), one_hot(t, 3)).mean()
        )
        torch.testing.assert_close(loss, ref)


def test_dice_ce_equals_monai(seg_shape):
    x, t = rand_case(seg_shape, dtype=torch.float32)
    monai = MonaiDiceCELoss(softmax=True, to_onehot_y=True, lambda_dice=0.7, lambda_ce=1.3)(x, t.unsqueeze(1))
    torch.testing.assert_close(DiceCELoss(lambda_dice=0.7, lambda_ce=1.3)(x, t), monai)


def test_dice_ce_is_cross_entropy_plus_dice(seg_shape):
    x, t = rand_case(seg_shape, ignore=255)
    w = torch.tensor([0.2, 1.0, 3.0], dtype=x.dtype)
    loss = DiceCELoss(weight=w, ignore_index=255, label_smoothing=0.1, lambda_dice=0.0)(x, t)
    torch.testing.assert_close(loss, F.cross_entropy(x, t, weight=w, ignore_index=255, label_smoothing=0.1))


def test_sigmoid_dice_focal_equals_monai(seg_shape):
    x, _ = rand_case(seg_shape, dtype=torch.float32)
    y = (torch.rand(seg_shape) > 0.6).float()
    monai = MonaiDiceFocalLoss(sigmoid=True, gamma=2.0, alpha=0.25)(x, y)
    torch.testing.assert_close(DiceFocalLoss("sigmoid", gamma=2.0, alpha=0.25)(x, y), monai)


def test_softmax_dice_focal_differs_from_monai_sigmoid_focal_term(seg_shape):
    """MONAI issue 8242: its softmax=True still uses a sigmoid focal term; ours is softmax throughout.

    Each value is checked against its own formula: MONAI's is the sigmoid focal loss of the raw logits
    against the one-hot target, mean over voxels x channels; ours the softmax focal loss, mean over voxels.
    """
    x, t = rand_case(seg_shape, dtype=torch.float32)
    monai = MonaiDiceFocalLoss(softmax=True, to_onehot_y=True, lambda_dice=0.0)(x, t.unsqueeze(1))
    y = one_hot(t, seg_shape[1], torch.float32)
    torch.testing.assert_close(monai, torchvision_sigmoid_focal(x, y, alpha=-1, gamma=2.0, reduction="mean"))
    ours = DiceFocalLoss(lambda_region=0.0)(x, t)
    torch.testing.assert_close(ours, softmax_focal_ref(x, t, 2.0))
    assert abs(float(ours.detach()) - float(monai.detach())) > 0.05


def test_tversky_half_half_is_dice():
    x, t = rand_case((2, 3, 6, 5))
    torch.testing.assert_close(
        TverskyFocalLoss(tversky_alpha=0.5, tversky_beta=0.5, smooth_nr=0, smooth_dr=0)(x, t),
        DiceFocalLoss(smooth_nr=0, smooth_dr=0)(x, t),
    )


@pytest.mark.parametrize("cls", HYBRIDS)
@pytest.mark.parametrize("target_kind", ["index_ignore", "onehot", "sigmoid"])
def test_gradcheck(cls, target_kind):
    shape = (2, 3, 2, 3)
    x, t = rand_case(shape, ignore=255 if target_kind == "index_ignore" else None)
    kwargs = {"ignore_index": 255} if target_kind == "index_ignore" else {}
    if target_kind == "onehot":
        t = one_hot(t, 3)
    if target_kind == "sigmoid":
        kwargs["activation"] = "sigmoid"
        t = (torch.rand(shape) > 0.5).double()
    if cls is not DiceCELoss:
        kwargs["include_background"] = False
        kwargs["batch"] = True
    loss = cls(**kwargs)
    assert torch.autograd.gradcheck(lambda z: loss(z, t), (x,), fast_mode=True)


@pytest.mark.parametrize("cls", HYBRIDS)
def test_fused_equals_generic_path(cls, seg_shape):
    """Index targets take the fused path, one-hot targets the autograd path: same values and gradients."""
    x, t = rand_case(seg_shape, ignore=255)
    valid = (t != 255).unsqueeze(1)
    dense = one_hot(t.clamp_max(2), 3) * valid
    loss_ignore = cls(weight=[0.5, 1.0, 2.0], ignore_index=255)
    a = loss_ignore(x, t)
    # the dense path with ignored voxels marked by 255 in every channel
    dense_ignored = torch.where(valid, dense, torch.full_like(dense, 255.0))
    b = loss_ignore(x, dense_ignored)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0])


def test_no_grad_forward_matches():
    x, t = rand_case((2, 3, 4, 4))
    with torch.no_grad():
        a = DiceFocalLoss()(x, t)
    torch.testing.assert_close(a, DiceFocalLoss()(x, t).detach())


def test_retain_graph_twice_and_double_backward_refused():
    x, t = rand_case((2, 3, 4, 4))
    value = DiceFocalLoss()(x, t)
    (g1,) = torch.autograd.grad(value, x, retain_graph=True)
    (g2,) = torch.autograd.grad(2 * value, x, retain_graph=True)
    torch.testing.assert_close(g2, 2 * g1)
    (g,) = torch.autograd.grad(value, x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), x)


@pytest.mark.parametrize("batch", [False, True])
def test_dice_ce_without_background_equals_monai(seg_shape, batch):
    """``include_background=False`` leaves class 0 out of the Dice term only; the CE term covers every
    voxel, as MONAI's ``DiceCELoss`` (and nnU-Net) do."""
    x, t = rand_case(seg_shape)
    ours = DiceCELoss(include_background=False, batch=batch)(x, t)
    ref = MonaiDiceCELoss(softmax=True, to_onehot_y=True, include_background=False, batch=batch)(
        x, t[:, None]
    )
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("cls", [DiceFocalLoss, JaccardFocalLoss])
def test_softmax_hybrids_supervise_background_voxels(cls, seg_shape):
    """Softmax: the focal term of a hybrid without background still penalises a voxel of class 0 that is
    called foreground (otherwise nothing stops the net from over-calling lesions)."""
    x, t = rand_case(seg_shape)
    hybrid = cls(include_background=False, lambda_region=0.0, gamma=2.0)
    torch.testing.assert_close(hybrid(x, t), FocalLoss(gamma=2.0)(x, t))
    background = t == 0
    grad = torch.autograd.grad(hybrid(x, t), x)[0]
    assert grad.movedim(1, -1)[background].abs().sum() > 0
    # the sigmoid variant keeps MONAI's convention: channel 0 dropped from both terms
    xs, ys = x.detach().clone().requires_grad_(), one_hot(t, seg_shape[1])
    sig = cls(activation="sigmoid", include_background=False, lambda_region=0.0, gamma=2.0)
    torch.testing.assert_close(sig(xs, ys), FocalLoss("sigmoid", gamma=2.0, include_background=False)(xs, ys))
