"""Progress display of ``medfocal infer``: a rich bar, or nothing (``progress=False``, no cases)."""

from __future__ import annotations

__all__ = ["progress_bar"]


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self) -> None:
        return None


class _RichProgress(_NoProgress):
    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("infer"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
        )
        self._task = self._progress.add_task("infer", total=total)

    def __enter__(self) -> _RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self) -> None:
        self._progress.advance(self._task)


def progress_bar(enabled: bool, total: int) -> _NoProgress:
    """A context manager with ``advance()``: a rich progress bar of ``total`` cases when ``enabled``."""
    return _RichProgress(total) if enabled and total else _NoProgress()
