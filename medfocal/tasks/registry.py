"""Task kinds: the one place where a kind of task (segmentation, classification, ...) is plugged in.

A task kind is three things, found by import path so that this module stays light (no Lightning, no
MONAI import until a kind is used):

- ``module``: its LightningModule (a subclass of ``medfocal.tasks._base.MedfocalModule`` whose class
  attribute ``task`` is the kind's name). It owns network + loss + metrics and writes the
  :class:`~medfocal.card.ModelCard` (``task_card_options()`` adds kind-specific fields).
- ``head``: its prediction head (a subclass of ``medfocal.inference.heads.PredictionHead``): how the
  network's logits on a preprocessed image become outputs (probabilities -> label map; class
  probabilities -> a report row; boxes ...), how they go back to the input's geometry, which files
  they are written to and which report columns they give.
- ``name``: the value of ``ModelCard.task``; ``medfocal infer`` dispatches on it.

Adding a kind (say detection) is adding ``medfocal/tasks/detection.py`` (the LightningModule),
``medfocal/inference/heads/detection.py`` (the head, with its writers) and one line in ``_BUILTIN``
below; the predictor is not edited. Code outside medfocal registers its own with :func:`register_task`.

Example:
    >>> get_task("segmentation").head
    'medfocal.inference.heads.segmentation.SegmentationHead'
    >>> task_names()
    ['classification', 'detection', 'segmentation']
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["TaskKind", "get_task", "register_task", "task_names"]


@dataclass(frozen=True)
class TaskKind:
    """A task kind: its name (``ModelCard.task``), LightningModule and prediction head by import path.

    Args:
        name: the kind's name, e.g. ``"segmentation"``.
        module: dotted path of the LightningModule class
            (``"medfocal.tasks.segmentation.SegmentationModule"``).
        head: dotted path of the prediction head class
            (``"medfocal.inference.heads.segmentation.SegmentationHead"``).
        description: one line for ``--help`` and listings.
    """

    name: str
    module: str
    head: str
    description: str = ""

    def module_class(self) -> type:
        """The LightningModule class (imported now)."""
        return _import(self.module, f"task {self.name!r}: module")

    def head_class(self) -> type:
        """The prediction head class (imported now)."""
        return _import(self.head, f"task {self.name!r}: head")


# the task kinds of medfocal; a new kind is one line here (plus its two files)
_BUILTIN = (
    TaskKind(
        "segmentation",
        module="medfocal.tasks.segmentation.SegmentationModule",
        head="medfocal.inference.heads.segmentation.SegmentationHead",
        description="voxel/pixel labels: masks in the input's geometry, volumes per class",
    ),
    TaskKind(
        "classification",
        module="medfocal.tasks.classification.ClassificationModule",
        head="medfocal.inference.heads.classification.ClassificationHead",
        description="one label per image: class probabilities in a CSV",
    ),
    TaskKind(
        "detection",
        module="medfocal.tasks.detection.DetectionModule",
        head="medfocal.inference.heads.detection.DetectionHead",
        description="boxes, labels and scores per image: boxes.csv/JSON, counts per class",
    ),
)
_TASKS: dict[str, TaskKind] = {kind.name: kind for kind in _BUILTIN}


def register_task(kind: TaskKind, replace: bool = False) -> TaskKind:
    """Add a task kind (from a plug-in package); ``ValueError`` if the name is taken and not ``replace``."""
    if not isinstance(kind, TaskKind):
        raise ValueError(f"register_task: expected a TaskKind, got {type(kind).__name__}")
    if kind.name in _TASKS and not replace and _TASKS[kind.name] != kind:
        raise ValueError(f"register_task: task {kind.name!r} is already registered ({_TASKS[kind.name]})")
    _TASKS[kind.name] = kind
    return kind


def get_task(name: str) -> TaskKind:
    """The registered :class:`TaskKind` called ``name``; ``ValueError`` with the known names otherwise."""
    kind = _TASKS.get(str(name))
    if kind is None:
        close = difflib.get_close_matches(str(name), list(_TASKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task {name!r}: expected one of {task_names()}{hint}")
    return kind


def task_names() -> list[str]:
    """The registered task kinds, sorted."""
    return sorted(_TASKS)


def _import(path: str, what: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{what} {path!r} does not import ({err})") from err
