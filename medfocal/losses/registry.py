"""A tiny name -> loss registry for configs (LightningCLI ``class_path`` works too)."""

from __future__ import annotations

import difflib

from torch import nn

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
from medfocal.losses.unified import UnifiedFocalLoss

__all__ = ["get", "names"]

_LOSSES: dict[str, type[nn.Module]] = {
    "focal": FocalLoss,
    "dice_focal": DiceFocalLoss,
    "jaccard_focal": JaccardFocalLoss,
    "focal_tversky": FocalTverskyLoss,
    "tversky_focal": TverskyFocalLoss,
    "unified_focal": UnifiedFocalLoss,
    "automated_focal": AutomatedFocalLoss,
    "flsd53_focal": FLSD53FocalLoss,
    "adafocal": AdaFocalLoss,
    "dice_ce": DiceCELoss,
}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").removesuffix("loss")


_BY_KEY = {_key(n): cls for n, cls in _LOSSES.items()} | {_key(c.__name__): c for c in _LOSSES.values()}


def names() -> list[str]:
    """Registered loss names, sorted."""
    return sorted(_LOSSES)


def get(name: str, **kwargs) -> nn.Module:
    """Build a loss by name: ``get("dice_focal", activation="softmax", gamma=2.0)``.

    Names are matched ignoring case, ``_``/``-`` and a ``Loss`` suffix, so ``"DiceFocalLoss"`` works too.
    Keyword arguments whose value is None are dropped (so a config may leave them empty).

    Raises:
        ValueError: unknown name, with the closest registered names.

    Example:
        >>> type(get("DiceFocalLoss", gamma=1.0)).__name__
        'DiceFocalLoss'
        >>> get("dice_focla")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown loss 'dice_focla'; did you mean 'dice_focal', ...? Available: adafocal, ...
    """
    cls = _BY_KEY.get(_key(name))
    if cls is None:
        close = difflib.get_close_matches(name.lower(), names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
        raise ValueError(f"unknown loss {name!r}{hint} Available: {', '.join(names())}")
    return cls(**{k: v for k, v in kwargs.items() if v is not None})
