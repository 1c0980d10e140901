"""Bad targets and arguments are refused with a ValueError saying what was expected and how to fix it
(issue 15 item 6): 0/255 masks, soft targets outside [0, 1], non-integer float class indices, empty
batches, NaN or negative gamma."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from _losses_ref import one_hot

import medfocal.losses as L
from medfocal.losses import DiceFocalLoss, FocalLoss, FocalTverskyLoss, UnifiedFocalLoss


def _mask_255(shape=(2, 1, 4, 4)) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.uint8)
    mask[..., :2, :2] = 255
    return mask


@pytest.mark.parametrize("name", L.list_losses())
@pytest.mark.parametrize("layout", ["dense", "index"])
def test_sigmoid_0_255_mask_is_refused(name, layout):
    """A uint8 0/255 mask for a single sigmoid channel gave a loss of about 2e6; now a clear error."""
    loss = L.get(name, activation="sigmoid")
    mask = _mask_255() if layout == "dense" else _mask_255()[:, 0]
    with pytest.raises(ValueError, match=r"\[0, 255\].*divide it by 255 or set preprocessing\.label_thr"):
        loss(torch.randn(2, 1, 4, 4), mask)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("cls", [FocalLoss, DiceFocalLoss, FocalTverskyLoss])
def test_dense_target_outside_0_1_is_refused(activation, cls):
    x, t = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    soft = one_hot(t, 3, torch.float32) * 1.5 - 0.25  # values -0.25 and 1.25
    kind = "multi-label/binary" if activation == "sigmoid" else "one-hot/soft"
    expected = rf"a {kind} target of the logits' shape must hold values in \[0, 1\].*\[-0.25, 1.25\]"
    with pytest.raises(ValueError, match=expected):
        cls(activation)(x, soft)
    soft[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"\[-0.25, 1.25\], and NaN"):
        cls(activation)(x, soft)


def test_valid_soft_targets_still_accepted():
    x = torch.randn(2, 3, 4, 4)
    soft = torch.softmax(torch.randn(2, 3, 4, 4), 1)
    for activation in ("softmax", "sigmoid"):
        assert torch.isfinite(DiceFocalLoss(activation)(x, soft))


@pytest.mark.parametrize("cls", [FocalLoss, DiceFocalLoss, UnifiedFocalLoss])
def test_non_integer_float_class_indices_are_refused(cls):
    """0.9 used to become class 0 silently through ``.long()``."""
    t = torch.zeros(2, 1, 4, 4)
    t[0, 0, 1, 1] = 0.9
    with pytest.raises(ValueError, match=r"class indices must be whole numbers.*\[0\.9\].*label_threshold"):
        cls()(torch.randn(2, 3, 4, 4), t)
    t[0, 0, 1, 1] = 1.0  # integer-valued floats stay accepted
    assert torch.isfinite(cls()(torch.randn(2, 3, 4, 4), t))


@pytest.mark.parametrize("name", L.list_losses())
@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4), (0, 3)])
def test_empty_batch_is_a_clear_error(name, shape):
    """Was ``min(): Expected reduction dim`` (or a NaN mean) from deep inside the loss."""
    logits = torch.randn(shape)
    target = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
    with pytest.raises(ValueError, match=rf"logits: empty batch of shape \({shape[0]}, 3.*at least one"):
        L.get(name)(logits, target)


def _gamma_params(name: str) -> list[str]:
    cls = type(L.get(name))
    return [p for p in inspect.signature(cls).parameters if "gamma" in p]


@pytest.mark.parametrize("name", [n for n in L.list_losses() if _gamma_params(n)])
def test_nan_gamma_is_refused_at_construction(name):
    for param in _gamma_params(name):
        with pytest.raises(ValueError, match=rf"^{param.removeprefix('focal_')}: expected"):
            L.get(name, **{param: math.nan})


@pytest.mark.parametrize(
    ("cls", "param"),
    [
        (FocalLoss, "gamma"),
        (DiceFocalLoss, "gamma"),
        (FocalTverskyLoss, "gamma"),
        (FocalTverskyLoss, "focal_gamma"),
        (L.AutomatedFocalLoss, "gamma_init"),
        (L.FLSD53FocalLoss, "gamma_hard"),
        (UnifiedFocalLoss, "gamma"),
    ],
)
@pytest.mark.parametrize("value", [-1.0, math.inf])
def test_negative_or_infinite_gamma_is_refused(cls, param, value):
    with pytest.raises(ValueError, match=r"gamma.*expected"):
        cls(**{param: value})


def test_every_bad_batch_is_checked_on_cpu():
    """On the CPU the values are checked on every call, not only for the first target of a shape."""
    loss, x = DiceFocalLoss(), torch.randn(2, 3, 4, 4)
    good = torch.zeros(2, 4, 4, dtype=torch.long)
    assert torch.isfinite(loss(x, good))
    bad = good.clone()
    bad[1, 3, 3] = 3
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 2\].*\[0, 3\]"):
        loss(x, bad)


def test_cuda_targets_are_checked_synchronously_once_per_shape_then_asynchronously(monkeypatch):
    """The device-sync-free path, exercised without a GPU through a stand-in with ``is_cuda=True``."""
    from types import SimpleNamespace

    from medfocal.losses import _targets

    monkeypatch.setattr(_targets, "_CHECKED_ON_DEVICE", set())
    asserted: list[bool] = []
    monkeypatch.setattr(torch, "_assert_async", lambda ok: asserted.append(bool(ok)))
    target = SimpleNamespace(is_cuda=True, shape=(2, 4, 4), dtype=torch.long, device="cuda:0")
    messages: list[str] = []

    def message() -> str:
        messages.append("m")
        return "m"

    def check(is_bad: bool) -> None:
        _targets.check_values("range 3", target, lambda: torch.tensor(is_bad), message)

    with pytest.raises(ValueError):  # first bad target of this shape: synchronous, full message
        check(True)
    check(False)  # first good one: synchronous, then remembered
    assert asserted == [] and messages == ["m"]
    check(False)
    check(True)  # later ones: only the asynchronous assert, no host sync, no message built
    assert asserted == [True, False] and messages == ["m"]
    other = SimpleNamespace(is_cuda=True, shape=(2, 8, 8), dtype=torch.long, device="cuda:0")
    with pytest.raises(ValueError):  # a new shape is checked synchronously again
        _targets.check_values("range 3", other, lambda: torch.tensor(True), lambda: "new shape")
