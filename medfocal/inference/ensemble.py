"""Ensembles of checkpoints (cross-validation folds): mean of the members' temperature-scaled probabilities.

Members must agree on what their outputs mean and how their inputs are made (:data:`CARD_FIELDS`):
task, activation, classes, channels, dimensionality, preprocessing and patch size. Each member keeps its
own temperature: ``p = mean_m act(logits_m / T_m)``.

:class:`EnsembleModel` wraps the members as one network whose output, put through the ensemble's
activation with temperature 1, gives back that mean (it returns ``log p`` for softmax, ``logit p`` for
sigmoid), so the existing :class:`~medfocal.inference.Predictor` (sliding window, TTA, inversion,
writers) runs an ensemble unchanged::

    info, model = load_ensemble(["fold0.ckpt", "fold1.ckpt"])     # or a folder of *.ckpt
    Predictor(model, info).predict_folder("imagesTs", "out")

Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles",
NeurIPS 2017; Isensee et al., nnU-Net, Nature Methods 2021 (5-fold ensembles).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from medfocal.inference.checkpoint import CheckpointInfo, load_checkpoint

__all__ = [
    "CARD_FIELDS",
    "EnsembleModel",
    "check_compatible",
    "ensemble_probabilities",
    "expand_checkpoints",
    "load_ensemble",
]

CARD_FIELDS = (
    "task",
    "activation",
    "class_names",
    "num_classes",
    "in_channels",
    "spatial_dims",
    "preprocessing",
    "roi_size",
)
_EPS = 1e-7


def check_compatible(infos: Sequence[CheckpointInfo]) -> None:
    """Raise unless every member agrees with the first on :data:`CARD_FIELDS`.

    Raises:
        ValueError: no members, or ``"<field> differs: a.ckpt has X, b.ckpt has Y"`` for the first
            differing field.
    """
    if not infos:
        raise ValueError("ensemble: expected at least one checkpoint, got none")
    first = infos[0]
    for other in infos[1:]:
        for name in CARD_FIELDS:
            a, b = getattr(first, name), getattr(other, name)
            if a != b:
                raise ValueError(
                    f"ensemble: {name} differs: {first.path} has {a!r}, {other.path} has {b!r}; "
                    "ensemble only checkpoints trained for the same task with the same preprocessing"
                )


def ensemble_probabilities(
    logits: Sequence[torch.Tensor], temperatures: Sequence[float], activation: str
) -> torch.Tensor:
    """``mean_m act(logits_m / T_m)`` over members; ``act`` softmax over dim 1 or sigmoid.

    Raises:
        ValueError: counts differ, an unknown activation, or member shapes differ.
    """
    if len(logits) != len(temperatures) or not logits:
        raise ValueError(f"ensemble: {len(logits)} member outputs for {len(temperatures)} temperatures")
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"ensemble: activation must be 'softmax' or 'sigmoid', got {activation!r}")
    shapes = {tuple(x.shape) for x in logits}
    if len(shapes) > 1:
        raise ValueError(f"ensemble: member outputs differ in shape {sorted(shapes)}")
    total = None
    for x, t in zip(logits, temperatures):
        z = x.float() / float(t)
        p = torch.softmax(z, dim=1) if activation == "softmax" else torch.sigmoid(z)
        total = p if total is None else total + p
    return total / len(logits)


class EnsembleModel(nn.Module):
    """Members as one network: ``forward`` returns the log (softmax) or logit (sigmoid) of the mean
    temperature-scaled probability (deep-supervision lists: the full-resolution output)."""

    def __init__(self, members: Sequence[nn.Module], temperatures: Sequence[float], activation: str) -> None:
        super().__init__()
        if len(members) != len(temperatures):
            raise ValueError(f"ensemble: {len(members)} members for {len(temperatures)} temperatures")
        self.members = nn.ModuleList(members)
        self.temperatures = [float(t) for t in temperatures]
        self.activation = activation

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The mean probability of the members for input ``x``."""
        outs = []
        for member in self.members:
            out = member(x)
            outs.append(out[0] if isinstance(out, (list, tuple)) else out)
        return ensemble_probabilities(outs, self.temperatures, self.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.probabilities(x).clamp(_EPS, 1 - _EPS)
        return torch.log(p) if self.activation == "softmax" else torch.log(p) - torch.log1p(-p)


def _cv_members(folder: Path) -> list[Path]:
    """The best checkpoint of each fold listed in ``folder/cv_summary.json`` (``medfocal cv``)."""
    import json

    summary = json.loads((folder / "cv_summary.json").read_text())
    files = [Path(f["best_checkpoint"]) for f in summary.get("folds", []) if f.get("best_checkpoint")]
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise FileNotFoundError(
            f"{folder}/cv_summary.json: " + (f"missing fold checkpoints {missing}" if missing else "no folds")
        )
    return files


def expand_checkpoints(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """Checkpoint files from paths and folders (a folder gives its ``*.ckpt``, sorted; a ``medfocal cv``
    folder, with its ``cv_summary.json``, gives each fold's best checkpoint).

    Raises:
        FileNotFoundError: a path does not exist, or a folder holds no ``.ckpt``.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir() and (path / "cv_summary.json").is_file():
            out += _cv_members(path)  # a `medfocal cv` folder: each fold's best checkpoint
        elif path.is_dir():
            found = sorted(path.glob("*.ckpt"))
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no .ckpt checkpoint")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: checkpoint not found")
    return out


def load_ensemble(
    paths: Sequence[str | Path] | str | Path, trust: bool = False
) -> tuple[CheckpointInfo, nn.Module]:
    """Load members, check their cards agree, and return ``(info, model)`` for the Predictor.

    One checkpoint gives the plain model and its info. For several, ``info`` is the first member's with
    ``temperature=1.0`` (the members' temperatures are applied inside :class:`EnsembleModel`).

    Raises:
        FileNotFoundError / ValueError: as :func:`expand_checkpoints`, ``load_checkpoint`` and
            :func:`check_compatible`.
    """
    files = expand_checkpoints(paths)
    loaded = [load_checkpoint(f, trust=trust) for f in files]
    infos = [info for info, _ in loaded]
    check_compatible(infos)
    if len(loaded) == 1:
        return loaded[0]
    model = EnsembleModel([m for _, m in loaded], [i.temperature for i in infos], infos[0].activation)
    # a member's decision threshold was chosen for its own probabilities, not for the mean: an ensemble
    # keeps it only when every member has the same one (else argmax)
    points = [getattr(i, "operating_point", None) for i in infos]
    point = points[0] if all(p == points[0] for p in points) else None
    return dataclasses.replace(infos[0], temperature=1.0, operating_point=point), model.eval()
