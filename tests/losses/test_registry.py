"""get(name, **kwargs): every registered loss builds and runs; typos get suggestions."""

from __future__ import annotations

import pytest
import torch

import medfocal.losses as L


@pytest.mark.parametrize("name", L.names())
def test_every_name_builds_and_runs(name):
    loss = L.get(name, activation="softmax", ignore_index=None)
    x, t = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randint(0, 3, (2, 4, 4))
    value = loss(x, t)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and torch.isfinite(x.grad).all()


def test_class_names_and_aliases():
    assert type(L.get("DiceFocalLoss")) is L.DiceFocalLoss
    assert type(L.get("dice-focal", gamma=1.0)) is L.DiceFocalLoss
    assert type(L.get("FLSD53Focal")) is L.FLSD53FocalLoss


def test_unknown_name_suggests():
    with pytest.raises(ValueError, match=r"unknown loss 'focal_tverski'; did you mean 'focal_tversky'"):
        L.get("focal_tverski")
    with pytest.raises(ValueError, match="Available: adafocal"):
        L.get("zzz")


def test_public_api():
    for name in L.__all__:
        assert getattr(L, name).__doc__


def test_list_losses_and_registration_by_decorator():
    assert L.list_losses() == L.names() == sorted(L.list_losses())
    assert L.list_losses("*tversky*") == ["focal_tversky", "tversky_focal"]
    # every public loss class registered itself where it is defined (no central dict to keep in sync)
    classes = {type(L.get(n)) for n in L.list_losses()}
    public = {getattr(L, n) for n in L.__all__ if n.endswith("Loss")}
    assert classes == public


def test_register_loss_adds_a_name_and_refuses_a_taken_one():
    from medfocal.losses import registry

    @L.register_loss("test_only_ce")
    class TestOnlyCE(torch.nn.Module):
        def forward(self, logits, target):
            return torch.nn.functional.cross_entropy(logits, target)

    try:
        assert "test_only_ce" in L.list_losses()
        assert type(L.get("TestOnlyCE")) is TestOnlyCE
        with pytest.raises(ValueError, match=r"loss name 'dice_focal' is already registered to .*DiceFocal"):
            L.register_loss("dice_focal")(TestOnlyCE)
    finally:
        registry._REGISTRY.pop("test_only_ce")


def test_activation_enum_with_did_you_mean():
    assert [a.value for a in L.Activation] == ["softmax", "sigmoid"]
    assert L.FocalLoss("sigmoid").activation is L.Activation.SIGMOID
    assert L.DiceFocalLoss(L.Activation.SOFTMAX).activation == "softmax"
    expected = (
        r"^activation: expected one of \('softmax', 'sigmoid'\), got 'sigmiod' \(did you mean 'sigmoid'\?\)$"
    )
    for cls in (L.FocalLoss, L.DiceFocalLoss, L.UnifiedFocalLoss):
        with pytest.raises(ValueError, match=expected):
            cls("sigmiod")
