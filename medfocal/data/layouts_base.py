"""The ``Layout`` interface of the dataset layouts and the path checks they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["Layout"]

_SPLITS = ("train", "val", "test")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: expected a folder, {path} does not exist or is not a folder")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected a file, {path} does not exist")
    return path


class Layout:
    """Base class of dataset layouts; subclasses implement :meth:`records`."""

    def records(self) -> list[dict[str, Any]]:
        """All items of the dataset as dicts (see the module docstring)."""
        raise NotImplementedError

    def class_names(self) -> list[str] | None:
        """Class names declared by the layout itself (dataset.json, folders), else ``None``."""
        return None

    def in_channels(self) -> int | None:
        """Number of image channels when the layout declares it, else ``None``."""
        return None

    def describe(self) -> str:
        """One line naming the layout and its root, for reports."""
        return f"{type(self).__name__}({getattr(self, 'root', '')})"
