"""Optional dependencies (extras): import them with one actionable line when they are missing.

Example:
    >>> np = require("numpy", extra="dev", purpose="this example")
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message is the one line to show the user."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming the install command of ``extra``.

    Raises:
        MissingExtraError: ``<purpose> needs <module>: pip install "medfocal[<extra>]"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f'{purpose} needs {module.split(".")[0]}: pip install "medfocal[{extra}]"'
        ) from None
