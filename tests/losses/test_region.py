"""Region terms: MONAI Dice/Jaccard/Tversky equalities, stability as the index approaches 1, gradients."""

from __future__ import annotations

import pytest
import torch
from _losses_ref import one_hot, rand_case, soft_dice_ref
from monai.losses import DiceLoss, TverskyLoss

from medfocal.losses import DiceFocalLoss, FocalTverskyLoss, JaccardFocalLoss, TverskyFocalLoss
from medfocal.losses.region import RegionStats, class_sums, focal_tversky_loss, soft_region_stats


def region_only(cls, **kw):
    return cls(lambda_focal=0.0, **kw)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("weight", [None, [0.5, 1.0, 2.0]])
def test_dice_equals_monai_softmax(seg_shape, include_background, batch, weight):
    x, t = rand_case(seg_shape, dtype=torch.float32)
    monai = DiceLoss(
        softmax=True, to_onehot_y=True, include_background=include_background, batch=batch,
        weight=None if weight is None else (weight if include_background else weight[1:]),
    )(x, t.unsqueeze(1))  # fmt: skip
    ours = region_only(DiceFocalLoss, include_background=include_background, batch=batch, weight=weight)(x, t)
    torch.testing.assert_close(ours, monai)


def test_dice_equals_monai_sigmoid_multilabel(seg_shape):
    x, _ = rand_case(seg_shape, dtype=torch.float32)
    y = (torch.rand(seg_shape) > 0.6).float()
    monai = DiceLoss(sigmoid=True)(x, y)
    torch.testing.assert_close(region_only(DiceFocalLoss, activation="sigmoid")(x, y), monai)


def test_dice_ignore_index_equals_monai(seg_shape):
    x, t = rand_case(seg_shape, dtype=torch.float32, ignore=255)
    monai = DiceLoss(softmax=True, to_onehot_y=True, ignore_index=255)(x, t.unsqueeze(1))
    torch.testing.assert_close(region_only(DiceFocalLoss, ignore_index=255)(x, t), monai)


def test_dice_matches_formula_with_soft_target(seg_shape):
    x, _ = rand_case(seg_shape)
    y = torch.softmax(torch.randn(seg_shape, dtype=x.dtype), 1)
    ref = soft_dice_ref(torch.softmax(x, 1), y).mean()
    torch.testing.assert_close(region_only(DiceFocalLoss)(x, y), ref)


def test_jaccard_equals_monai_with_doubled_smoothing(seg_shape):
    x, t = rand_case(seg_shape, dtype=torch.float32)
    monai = DiceLoss(softmax=True, to_onehot_y=True, jaccard=True, smooth_nr=2e-5, smooth_dr=2e-5)(
        x, t.unsqueeze(1)
    )
    torch.testing.assert_close(region_only(JaccardFocalLoss)(x, t), monai)


def test_tversky_equals_monai_with_swapped_names(seg_shape):
    x, t = rand_case(seg_shape, dtype=torch.float32)
    monai = TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7)(x, t.unsqueeze(1))
    ours = region_only(TverskyFocalLoss, tversky_alpha=0.7, tversky_beta=0.3)(x, t)
    torch.testing.assert_close(ours, monai)


def test_index_and_dense_stats_agree(seg_shape):
    x, t = rand_case(seg_shape)
    p = torch.softmax(x, 1)
    valid = (t != 1).double()
    a = soft_region_stats(p, index=t, valid=valid)
    b = soft_region_stats(p, dense=one_hot(t, seg_shape[1]) * valid.unsqueeze(1), valid=valid)
    for u, v in zip((a.tp, a.sum_p, a.sum_y), (b.tp, b.sum_p, b.sum_y)):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("gamma", [0.5, 0.75, 1.0, 2.0])
def test_focal_tversky_finite_as_index_reaches_one(gamma):
    # perfect prediction: TP = Y = P, FP = FN = 0 -> TI = 1 exactly
    tp = torch.tensor([[5.0, 0.0]], dtype=torch.float64, requires_grad=True)
    stats = RegionStats(tp, tp * 1.0, torch.tensor([[5.0, 0.0]], dtype=torch.float64))
    value = focal_tversky_loss(stats, gamma=gamma).sum()
    (grad,) = torch.autograd.grad(value, tp)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert float(value.detach()) < 1e-6


@pytest.mark.parametrize("cls", [DiceFocalLoss, JaccardFocalLoss, TverskyFocalLoss, FocalTverskyLoss])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_absent_class_and_perfect_prediction_finite(cls, activation):
    t = torch.zeros(2, 6, 6, dtype=torch.long)  # only background: foreground absent in target
    x = (40.0 * (2 * one_hot(t, 3) - 1)).requires_grad_()  # and in the prediction
    loss = cls(activation=activation)
    value = loss(x, t)
    (grad,) = torch.autograd.grad(value, x)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert float(value.detach()) < 1e-3


