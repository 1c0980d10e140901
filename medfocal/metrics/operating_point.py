"""Decision rule of a classifier chosen on validation: argmax, Youden's J, or a target sensitivity.

Class-weighted or focal training shifts the scores: argmax of a model trained with ``alpha`` is not the
point a clinician would pick. The operating point is chosen on the validation split (never on test),
stored beside the temperature, and applied to new probabilities.

Rules (binary tasks only, except ``argmax``); ``score`` is the positive-class probability and a case
is called positive when ``score >= threshold``:

- ``"argmax"``: the class of highest probability (binary: ``threshold = 0.5``);
- ``"youden"``: the ROC threshold maximising ``J = sensitivity + specificity - 1`` (the first, i.e.
  highest, threshold on ties);
- ``"sensitivity"``: the highest threshold whose validation sensitivity is ``>= target_sensitivity``
  (the most specific rule that keeps that sensitivity).

Thresholds come from ``sklearn.metrics.roc_curve`` (every distinct score is a candidate).

Example::

    point = choose_operating_point(val_probs, val_labels, rule="youden")
    labels = apply_operating_point(test_probs, point)
    report = operating_point_report(test_probs, test_labels, point)   # {"argmax": {...}, "chosen": {...}}

Youden, "Index for rating diagnostic tests", Cancer 3(1):32-35, 1950.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_curve

__all__ = [
    "RULES",
    "OperatingPoint",
    "apply_operating_point",
    "choose_operating_point",
    "classification_scores",
    "operating_point_report",
]

RULES = ("argmax", "youden", "sensitivity")


@dataclass(frozen=True)
class OperatingPoint:
    """A decision rule: ``rule``, the binary ``threshold`` (None for multi-class argmax), the
    validation ``sensitivity``/``specificity`` it had when chosen (binary only), and ``validation``:
    :func:`classification_scores` at this point on the validation set it was chosen on, with ``n``
    (the number of validation cases); None when chosen without data."""

    rule: str = "argmax"
    threshold: float | None = None
    target_sensitivity: float | None = None
    val_sensitivity: float | None = None
    val_specificity: float | None = None
    validation: dict[str, float] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (for the model card)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperatingPoint:
        """Inverse of :meth:`to_dict`; unknown rule or key -> ``ValueError``."""
        data = dict(data)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"operating point: unknown keys {unknown} (expected OperatingPoint.to_dict())")
        point = cls(**data)
        if point.rule not in RULES:
            raise ValueError(f"operating point rule: expected one of {RULES}, got {point.rule!r}")
        return point


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _positive_score(probs: np.ndarray) -> np.ndarray | None:
    """Positive-class score of binary probabilities ``(N,)``, ``(N, 1)``, ``(N, 2)``; None if multi-class."""
    if probs.ndim == 1:
        return probs
    if probs.ndim == 2 and probs.shape[1] == 1:
        return probs[:, 0]
    if probs.ndim == 2 and probs.shape[1] == 2:
        return probs[:, 1]
    return None


def choose_operating_point(
    probs: Any, labels: Any, rule: str = "youden", target_sensitivity: float = 0.9
) -> OperatingPoint:
    """Choose the decision rule on validation probabilities ``(N, C)`` (or binary ``(N,)``) and labels.

    Raises:
        ValueError: unknown rule, a threshold rule on a multi-class task, a single class present in
            ``labels``, or ``target_sensitivity`` outside (0, 1].
    """
    point = _choose(probs, labels, rule, target_sensitivity)
    y = _numpy(labels).astype(np.int64).reshape(-1)
    scores = classification_scores(y, apply_operating_point(probs, point))
    return replace(point, validation={**scores, "n": float(len(y))})


def _choose(probs: Any, labels: Any, rule: str, target_sensitivity: float) -> OperatingPoint:
    if rule not in RULES:
        raise ValueError(f"operating point rule: expected one of {RULES}, got {rule!r}")
    p, y = _numpy(probs).astype(np.float64), _numpy(labels).astype(np.int64).reshape(-1)
    score = _positive_score(p)
    if rule == "argmax":
        return OperatingPoint("argmax", 0.5 if score is not None else None)
    if score is None:
        raise ValueError(
            f"operating point rule {rule!r} needs a binary task (a threshold on the positive class), got "
            f"probabilities {p.shape}; multi-class tasks use rule='argmax'"
        )
    if len(np.unique(y)) < 2:
        raise ValueError(f"operating point rule {rule!r}: validation labels hold one class only")
    fpr, tpr, thresholds = roc_curve(y, score, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # sklearn's first threshold is +inf (nothing positive)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if rule == "youden":
        i = int(np.argmax(tpr - fpr))
        return OperatingPoint("youden", float(thresholds[i]), None, float(tpr[i]), float(1 - fpr[i]))
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity: expected a value in (0, 1], got {target_sensitivity}")
    i = int(np.argmax(tpr >= target_sensitivity))  # thresholds decrease, so the first is the highest
    return OperatingPoint(
        "sensitivity", float(thresholds[i]), float(target_sensitivity), float(tpr[i]), float(1 - fpr[i])
    )


def apply_operating_point(probs: Any, point: OperatingPoint) -> np.ndarray:
    """Predicted class indices ``(N,)`` of probabilities under ``point``."""
    p = _numpy(probs).astype(np.float64)
    score = _positive_score(p)
    if score is None:
        if point.rule != "argmax":
            raise ValueError(f"operating point {point.rule!r} is binary, got probabilities {p.shape}")
        return p.argmax(axis=1)
    threshold = 0.5 if point.threshold is None else point.threshold
    return (score >= threshold).astype(np.int64)


def classification_scores(labels: Any, predicted: Any) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 (and sensitivity/specificity when binary)."""
    y, yhat = _numpy(labels).astype(np.int64).reshape(-1), _numpy(predicted).astype(np.int64).reshape(-1)
    out = {
        "accuracy": float((y == yhat).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, yhat)),
        "f1_macro": float(f1_score(y, yhat, average="macro", zero_division=0)),
    }
    if set(np.unique(np.concatenate([y, yhat]))) <= {0, 1}:
        pos, neg = y == 1, y == 0
        out["sensitivity"] = float((yhat[pos] == 1).mean()) if pos.any() else float("nan")
        out["specificity"] = float((yhat[neg] == 0).mean()) if neg.any() else float("nan")
    return out


def operating_point_report(probs: Any, labels: Any, point: OperatingPoint) -> dict[str, dict[str, float]]:
    """Scores at argmax and at ``point``: ``{"argmax": {...}, "chosen": {...}}``."""
    argmax = apply_operating_point(probs, OperatingPoint("argmax"))
    chosen = apply_operating_point(probs, point)
    return {"argmax": classification_scores(labels, argmax), "chosen": classification_scores(labels, chosen)}
