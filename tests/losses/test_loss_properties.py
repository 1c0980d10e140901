"""Hypothesis property tests over every loss: finite values/gradients, autocast, empty/ignored, minimum."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import medfocal.losses as L

SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def build(name: str, activation: str, gamma: float):
    """A loss by registry name with a gamma in [0, 5] mapped to its own parameter."""
    kwargs: dict = {"activation": activation, "ignore_index": 255}
    if name in {"focal", "dice_focal", "jaccard_focal", "tversky_focal"}:
        kwargs["gamma"] = gamma
    elif name == "focal_tversky":
        # Tversky exponents of practice (Abraham & Khan: 1/3 .. 1); tiny exponents make (1 - TI)^g a step
        kwargs.update(focal_gamma=gamma, gamma=0.5 + gamma / 10, lambda_focal=1.0)
    elif name == "unified_focal":
        kwargs["gamma"] = gamma / 10  # exponent 1 - gamma in [0.5, 1]; the paper uses 0.5
    return L.get(name, **kwargs)


def case(data, activation: str):
    spatial = data.draw(st.lists(st.integers(1, 4), min_size=2, max_size=3), label="spatial")
    b = data.draw(st.integers(1, 2), label="B")
    c = 1 if activation == "sigmoid" else data.draw(st.integers(2, 4), label="C")
    scale = data.draw(st.sampled_from([1.0, 30.0, 1e4]), label="scale")
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    x = scale * torch.randn((b, c, *spatial), generator=g)
    kind = data.draw(st.sampled_from(["random", "empty_foreground", "all_ignored", "some_ignored"]))
    t = torch.randint(0, max(c, 2), (b, *spatial), generator=g)
    if kind == "empty_foreground":
        t.zero_()
    elif kind == "all_ignored":
        t.fill_(255)
    elif kind == "some_ignored":
        t.view(-1)[::2] = 255
    return x, t


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", L.names())
@SETTINGS
@given(data=st.data(), gamma=st.floats(0.0, 5.0), dtype=st.sampled_from(["float32", "float16", "bfloat16"]))
def test_finite_values_and_gradients(name, activation, data, gamma, dtype):
    x, t = case(data, activation)
    loss = build(name, activation, gamma)
    if dtype == "float32":
        x = x.requires_grad_()
        value = loss(x, t)
    else:  # autocast: fp16/bf16 logits in, float32 inside
        x = x.to(getattr(torch, dtype)).requires_grad_()
        with torch.autocast("cpu", dtype=getattr(torch, dtype)):
            value = loss(x, t)
    (grad,) = torch.autograd.grad(value, x)
    assert value.dtype == torch.float32 and value.ndim == 0
    assert torch.isfinite(value), (name, value)
    assert torch.isfinite(grad).all(), name
    if bool((t == 255).all()) and name not in {"unified_focal"}:
        # nothing labelled: every term is exactly 0 (focal: no voxel; region: TP = P = Y = 0 and
        # smooth_nr == smooth_dr give 1 - s/s = 0), and so is the gradient
        assert float(value.detach()) == 0.0, (name, float(value.detach()))
        assert not grad.any(), name


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", L.names())
@settings(max_examples=10, deadline=None)
@given(data=st.data(), gamma=st.floats(0.0, 5.0))
def test_perfect_prediction_is_near_minimum(name, activation, data, gamma):
    x, t = case(data, activation)
    t = torch.where(t == 255, torch.zeros_like(t), t)
    c = x.shape[1]
    y = torch.nn.functional.one_hot(t, max(c, 2)).movedim(-1, 1).float()
    y = y[:, 1:] if c == 1 else y
    perfect = (30.0 * (2 * y - 1)).requires_grad_()
    loss = build(name, activation, gamma)
    value = loss(perfect, t)
    assert 0.0 <= float(value.detach()) < 1e-3, (name, float(value.detach()))
    random_value = loss(torch.randn_like(perfect), t)
    assert float(value.detach()) <= float(random_value)