def _focal_tversky_ref(p, y, alpha, beta, gamma, smooth=1e-5, batch=False, include_background=True):
    """mean_{b,c} (1 - TI)^gamma, TI = (TP + s) / (TP + alpha FN + beta FP + s), written out directly."""
    dims = (0, *range(2, p.ndim)) if batch else tuple(range(2, p.ndim))
    tp = (p * y).sum(dims)
    fn = ((1 - p) * y).sum(dims)
    fp = (p * (1 - y)).sum(dims)
    ti = (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)
    per_class = (1 - ti) ** gamma
    return (per_class if include_background else per_class[..., 1:]).mean()


@pytest.mark.parametrize("gamma", [0.75, 2.0, 1 / 3])
@pytest.mark.parametrize(("batch", "include_background"), [(False, True), (True, False)])
def test_focal_tversky_matches_formula(seg_shape, gamma, batch, include_background):
    x, t = rand_case(seg_shape)
    loss = FocalTverskyLoss(gamma=gamma, batch=batch, include_background=include_background)  # 0.7, 0.3
    ref = _focal_tversky_ref(
        torch.softmax(x, 1), one_hot(t, seg_shape[1]), 0.7, 0.3, gamma, batch=batch,
        include_background=include_background,
    )  # fmt: skip
    torch.testing.assert_close(loss(x, t), ref)
    # the gradient too (fused softmax/index path against autograd through the formula)
    g = torch.autograd.grad(loss(x, t), x)[0]
    g_ref = torch.autograd.grad(ref, x)[0]
    torch.testing.assert_close(g, g_ref)


def test_sigmoid_focal_tversky_matches_formula(seg_shape):
    x, _ = rand_case(seg_shape)
    y = (torch.rand(seg_shape) > 0.6).double()
    loss = FocalTverskyLoss("sigmoid", gamma=0.75)(x, y)
    torch.testing.assert_close(loss, _focal_tversky_ref(torch.sigmoid(x), y, 0.7, 0.3, 0.75))


def test_sigmoid_jaccard_and_tversky_equal_monai(seg_shape):
    x, _ = rand_case(seg_shape, dtype=torch.float32)
    y = (torch.rand(seg_shape) > 0.6).float()
    monai_jaccard = DiceLoss(sigmoid=True, jaccard=True, smooth_nr=2e-5, smooth_dr=2e-5)(x, y)
    torch.testing.assert_close(region_only(JaccardFocalLoss, activation="sigmoid")(x, y), monai_jaccard)
    monai_tversky = TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7)(x, y)  # MONAI: alpha weighs FP
    ours = region_only(TverskyFocalLoss, activation="sigmoid", tversky_alpha=0.7, tversky_beta=0.3)(x, y)
    torch.testing.assert_close(ours, monai_tversky)
    monai_no_bg = TverskyLoss(sigmoid=True, include_background=False)(x, y)
    ours_no_bg = region_only(
        TverskyFocalLoss, activation="sigmoid", tversky_alpha=0.5, tversky_beta=0.5, include_background=False
    )(x, y)
    torch.testing.assert_close(ours_no_bg, monai_no_bg)


def test_focal_tversky_gamma1_is_tversky(seg_shape):
    x, t = rand_case(seg_shape)
    a = FocalTverskyLoss(gamma=1.0)(x, t)
    b = region_only(TverskyFocalLoss)(x, t)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("method", ["scatter", "masked"])
def test_class_sums_against_one_hot(method):
    g = torch.Generator().manual_seed(3)
    index = torch.randint(0, 4, (2, 500), generator=g)
    index[1, :] = torch.where(index[1] == 2, 0, index[1])  # class 2 absent from the second case
    values = torch.rand((2, 500), generator=g, dtype=torch.float64, requires_grad=True)
    ones = torch.ones((), dtype=torch.float64).expand_as(values)
    y = one_hot(index, 4)  # (B, C, N)
    tp, count = class_sums(index, (values, ones), 4, method=method)
    torch.testing.assert_close(tp, (y * values.unsqueeze(1)).sum(-1))
    torch.testing.assert_close(count, y.sum(-1).double())
    assert count[1, 2] == 0
    # gradient of a weighted sum: each voxel receives the weight of its own class
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad((tp * w).sum(), values)
    torch.testing.assert_close(grad, w[index].expand_as(grad))


def test_class_sums_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        class_sums(torch.zeros((1, 3), dtype=torch.long), (torch.ones(1, 3),), 2, method="bincount")


@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("cls", [DiceFocalLoss, JaccardFocalLoss, FocalTverskyLoss])
def test_masked_class_sums_give_the_same_loss_and_gradient(monkeypatch, cls, ignore):
    # the CUDA path (masked per-class sums) against the CPU one (scatter_add), forced here on the CPU
    import functools

    import medfocal.losses._fused as fused
    import medfocal.losses.region as region

    x, t = rand_case((2, 3, 9, 8, 7), dtype=torch.float64)
    if ignore:
        t.view(-1)[::5] = 255
    loss = cls(activation="softmax", ignore_index=255 if ignore else None)
    results = []
    for method in ("scatter", "masked"):
        forced = functools.partial(region.class_sums, method=method)
        monkeypatch.setattr(fused, "class_sums", forced)
        monkeypatch.setattr(region, "class_sums", forced)
        xi = x.detach().clone().requires_grad_()
        value = loss(xi, t)
        results.append((value, *torch.autograd.grad(value, xi)))
    torch.testing.assert_close(results[0], results[1])
