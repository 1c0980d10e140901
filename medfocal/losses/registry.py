"""A tiny name -> loss registry for configs (LightningCLI ``class_path`` works too).

Loss classes register themselves where they are defined, as the networks do with ``@register_model``::

    @register_loss("dice_focal")
    class DiceFocalLoss(nn.Module): ...

This module imports no loss module (they import it); importing ``medfocal.losses`` registers them all.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import TypeVar

from torch import nn

__all__ = ["get", "list_losses", "names", "register_loss"]

_REGISTRY: dict[str, type[nn.Module]] = {}

T = TypeVar("T", bound=type)


def register_loss(name: str) -> Callable[[T], T]:
    """Register a loss class under ``name`` (lower case, ``_`` between words, no ``Loss`` suffix).

    Raises:
        ValueError: when ``name`` is already registered to another class.
    """

    def decorator(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"loss name {name!r} is already registered to {_REGISTRY[name]!r}")
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_losses(pattern: str = "*") -> list[str]:
    """Sorted registered loss names matching a shell wildcard ``pattern`` (``"*focal*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def names() -> list[str]:
    """All registered loss names, sorted (same as :func:`list_losses`; kept for existing callers)."""
    return list_losses()


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").removesuffix("loss")


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
    by_key = {_key(c.__name__): c for c in _REGISTRY.values()} | {_key(n): c for n, c in _REGISTRY.items()}
    cls = by_key.get(_key(name))
    if cls is None:
        close = difflib.get_close_matches(name.lower(), list_losses(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
        raise ValueError(f"unknown loss {name!r}{hint} Available: {', '.join(list_losses())}")
    return cls(**{k: v for k, v in kwargs.items() if v is not None})
