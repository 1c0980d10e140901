"""medfocal.losses: focal-family losses for class-imbalanced segmentation and classification.

Every loss is an ``nn.Module`` with ``forward(logits, target) -> Tensor``, takes logits
``(B, C, *spatial)`` (2D or 3D) or ``(B, C)``, class-index / one-hot / multi-label / soft targets, and one
``activation`` argument (:class:`Activation`: ``"softmax"`` or ``"sigmoid"``) honoured by every term.
Losses register by name with ``@register_loss``; :func:`get` builds one by name, :func:`list_losses`
lists the names.
"""

from __future__ import annotations

from medfocal.losses.activation import Activation
from medfocal.losses.automated import AutomatedFocalLoss
from medfocal.losses.calibrated import AdaFocalLoss, FLSD53FocalLoss
from medfocal.losses.focal import FocalLoss
from medfocal.losses.hybrid import (
    DiceCELoss,
    DiceFocalLoss,
    FocalTverskyLoss,
    JaccardFocalLoss,
    TverskyFocalLoss,
)
from medfocal.losses.registry import get, list_losses, names, register_loss
from medfocal.losses.unified import UnifiedFocalLoss
from medfocal.losses.weights import class_balanced_alpha, set_class_counts

__all__ = [
    "Activation",
    "AdaFocalLoss",
    "AutomatedFocalLoss",
    "DiceCELoss",
    "DiceFocalLoss",
    "FLSD53FocalLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "JaccardFocalLoss",
    "TverskyFocalLoss",
    "UnifiedFocalLoss",
    "class_balanced_alpha",
    "get",
    "list_losses",
    "names",
    "register_loss",
    "set_class_counts",
]
