"""The classification prediction head: class probabilities of the whole image -> a CSV row per case."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medfocal.inference.cases import Case
from medfocal.inference.heads.base import Network, Prediction, PredictionHead
from medfocal.metrics.operating_point import OperatingPoint, apply_operating_point
from medfocal.metrics.temperature import calibrated_probabilities

__all__ = ["ClassificationHead"]


class ClassificationHead(PredictionHead):
    """``activation(logits / T)`` of the whole preprocessed image; no files, rows in ``predictions.csv``.

    Columns: ``prob_<class>`` per class, ``prediction`` (the class decided by the card's operating
    point, :attr:`medfocal.card.ModelCard.operating_point`, e.g. a Youden threshold chosen on
    validation; argmax when the card has none), ``predicted_index`` and ``predicted_class`` (the same
    decision, as index and name; kept for older readers), ``decision_rule`` (``argmax`` or
    ``<rule>@<threshold>``). With TTA the class probabilities of the mirrored images are averaged (no
    mirroring to undo), then decided.
    """

    report_name = "predictions.csv"

    def run(self, network: Network, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(1, C)``."""
        logits = network(x)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        return calibrated_probabilities(logits, self.card.activation, self.card.temperature)

    def _point(self) -> OperatingPoint | None:
        """The card's operating point (None: argmax)."""
        data = self.card.operating_point
        return OperatingPoint.from_dict(data) if data is not None else None

    def finish(self, case: Case, image: Any, output: torch.Tensor) -> Prediction:
        return Prediction(case.case_id, output.numpy())

    def report_row(self, prediction: Prediction) -> dict[str, Any]:
        names = self.card.class_names
        probs = prediction.probabilities
        row: dict[str, Any] = {f"prob_{n}": round(float(p), 6) for n, p in zip(names, probs)}
        point = self._point()
        k = int(apply_operating_point(probs[None], point)[0]) if point is not None else int(np.argmax(probs))
        row["prediction"] = names[k] if k < len(names) else str(k)
        row["decision_rule"] = (
            "argmax" if point is None or point.threshold is None else f"{point.rule}@{point.threshold:.6g}"
        )
        row["predicted_index"] = k
        row["predicted_class"] = names[k] if k < len(names) else str(k)
        return row
