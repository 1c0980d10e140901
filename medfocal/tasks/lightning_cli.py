"""Moved: :class:`MedfocalCLI` lives in :mod:`medfocal.cli.lightning` (the command-line layer).

This name stays importable for code and configs written against ``medfocal.tasks.lightning_cli``.
"""

from __future__ import annotations

from medfocal.cli.lightning import DEFAULT_TRAINER, MedfocalCLI

__all__ = ["DEFAULT_TRAINER", "MedfocalCLI"]
