"""medfocal.tasks: LightningModules (network + loss + metrics) and their callbacks.

``SegmentationModule`` and ``ClassificationModule`` take any network and any medfocal loss; the
optimizer and LR scheduler are injected (YAML ``optimizer:`` blocks or Python callables); checkpoints
carry ``checkpoint["medfocal"]`` so inference can run from the checkpoint alone. ``GammaLogger`` logs
the adaptive gamma of ``AutomatedFocalLoss``; ``TemperatureScaling`` and ``AdaFocalCalibration`` (in
``medfocal.tasks.calibration``) calibrate after validation.
"""

from __future__ import annotations

from medfocal.tasks.calibration import AdaFocalCalibration, TemperatureScaling
from medfocal.tasks.callbacks import GammaLogger
from medfocal.tasks.classification import ClassificationModule
from medfocal.tasks.detection import DetectionModule
from medfocal.tasks.segmentation import SegmentationModule

__all__ = [
    "AdaFocalCalibration",
    "ClassificationModule",
    "DetectionModule",
    "GammaLogger",
    "SegmentationModule",
    "TemperatureScaling",
]
