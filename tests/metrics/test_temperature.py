"""Tests for medfocal.metrics.temperature: fitting, scoring and applying a temperature."""

from __future__ import annotations

import pytest
import torch

from medfocal.metrics.temperature import calibrated_probabilities, fit_temperature, nll, scaled_ece


def calibrated_logits(n: int = 3000, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose softmax is the true label distribution (labels sampled from it): T = 1 is optimal."""
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, c, generator=g)
    labels = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=g)[:, 0]
    return logits, labels


@pytest.mark.parametrize("factor", [0.4, 3.0])
def test_recovers_known_scale(factor):
    logits, labels = calibrated_logits()
    temperature = fit_temperature(factor * logits, labels)
    assert temperature == pytest.approx(factor, rel=0.15)


def test_lowers_nll_and_ece_keeps_accuracy():
    logits, labels = calibrated_logits(seed=1)
    overconfident = 4.0 * logits
    temperature = fit_temperature(overconfident, labels)
    assert temperature > 2.0
    assert nll(overconfident, labels, temperature) < nll(overconfident, labels)
    assert scaled_ece(overconfident, labels, temperature) < scaled_ece(overconfident, labels)
    before = overconfident.argmax(1)
    after = (overconfident / temperature).argmax(1)
    assert torch.equal(before, after)


def test_already_calibrated_gives_about_one():
    logits, labels = calibrated_logits(seed=2)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.12)


def test_segmentation_shapes_equal_flattened():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 3, 10, 12, generator=g)
    labels = torch.multinomial(torch.softmax(logits / 3, 1).movedim(1, -1).reshape(-1, 3), 1, generator=g)
    labels = labels.reshape(2, 1, 10, 12)
    flat_logits = logits.movedim(1, -1).reshape(-1, 3)
    t_seg = fit_temperature(logits, labels)
    t_flat = fit_temperature(flat_logits, labels.reshape(-1))
    assert t_seg == pytest.approx(t_flat, rel=1e-6)
    assert t_seg > 1.5


def test_sigmoid_binary():
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(4000, generator=g)
    labels = (torch.rand(4000, generator=g) < torch.sigmoid(logits)).float()
    assert fit_temperature(2.5 * logits, labels, activation="sigmoid") == pytest.approx(2.5, rel=0.15)


def test_errors():
    with pytest.raises(ValueError, match="labels: expected class indices"):
        fit_temperature(torch.randn(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="activation"):
        fit_temperature(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), activation="relu")


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_calibrated_probabilities_is_activation_of_logits_over_t(activation):
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float16)
    expected = (torch.softmax if activation == "softmax" else lambda t, dim: torch.sigmoid(t))(
        logits.float() / 2.5, dim=1
    )
    out = calibrated_probabilities(logits, activation, 2.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="temperature: expected > 0, got 0"):
        calibrated_probabilities(logits, activation, 0.0)
    with pytest.raises(ValueError, match="activation: expected one of"):
        calibrated_probabilities(logits, "relu", 1.0)
