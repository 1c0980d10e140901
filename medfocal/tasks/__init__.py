"""medfocal.tasks: one plug-in per task kind (LightningModule + prediction head), and their callbacks.

``SegmentationModule`` and ``ClassificationModule`` take any network and any medfocal loss; the
optimizer and LR scheduler are injected (YAML ``optimizer:`` blocks or Python callables); checkpoints
carry the model card (``medfocal.card.ModelCard`` in ``checkpoint["medfocal"]``) so inference can run
from the checkpoint alone. ``medfocal.tasks.registry`` lists the task kinds and their prediction
heads. ``GammaLogger`` logs the adaptive gamma of ``AutomatedFocalLoss``; ``TemperatureScaling`` and
``AdaFocalCalibration`` (in ``medfocal.tasks.calibration``) calibrate after validation;
``OperatingPoint`` (``medfocal.tasks.operating_point``) chooses a classifier's decision rule on validation.

The names below are imported on first use, so ``medfocal.tasks.registry`` (read by ``medfocal infer``)
does not pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfocal.tasks.calibration import AdaFocalCalibration, TemperatureScaling
    from medfocal.tasks.callbacks import GammaLogger
    from medfocal.tasks.classification import ClassificationModule
    from medfocal.tasks.detection import DetectionModule
    from medfocal.tasks.operating_point import OperatingPoint
    from medfocal.tasks.segmentation import SegmentationModule

__all__ = [
    "AdaFocalCalibration",
    "ClassificationModule",
    "DetectionModule",
    "GammaLogger",
    "OperatingPoint",
    "SegmentationModule",
    "TemperatureScaling",
]

_WHERE = {
    "AdaFocalCalibration": "medfocal.tasks.calibration",
    "ClassificationModule": "medfocal.tasks.classification",
    "DetectionModule": "medfocal.tasks.detection",
    "GammaLogger": "medfocal.tasks.callbacks",
    "OperatingPoint": "medfocal.tasks.operating_point",
    "SegmentationModule": "medfocal.tasks.segmentation",
    "TemperatureScaling": "medfocal.tasks.calibration",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'medfocal.tasks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
