"""medfocal.metrics: calibration metrics that MONAI, torchmetrics and scikit-learn lack.

Imports nothing else from medfocal.
"""

from __future__ import annotations

from medfocal.metrics.calibration import (
    CalibrationBins,
    calibration_bins,
    classwise_ece,
    expected_calibration_error,
    reliability_diagram,
    voxelwise_ece,
)

__all__ = [
    "CalibrationBins",
    "calibration_bins",
    "classwise_ece",
    "expected_calibration_error",
    "reliability_diagram",
    "voxelwise_ece",
]
