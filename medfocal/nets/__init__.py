"""medfocal.nets: MONAI networks by name or class_path, focal heads, dense U-Net, multi-scale ResNet.

Importing the package registers every model with :func:`create_model`.
"""

from __future__ import annotations

from medfocal.nets.classification import (
    DenseNet121,
    DenseNet169,
    DenseNet201,
    ResNet18,
    ResNet34,
    ResNet50,
)
from medfocal.nets.deep_supervision import DeepSupervisionLoss
from medfocal.nets.dense_unet import DenseUNet
from medfocal.nets.detection import DetectionRetinaNet
from medfocal.nets.factory import (
    build_model,
    create_model,
    is_model,
    list_models,
    model_spec,
    register_model,
)
from medfocal.nets.heads import FocalHead, prior_bias, replace_classifier, set_prior
from medfocal.nets.multiscale import MultiScaleResNet
from medfocal.nets.segmentation import BasicUNet, DynUNet, UNet

__all__ = [
    "BasicUNet",
    "DeepSupervisionLoss",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
    "DenseUNet",
    "DetectionRetinaNet",
    "DynUNet",
    "FocalHead",
    "MultiScaleResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "UNet",
    "build_model",
    "create_model",
    "is_model",
    "list_models",
    "model_spec",
    "prior_bias",
    "register_model",
    "replace_classifier",
    "set_prior",
]
