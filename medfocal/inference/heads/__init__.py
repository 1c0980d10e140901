"""Prediction heads: how one task kind's network output becomes predictions, files and report rows.

The predictor (``medfocal.inference.Predictor``) is the same for every task kind; it asks the head of
the card's task (``medfocal.tasks.registry.get_task(card.task).head_class()``) for everything that
differs. See :class:`PredictionHead` for the interface and ``docs/architecture.md`` for adding a kind.
"""

from __future__ import annotations

from medfocal.inference.heads.base import HeadOptions, Prediction, PredictionHead, head_for

__all__ = ["HeadOptions", "Prediction", "PredictionHead", "head_for"]
