"""The prediction-head interface that every task kind implements for ``medfocal infer``.

A head is built once per :class:`~medfocal.inference.Predictor` from the model card, the inference
options and the preprocessing transforms. Per case the predictor calls, in this order:

0. :meth:`PredictionHead.check_input` on the preprocessed image (refuse what the model cannot take);
1. :meth:`PredictionHead.run` on the preprocessed image (and its mirror images with TTA; then
   :meth:`~PredictionHead.unflip` and :meth:`~PredictionHead.merge`) -> the output on the
   preprocessed grid (probabilities for segmentation and classification);
2. :meth:`~PredictionHead.finish` -> a :class:`Prediction` in the input's geometry (in a writer thread);
3. :meth:`~PredictionHead.output_paths` / :meth:`~PredictionHead.write` -> files, atomically;
4. :meth:`~PredictionHead.report_row` -> the columns of the case's row in ``report_name``;

and once after the last case :meth:`~PredictionHead.finalize` (files made from all cases, e.g. one
table of every case's boxes; a no-op by default).

Temperature and activation are applied by :func:`medfocal.metrics.temperature.calibrated_probabilities`
with the card's values, nowhere else.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from medfocal.card import ModelCard
from medfocal.inference.cases import Case

__all__ = ["HeadOptions", "Network", "Prediction", "PredictionHead", "head_for"]

Network = Callable[[torch.Tensor], Any]


@dataclass
class Prediction:
    """One case in its input geometry: ``label`` (segmentation, uint8) and/or class ``probabilities``.

    A head may subclass it to carry more (boxes, scores); the predictor only hands it back to the head.
    """

    case_id: str
    probabilities: np.ndarray
    label: np.ndarray | None = None
    affine: np.ndarray | None = None
    statistics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HeadOptions:
    """The inference options of :class:`~medfocal.inference.Predictor` that heads read.

    Args:
        roi_size: sliding-window size (already defaulted to the card's).
        overlap: sliding-window overlap in [0, 1).
        sw_batch_size: windows per forward pass.
        keep_largest: keep the largest connected component of each foreground class.
        min_size: remove connected components smaller than this many voxels.
        overlays: also write pictures of the predictions on the input (PNG), for kinds that have them.
    """

    roi_size: tuple[int, ...] | None = None
    overlap: float = 0.5
    sw_batch_size: int = 2
    keep_largest: bool = False
    min_size: int = 0
    overlays: bool = False


class PredictionHead(ABC):
    """How the network output of one task kind becomes predictions, files and report rows.

    Subclasses implement :meth:`run`, :meth:`finish` and :meth:`report_row`; the others have defaults
    for outputs without a spatial layout (a row per case, no files).

    Args:
        card: the checkpoint's model card.
        options: the inference options.
        transforms: the preprocessing (``medfocal.data.inference_transforms`` of the card's spec),
            invertible, for heads that map outputs back to the input grid.
    """

    #: CSV written in the output folder (``predict_folder(report_name=None)``)
    report_name: ClassVar[str] = "report.csv"
    #: :meth:`finish` takes the output on the model's device (a GPU) and returns CPU results, so
    #: ``predict_folder`` does not copy the output back first (segmentation: the inversion to the input
    #: grid then resamples on the GPU); False: the output arrives on the CPU
    finish_on_device: ClassVar[bool] = False

    def __init__(self, card: ModelCard, options: HeadOptions, transforms: Any = None) -> None:
        self.card = card
        self.options = options
        self.transforms = transforms

    def check_input(self, x: torch.Tensor, input_shape: tuple[int, ...] | None = None) -> None:  # noqa: B027
        """Refuse a preprocessed batch ``x`` ``(1, C_in, *spatial)`` the model cannot take, before any
        network pass (default: anything goes). ``input_shape``: the image's spatial shape on disk.

        Raises:
            ValueError: one line saying what the model expects and what the image is.
        """

    @abstractmethod
    def run(self, network: Network, x: torch.Tensor) -> torch.Tensor:
        """The output of one pass over a preprocessed batch ``x`` ``(1, C_in, *spatial)``."""

    def tta_flips(self, x: torch.Tensor) -> list[tuple[int, ...]]:
        """The mirrorings of test-time augmentation: every subset of the spatial axes (2^dims)."""
        dims = list(range(2, x.ndim))
        return [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]

    def unflip(self, output: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        """Undo the input mirroring ``axes`` on an output (default: none to undo, e.g. class scores)."""
        return output

    def merge(self, outputs: Iterable[torch.Tensor]) -> torch.Tensor:
        """Combine the outputs of the TTA passes, computed one by one as ``outputs`` is iterated
        (default: their mean, as a running sum: one output in memory besides the total)."""
        total, n = None, 0
        for out in outputs:
            total = out if total is None else total + out
            n += 1
        if total is None:
            raise ValueError("merge: no outputs")
        return total / n

    @abstractmethod
    def finish(self, case: Case, image: Any, output: torch.Tensor) -> Prediction:
        """A :class:`Prediction` in the input's geometry from the output ``(C, ...)`` (batch axis gone)."""

    def output_paths(self, case: Case, output_dir: Path, save_probabilities: str | None) -> list[Path]:
        """The files :meth:`write` makes for ``case``; empty: the report row alone says a case is done."""
        return []

    def write(self, case: Case, prediction: Prediction, paths: list[Path]) -> None:  # noqa: B027
        """Write ``prediction`` to ``paths`` (atomically; see ``medfocal.inference.writer``); called
        only when :meth:`output_paths` gave some (the default gives none)."""

    @abstractmethod
    def report_row(self, prediction: Prediction) -> dict[str, Any]:
        """The task's columns of the case's report row."""

    def finalize(self, output_dir: Path, rows: list[dict[str, Any]]) -> list[Path]:
        """Once after the last case (also when every case was skipped on resume): write the files made
        from all cases together (atomically) and return them. ``rows`` are the report rows, in case order.
        Default: nothing to do."""
        return []


def head_for(card: ModelCard, options: HeadOptions, transforms: Any = None) -> PredictionHead:
    """The prediction head of ``card.task`` (from ``medfocal.tasks.registry``), built for this card.

    Raises:
        ValueError: an unregistered task, or a head class that is not a :class:`PredictionHead`.
    """
    from medfocal.tasks.registry import get_task

    cls = get_task(card.task).head_class()
    if not (isinstance(cls, type) and issubclass(cls, PredictionHead)):
        raise ValueError(f"task {card.task!r}: head {cls!r} is not a PredictionHead subclass")
    return cls(card, options, transforms)
