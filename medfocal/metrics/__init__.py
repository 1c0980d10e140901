"""medfocal.metrics: calibration metrics that MONAI, torchmetrics and scikit-learn lack, and temperature
scaling as pure functions.

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
from medfocal.metrics.temperature import calibrated_probabilities, fit_temperature, nll, scaled_ece

__all__ = [
    "CalibrationBins",
    "calibrated_probabilities",
    "calibration_bins",
    "classwise_ece",
    "expected_calibration_error",
    "fit_temperature",
    "nll",
    "reliability_diagram",
    "scaled_ece",
    "voxelwise_ece",
]
