"""Tests for medfocal.metrics.calibration against hand-computed values and reference implementations."""

from __future__ import annotations

import doctest

import matplotlib
import numpy as np
import pytest
import torch

import medfocal.metrics.calibration as calibration_module
from medfocal.metrics import (
    CalibrationBins,
    calibration_bins,
    classwise_ece,
    expected_calibration_error,
    reliability_diagram,
    voxelwise_ece,
)

matplotlib.use("Agg")


def reference_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Guo et al. ECE written as the textbook loop over bins (bins [lo, hi), the last one closed)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        in_bin = (confidence >= lo) & ((confidence < hi) if b < n_bins - 1 else (confidence <= hi))
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return ece


def reference_classwise_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out = []
    for k in range(probs.shape[1]):
        p, y = probs[:, k], labels == k
        total = 0.0
        for b in range(n_bins):
            lo, hi = edges[b], edges[b + 1]
            in_bin = (p >= lo) & ((p < hi) if b < n_bins - 1 else (p <= hi))
            if in_bin.any():
                total += in_bin.mean() * abs(y[in_bin].mean() - p[in_bin].mean())
        out.append(total)
    return np.array(out)


def random_probs(n: int, c: int, seed: int = 0, sharpness: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = sharpness * torch.randn(n, c, generator=g, dtype=torch.float64)
    labels = torch.randint(0, c, (n,), generator=g)
    return torch.softmax(logits, dim=1), labels


def test_ece_hand_computed():
    # bins of width 0.2: {0.9 correct, 0.85 wrong} in [0.8, 1]; {0.65 correct} in [0.6, 0.8);
    # {0.5 wrong} in [0.4, 0.6).
    probs = torch.tensor([[0.9, 0.1], [0.85, 0.15], [0.35, 0.65], [0.5, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1])
    expected = 2 / 4 * abs(0.5 - 0.875) + 1 / 4 * abs(1 - 0.65) + 1 / 4 * abs(0 - 0.5)
    assert expected_calibration_error(probs, labels, n_bins=5).item() == pytest.approx(expected)
    # MCE: the largest gap among non-empty bins.
    assert expected_calibration_error(probs, labels, n_bins=5, norm="max").item() == pytest.approx(0.5)


def test_perfectly_confident_and_correct_is_zero():
    probs = torch.eye(4)[[0, 1, 2, 3, 1]]
    assert expected_calibration_error(probs, torch.tensor([0, 1, 2, 3, 1])).item() == 0.0


@pytest.mark.parametrize("n_bins", [1, 10, 15])
@pytest.mark.parametrize("n_classes", [2, 5])
def test_ece_matches_numpy_reference(n_bins, n_classes):
    probs, labels = random_probs(500, n_classes, seed=n_bins + n_classes)
    ours = expected_calibration_error(probs, labels, n_bins=n_bins).item()
    assert ours == pytest.approx(reference_ece(probs.numpy(), labels.numpy(), n_bins), abs=1e-12)


@pytest.mark.parametrize("n_classes", [3, 5])
def test_ece_matches_torchmetrics(n_classes):
    from torchmetrics.classification import MulticlassCalibrationError

    probs, labels = random_probs(400, n_classes, seed=7)
    probs = probs.float()
    metric = MulticlassCalibrationError(num_classes=n_classes, n_bins=15, norm="l1")
    reference = metric(probs, labels).item()
    assert expected_calibration_error(probs, labels).item() == pytest.approx(reference, abs=1e-5)


def test_binary_probability_vector_equals_two_columns():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(200, generator=g, dtype=torch.float64)
    y = (torch.rand(200, generator=g) < p).long()
    two = torch.stack([1 - p, p], dim=1)
    assert expected_calibration_error(p, y).item() == pytest.approx(expected_calibration_error(two, y).item())


def test_one_hot_labels_equal_indices():
    probs, labels = random_probs(100, 4)
    one_hot = torch.nn.functional.one_hot(labels, 4)
    assert expected_calibration_error(probs, one_hot).item() == pytest.approx(
        expected_calibration_error(probs, labels).item()
    )


def test_classwise_ece_matches_reference():
    probs, labels = random_probs(300, 4, seed=3, sharpness=1.5)
    per_class = classwise_ece(probs, labels, n_bins=10, reduction="none")
    expected = reference_classwise_ece(probs.numpy(), labels.numpy(), 10)
    np.testing.assert_allclose(per_class.numpy(), expected, atol=1e-12)
    assert classwise_ece(probs, labels, n_bins=10).item() == pytest.approx(expected.mean())


def test_classwise_ece_hand_computed():
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]], dtype=torch.float64)
    np.testing.assert_allclose(classwise_ece(probs, torch.tensor([0, 1]), 10, reduction="none"), [0.2, 0.2])


