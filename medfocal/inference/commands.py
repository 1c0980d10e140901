"""Moved: ``medfocal infer`` / ``medfocal evaluate`` live in :mod:`medfocal.cli.infer` and
:mod:`medfocal.cli.evaluate`; these names stay importable for older code.
"""

from __future__ import annotations

from medfocal.cli.evaluate import main as main_evaluate
from medfocal.cli.evaluate import parser as evaluate_parser
from medfocal.cli.infer import main as main_infer
from medfocal.cli.infer import parser as infer_parser

__all__ = ["evaluate_parser", "infer_parser", "main_evaluate", "main_infer"]
