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
