"""Target normalisation: accepted formats agree, and the ValueErrors name expected vs got."""

from __future__ import annotations

import pytest
import torch
from _losses_ref import one_hot, rand_case

from medfocal.losses import DiceFocalLoss, FocalLoss, UnifiedFocalLoss
from medfocal.losses._targets import normalise_target


@pytest.mark.parametrize("cls", [FocalLoss, DiceFocalLoss, UnifiedFocalLoss])
def test_all_index_layouts_and_one_hot_agree(seg_shape, cls):
    x, t = rand_case(seg_shape)
    loss = cls()
    ref = loss(x, t)
    for target in (t.unsqueeze(1), t.unsqueeze(1).float(), one_hot(t, seg_shape[1])):
        torch.testing.assert_close(loss(x, target), ref)


def test_softmax_index_path_materialises_no_one_hot():
    x, t = rand_case((2, 3, 4, 4))
    nt = normalise_target(x, t, "softmax", 255)
    assert nt.dense is None and nt.index.shape == t.shape and nt.valid.dtype == torch.bool
    ns = normalise_target(x, t, "sigmoid", None)
    torch.testing.assert_close(ns.dense, one_hot(t, 3))


def test_wrong_target_shape():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"expected class indices of shape \(2, 4, 4\).*got \(2, 4, 5\)"):
        FocalLoss()(x, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \(2, 2, 4, 4\)"):
        DiceFocalLoss()(x, torch.zeros(2, 2, 4, 4))


@pytest.mark.parametrize("bad", [3, -1, 254])
def test_class_index_out_of_range(bad):
    x = torch.randn(2, 3, 4, 4)
    t = torch.zeros(2, 4, 4, dtype=torch.long)
    t[0, 0, 0] = bad
    with pytest.raises(
        ValueError, match=rf"class indices must lie in \[0, 2\].*got values in \[{min(bad, 0)}, "
    ):
        DiceFocalLoss(ignore_index=255)(x, t)


def test_ignore_index_value_is_not_out_of_range():
    x = torch.randn(2, 3, 4, 4)
    t = torch.full((2, 4, 4), 255)
    assert torch.isfinite(FocalLoss(ignore_index=255)(x, t))


def test_single_channel_softmax():
    with pytest.raises(ValueError, match=r"activation='softmax' needs C >= 2.*\(2, 1, 4, 4\)"):
        FocalLoss("softmax")(torch.randn(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    # the same single channel is fine with sigmoid (binary), labels 0/1
    assert torch.isfinite(FocalLoss("sigmoid")(torch.randn(2, 1, 4, 4), torch.ones(2, 1, 4, 4)))


@pytest.mark.parametrize("cls", [FocalLoss, DiceFocalLoss])
def test_alpha_and_weight_length(cls):
    x, t = torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"alpha: expected 3 values \(one per class\), got 2"):
        cls(alpha=[0.5, 0.5])(x, t)
    with pytest.raises(ValueError, match=r"weight: expected 3 values \(one per class\), got 4"):
        cls(weight=[1.0, 1.0, 1.0, 1.0])(x, t)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"activation: expected one of \('softmax', 'sigmoid'\), got 'relu'"):
        FocalLoss("relu")
    with pytest.raises(ValueError, match="reduction"):
        DiceFocalLoss(reduction="none")
    with pytest.raises(ValueError, match=r"gamma: expected a finite value >= 0, got -1.0"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="label_smoothing"):
        FocalLoss("sigmoid", label_smoothing=0.1)
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha="balanced")
    with pytest.raises(ValueError, match="lambda_focal"):
        DiceFocalLoss(lambda_focal=-1.0)
