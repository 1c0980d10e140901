"""README's calibration claims against the libraries that have the same metric.

torchmetrics has the top-label ECE (``MulticlassCalibrationError``); MONAI (>= 1.5) has the class-wise,
per-image one (``CalibrationErrorMetric``). medfocal's own part is the voxel-wise top-label ECE of a
whole segmentation with a mask and subsampling (``voxelwise_ece``), built on the same binning.
"""

from __future__ import annotations

import pytest
import torch
from monai.metrics import CalibrationErrorMetric
from torchmetrics.classification import MulticlassCalibrationError

from medfocal.metrics import classwise_ece, expected_calibration_error, voxelwise_ece


def _seg_probs(seed: int = 0, shape=(2, 3, 16, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(shape, generator=g) * 2, dim=1)
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    return probs, labels


@pytest.mark.parametrize("n_classes", [2, 4])
def test_top_label_ece_equals_torchmetrics_on_segmentation_voxels(n_classes):
    probs, labels = _seg_probs(1, (2, n_classes, 12, 10))
    flat = probs.movedim(1, -1).reshape(-1, n_classes)
    reference = MulticlassCalibrationError(num_classes=n_classes, n_bins=15, norm="l1")(
        flat, labels.reshape(-1)
    )
    assert expected_calibration_error(flat, labels.reshape(-1)).item() == pytest.approx(
        reference.item(), abs=1e-5
    )
    assert voxelwise_ece(probs, labels).item() == pytest.approx(reference.item(), abs=1e-5)


def test_classwise_ece_per_image_equals_monai_calibration_error_metric():
    probs, labels = _seg_probs(0)
    one_hot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    reference = CalibrationErrorMetric(num_bins=15, metric_reduction="none")(probs, one_hot)  # (B, C)
    for b in range(probs.shape[0]):
        ours = classwise_ece(probs[b].movedim(0, -1).reshape(-1, 3), labels[b].reshape(-1), reduction="none")
        torch.testing.assert_close(ours.float(), reference[b], atol=1e-5, rtol=0)
