"""The classification prediction head: class probabilities of the whole image -> a CSV row per case."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medfocal.inference.cases import Case
from medfocal.inference.heads.base import Network, Prediction, PredictionHead
from medfocal.metrics.temperature import calibrated_probabilities

__all__ = ["ClassificationHead"]


class ClassificationHead(PredictionHead):
    """``activation(logits / T)`` of the whole preprocessed image; no files, rows in ``predictions.csv``.

    Columns: ``prob_<class>`` per class, ``predicted_index``, ``predicted_class``. With TTA the class
    probabilities of the mirrored images are averaged (no mirroring to undo).
    """

    report_name = "predictions.csv"

    def run(self, network: Network, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(1, C)``."""
        logits = network(x)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        return calibrated_probabilities(logits, self.card.activation, self.card.temperature)

    def finish(self, case: Case, image: Any, output: torch.Tensor) -> Prediction:
        return Prediction(case.case_id, output.numpy())

    def report_row(self, prediction: Prediction) -> dict[str, Any]:
        names = self.card.class_names
        probs = prediction.probabilities
        row: dict[str, Any] = {f"prob_{n}": round(float(p), 6) for n, p in zip(names, probs)}
        k = int(np.argmax(probs))
        row["predicted_index"] = k
        row["predicted_class"] = names[k] if k < len(names) else str(k)
        return row
