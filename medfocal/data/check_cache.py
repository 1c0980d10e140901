"""Remember which files passed the content checks (NaN/Inf voxels, label values) between runs.

``medfocal fit`` with ``check: quick`` loads every image and label once to look for NaN/Inf voxels and
invalid label values, then writes what it found here, so that the next run reads headers only. An entry
is keyed by the file's absolute path, size and modification time (and, for labels, the preprocessing
fields that change label values): editing or replacing a file checks it again. Files with problems are
never remembered, so their message comes back on every run.

The cache is one JSON file, ``$MEDFOCAL_CACHE_DIR/data_checks.json`` (default
``$XDG_CACHE_HOME/medfocal`` or ``~/.cache/medfocal``), written atomically; a missing, unreadable or
unwritable cache only means the files are read again.

Example:
    >>> cache = ContentCache(None)  # no file: remembers for this run only
    >>> cache.get("image", __file__) is None
    True
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from medfocal.io import atomic_path

__all__ = ["ContentCache", "default_cache_file"]

_MAX_ENTRIES = 200_000  # beyond this the oldest half is dropped (a JSON object keeps insertion order)


def default_cache_file() -> Path:
    """``$MEDFOCAL_CACHE_DIR/data_checks.json``, else under ``$XDG_CACHE_HOME/medfocal`` or ``~/.cache``."""
    root = os.environ.get("MEDFOCAL_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "medfocal")
    return Path(root) / "data_checks.json"


class ContentCache:
    """A JSON map ``kind|path|size|mtime_ns|extra -> result`` of files that passed a content check.

    Args:
        path: the JSON file (``None``: in memory only).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, Any] = {}
        self._dirty = False
        if self.path is not None and self.path.is_file():
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(self.path.read_text())
                if isinstance(loaded, dict):
                    self._entries = loaded

    @staticmethod
    def key(kind: str, path: str | Path, extra: str = "") -> str | None:
        """The entry key of ``path`` as it is now (``None`` when it cannot be stat'ed)."""
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return f"{kind}|{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{extra}"

    def get(self, kind: str, path: str | Path, extra: str = "") -> Any:
        """The remembered result of ``path`` (``None`` when unknown or changed since)."""
        key = self.key(kind, path, extra)
        return None if key is None else self._entries.get(key)

    def put(self, kind: str, path: str | Path, value: Any, extra: str = "") -> None:
        """Remember ``value`` (JSON) for ``path`` as it is now."""
        key = self.key(kind, path, extra)
        if key is not None and self._entries.get(key) != value:
            self._entries[key] = value
            self._dirty = True

    def save(self) -> None:
        """Write the file when something was added (never raises: a cache is optional)."""
        if self.path is None or not self._dirty:
            return
        on_disk = ContentCache(self.path)._entries  # another run may have added entries meanwhile
        self._entries = {**on_disk, **self._entries}
        if len(self._entries) > _MAX_ENTRIES:
            keep = list(self._entries.items())[len(self._entries) // 2 :]
            self._entries = dict(keep)
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(self._entries))
            self._dirty = False
