"""The data errors that the command line shows as a list of problems (no traceback)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DataSplitError", "DataValidationError"]


class DataValidationError(ValueError):
    """Raised with every problem found in a dataset; ``.problems`` lists them, one line each.

    ``medfocal fit|validate|test|predict`` print the list alone and exit 1; a layout raises it for a
    malformed ``dataset.json`` or manifest, the checks of :mod:`medfocal.data.checks` for bad files.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n  - ".join(self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the dataset:\n  - {lines}")


class DataSplitError(ValueError):
    """A split cannot serve the command asked (e.g. ``medfocal test`` on a test split without labels)."""