@pytest.mark.parametrize("spatial", [(6, 5), (4, 3, 5)])
def test_voxelwise_ece_equals_flattened_ece(spatial):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(2 * torch.randn(3, 4, *spatial, generator=g), dim=1)
    labels = torch.randint(0, 4, (3, 1, *spatial), generator=g)
    flat_probs = probs.movedim(1, -1).reshape(-1, 4)
    flat_labels = labels.reshape(-1)
    assert voxelwise_ece(probs, labels).item() == pytest.approx(
        expected_calibration_error(flat_probs, flat_labels).item(), abs=1e-12
    )
    # (B, *spatial) labels are accepted too
    assert voxelwise_ece(probs, labels[:, 0]).item() == pytest.approx(voxelwise_ece(probs, labels).item())


def test_voxelwise_ece_mask_and_subsampling():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, 16, 16, 8, generator=g), dim=1)
    labels = torch.randint(0, 3, (2, 1, 16, 16, 8), generator=g)
    mask = torch.zeros(2, 1, 16, 16, 8, dtype=torch.bool)
    mask[:, :, 4:12] = True
    flat = probs.movedim(1, -1)[mask[:, 0]]
    assert voxelwise_ece(probs, labels, mask=mask).item() == pytest.approx(
        expected_calibration_error(flat, labels[:, 0][mask[:, 0]]).item()
    )
    bins = calibration_bins(probs, labels, max_samples=500, generator=torch.Generator().manual_seed(0))
    assert bins.total.item() == 500
    full = voxelwise_ece(probs, labels).item()
    sub = voxelwise_ece(probs, labels, max_voxels=3000, generator=torch.Generator().manual_seed(1)).item()
    assert sub == pytest.approx(full, abs=0.05)


def test_binary_segmentation_single_channel():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(2, 1, 8, 8, generator=g)
    y = (torch.rand(2, 1, 8, 8, generator=g) < p).long()
    two = torch.cat([1 - p, p], dim=1)
    assert voxelwise_ece(p, y).item() == pytest.approx(voxelwise_ece(two, y).item())


def test_histograms_add_up():
    probs, labels = random_probs(200, 3)
    whole = calibration_bins(probs, labels)
    parts = calibration_bins(probs[:70], labels[:70]) + calibration_bins(probs[70:], labels[70:])
    torch.testing.assert_close(whole.counts, parts.counts)
    assert whole.ece().item() == pytest.approx(parts.ece().item())
    empty = CalibrationBins.empty(15)
    assert (empty + whole).ece().item() == pytest.approx(whole.ece().item())


def test_empty_bins_report_centre_and_zero_gap():
    bins = calibration_bins(torch.tensor([[0.95, 0.05]]), torch.tensor([0]), n_bins=10)
    centres = (torch.arange(10, dtype=torch.float64) + 0.5) / 10
    torch.testing.assert_close(bins.bin_confidence()[:9], centres[:9])
    torch.testing.assert_close(bins.bin_accuracy()[:9], centres[:9])
    assert bins.bin_accuracy()[9].item() == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_bins": 0}, "n_bins"),
        ({"labels": torch.zeros(5, dtype=torch.long)}, "labels: expected shape"),
        ({"norm": "l3"}, "norm"),
    ],
)
def test_errors(kwargs, message):
    probs, labels = random_probs(4, 3)
    args = {"probs": probs, "labels": labels, **kwargs}
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(**args)


def test_integer_probs_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        expected_calibration_error(torch.ones(3, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("n_bins", [5, 15])
def test_reliability_diagram_bars(n_bins, tmp_path):
    probs, labels = random_probs(100, 3)
    fig = reliability_diagram(probs, labels, n_bins=n_bins, title="test")
    ax = fig.axes[0]
    assert len(ax.containers) == 2
    assert len(ax.containers[0]) == n_bins
    heights = [bar.get_height() for bar in ax.containers[0]]
    bins = calibration_bins(probs, labels, n_bins)
    expected = torch.where(bins.counts > 0, bins.bin_accuracy(), torch.zeros(n_bins, dtype=torch.float64))
    np.testing.assert_allclose(heights, expected.numpy())
    fig.savefig(tmp_path / "diagram.png")
    assert (tmp_path / "diagram.png").stat().st_size > 0
    # a ready histogram works as input
    assert len(reliability_diagram(bins).axes[0].containers[0]) == n_bins


def test_doctests():
    result = doctest.testmod(calibration_module)
    assert result.failed == 0 and result.attempted > 0
