"""FocalLoss: equalities with PyTorch / torchvision-convention / MONAI, formula references, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _losses_ref import one_hot, rand_case, softmax_focal_ref, torchvision_sigmoid_focal
from monai.losses import FocalLoss as MonaiFocalLoss

from medfocal.losses import FocalLoss
from medfocal.losses._targets import normalise_target
from medfocal.losses.focal import Activated, softmax_focal_index


@pytest.mark.parametrize("ignore_index", [None, -100, 255])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("use_weight", [False, True])
def test_gamma0_equals_cross_entropy(any_shape, ignore_index, label_smoothing, use_weight):
    x, t = rand_case(any_shape, ignore=ignore_index)
    c = any_shape[1]
    weight = torch.tensor([0.3, 1.0, 2.5], dtype=x.dtype) if use_weight else None
    ce = F.cross_entropy(
        x, t, weight=weight, ignore_index=-100 if ignore_index is None else ignore_index,
        label_smoothing=label_smoothing,
    )  # fmt: skip
    loss = FocalLoss(
        "softmax", gamma=0.0, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
    torch.testing.assert_close(loss(x, t), ce)
    if ignore_index is None:  # one-hot targets and the (B, 1, *spatial) layout give the same value
        torch.testing.assert_close(loss(x, one_hot(t, c)), ce)
        if x.ndim > 2:
            torch.testing.assert_close(loss(x, t.unsqueeze(1).double()), ce)


def test_gamma0_gradient_equals_cross_entropy(seg_shape):
    x, t = rand_case(seg_shape, ignore=255)
    g_ours = torch.autograd.grad(FocalLoss("softmax", gamma=0.0, ignore_index=255)(x, t), x)[0]
    g_ref = torch.autograd.grad(F.cross_entropy(x, t, ignore_index=255), x)[0]
    torch.testing.assert_close(g_ours, g_ref)


def test_soft_targets_equal_cross_entropy_with_probabilities(seg_shape):
    x, _ = rand_case(seg_shape)
    y = torch.softmax(torch.randn(seg_shape, dtype=x.dtype), 1)
    torch.testing.assert_close(FocalLoss("softmax", gamma=0.0)(x, y), F.cross_entropy(x, y))


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.7])
@pytest.mark.parametrize("alpha", [None, [0.2, 0.5, 0.3]])
@pytest.mark.parametrize("ignore_index", [None, 9])
def test_softmax_focal_matches_formula(any_shape, gamma, alpha, ignore_index):
    x, t = rand_case(any_shape, ignore=ignore_index)
    ours = FocalLoss("softmax", gamma=gamma, alpha=alpha, ignore_index=ignore_index)(x, t)
    torch.testing.assert_close(ours, softmax_focal_ref(x, t, gamma, alpha, ignore_index))


def test_softmax_scalar_alpha_is_background_vs_rest():
    x, t = rand_case((4, 3, 5, 5))
    ours = FocalLoss("softmax", gamma=2.0, alpha=0.25)(x, t)
    torch.testing.assert_close(ours, softmax_focal_ref(x, t, 2.0, [0.75, 0.25, 0.25]))


def test_label_smoothing_focal_formula():
    x, t = rand_case((3, 4, 6))
    eps, gamma = 0.2, 2.0
    p = torch.softmax(x, 1)
    per_class = -((1 - p) ** gamma) * torch.log(p)
    y = (1 - eps) * one_hot(t, 4) + eps / 4
    ref = (y * per_class).sum(1).mean()
    torch.testing.assert_close(FocalLoss("softmax", gamma=gamma, label_smoothing=eps)(x, t), ref)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (1.5, 0.6), (0.0, None)])
def test_sigmoid_focal_equals_torchvision_convention(any_shape, reduction, gamma, alpha):
    x, _ = rand_case(any_shape)
    y = (torch.rand(any_shape, dtype=x.dtype) > 0.7).to(x.dtype)
    ref = torchvision_sigmoid_focal(
        x, y, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction=reduction
    )
    torch.testing.assert_close(FocalLoss("sigmoid", gamma=gamma, alpha=alpha, reduction=reduction)(x, y), ref)


def test_sigmoid_gamma0_equals_bce_with_weight_and_ignore(seg_shape):
    x, _ = rand_case(seg_shape)
    y = (torch.rand(seg_shape, dtype=x.dtype) > 0.5).to(x.dtype)
    w = torch.tensor([1.0, 2.0, 0.5], dtype=x.dtype)
    ref = F.binary_cross_entropy_with_logits(x, y, weight=w.view(1, 3, *([1] * (x.ndim - 2))))
    torch.testing.assert_close(FocalLoss("sigmoid", gamma=0.0, weight=w)(x, y), ref)
    # a binary mask with 255 = unlabelled: ignored voxels leave the loss and the mean
    xb, yb = x[:, :1], y[:, :1].clone()
    yb.view(-1)[::3] = 255
    keep = yb != 255
    ref = F.binary_cross_entropy_with_logits(xb[keep], yb[keep])
    torch.testing.assert_close(FocalLoss("sigmoid", gamma=0.0, ignore_index=255)(xb, yb), ref)


def test_sigmoid_index_target_is_one_vs_rest(seg_shape):
    x, t = rand_case(seg_shape)
    loss = FocalLoss("sigmoid", gamma=2.0, alpha=0.25)
    torch.testing.assert_close(loss(x, t), loss(x, one_hot(t, seg_shape[1])))


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_monai_softmax_focal_up_to_channel_mean(seg_shape, gamma):
    x, t = rand_case(seg_shape, dtype=torch.float32)
    alpha = [0.2, 0.3, 0.5]
    monai = MonaiFocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma, alpha=alpha)(x, t.unsqueeze(1))
    ours = FocalLoss("softmax", gamma=gamma, alpha=alpha)(x, t)
    torch.testing.assert_close(ours / seg_shape[1], monai)


def test_monai_sigmoid_focal(seg_shape):
    x, _ = rand_case(seg_shape, dtype=torch.float32)
    y = (torch.rand(seg_shape, dtype=x.dtype) > 0.7).to(x.dtype)
    monai = MonaiFocalLoss(gamma=2.0, alpha=0.25)(x, y)
    torch.testing.assert_close(FocalLoss("sigmoid", gamma=2.0, alpha=0.25)(x, y), monai)


def test_include_background_false_zeroes_class0_voxels():
    x, t = rand_case((2, 3, 6, 6))
    # a voxel-wise softmax loss without class 0 rewards "foreground everywhere": said at construction
    with pytest.warns(UserWarning, match="predicting a foreground class everywhere"):
        loss = FocalLoss("softmax", gamma=2.0, include_background=False)
    ours = loss(x, t)
    everywhere = torch.full_like(x, -20.0)
    everywhere[:, 1] = 20.0  # class 1 predicted on every voxel: near-zero loss without class 0
    assert (
        float(loss(everywhere, (t > 0).long()))
        < 1e-6
        < float(FocalLoss("softmax")(everywhere, (t > 0).long()))
    )
    torch.testing.assert_close(ours, softmax_focal_ref(x, t, 2.0, [0.0, 1.0, 1.0]))
    xs = x[:, :2]
    ys = one_hot(t.clamp_max(1), 2)
    sig = FocalLoss("sigmoid", gamma=2.0, include_background=False)(xs, ys)
    torch.testing.assert_close(sig, FocalLoss("sigmoid", gamma=2.0)(xs[:, 1:], ys[:, 1:]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_exact_cross_entropy(dtype):
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]], dtype=dtype, requires_grad=True)
    t = torch.tensor([1, 1])
    ours = FocalLoss("softmax", gamma=0.0)(x, t)
    torch.testing.assert_close(ours, F.cross_entropy(x.double(), t).to(dtype))
    (g,) = torch.autograd.grad(ours, x)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("gamma", [0.5, 1.0, 1.5, 2.0, 3.7])  # each branch of the fused focal gradient
def test_fused_path_matches_unfused_reference(seg_shape, gamma):
    x, t = rand_case(seg_shape, ignore=7)
    w = torch.tensor([0.5, 1.0, 2.0], dtype=x.dtype)
    loss = FocalLoss("softmax", gamma=gamma, alpha=[0.3, 0.3, 0.4], weight=w, ignore_index=7)
    fused = loss(x, t)
    act = Activated(x, "softmax")
    nt = normalise_target(x, t, "softmax", 7)
    terms = softmax_focal_index(act.logp, nt.index, nt.valid_as(x), gamma, loss.alpha.double() * 1, w)
    ref = terms.loss.sum() / terms.normaliser
    torch.testing.assert_close(fused, ref)
    torch.testing.assert_close(torch.autograd.grad(fused, x)[0], torch.autograd.grad(ref, x)[0])


@pytest.mark.parametrize(
    "kwargs,target_kind",
    [
        ({"activation": "softmax", "gamma": 2.0, "ignore_index": 255}, "index"),
        ({"activation": "softmax", "gamma": 0.5, "label_smoothing": 0.1}, "index"),
        ({"activation": "softmax", "gamma": 2.0}, "soft"),
        ({"activation": "softmax", "gamma": 2.0, "reduction": "none"}, "index"),
        ({"activation": "sigmoid", "gamma": 2.0, "alpha": 0.25}, "multilabel"),
    ],
)
def test_gradcheck(kwargs, target_kind):
    x, t = rand_case((2, 3, 2, 3), ignore=kwargs.get("ignore_index"))
    if target_kind == "soft":
        t = torch.softmax(torch.randn(2, 3, 2, 3, dtype=torch.float64), 1)
    elif target_kind == "multilabel":
        t = (torch.rand(2, 3, 2, 3) > 0.5).double()
    loss = FocalLoss(**kwargs)
    assert torch.autograd.gradcheck(lambda z: loss(z, t).sum(), (x,), fast_mode=True)


def test_reduction_none_shapes(seg_shape):
    x, t = rand_case(seg_shape)
    assert FocalLoss("softmax", reduction="none")(x, t).shape == t.shape
    assert FocalLoss("sigmoid", reduction="none")(x, t).shape == x.shape
