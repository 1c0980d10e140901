"""Read a self-describing medfocal checkpoint and rebuild its network (no training code needed).

The checkpoint contract (written by ``medfocal.tasks``): ``checkpoint["medfocal"]`` is a dict of JSON
types (task, model spec, activation, class names, channels, spatial dims, roi size, preprocessing,
temperature) and ``checkpoint["state_dict"]`` holds the network weights under the prefix ``"model."``.
Checkpoints are loaded with ``torch.load(..., weights_only=True)``: no arbitrary pickle code runs.

Example::

    info, model = load_checkpoint("best.ckpt")
    info.task, info.class_names          # ('segmentation', ['background', 'lesion'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FORMAT_VERSION", "CheckpointInfo", "load_checkpoint", "read_checkpoint"]

FORMAT_VERSION = 1
_REQUIRED = ("task", "model", "activation", "num_classes", "in_channels", "spatial_dims")


@dataclass(frozen=True)
class CheckpointInfo:
    """What inference needs from ``checkpoint["medfocal"]``."""

    path: Path
    task: str
    model: dict[str, Any]
    activation: str
    class_names: list[str]
    num_classes: int
    in_channels: int
    spatial_dims: int
    roi_size: tuple[int, ...] | None
    preprocessing: dict[str, Any]
    temperature: float = 1.0

    @property
    def foreground_names(self) -> list[str]:
        """Names of the labels 1..K written into masks (softmax: classes 1.., sigmoid: every channel)."""
        if self.activation == "softmax":
            return list(self.class_names[1:])
        if len(self.class_names) == self.num_classes + 1:  # sigmoid with an explicit background name
            return list(self.class_names[1:])
        return list(self.class_names)

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], path: str | Path = "<dict>") -> CheckpointInfo:
        """Validate a ``checkpoint["medfocal"]`` dict; ``ValueError`` naming the file and the missing keys."""
        path = Path(path)
        missing = [k for k in _REQUIRED if meta.get(k) is None]
        if missing:
            raise ValueError(f"{path}: checkpoint['medfocal'] lacks (or has null) {missing}")
        version = int(meta.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path}: medfocal format_version {version}, this medfocal reads <= {FORMAT_VERSION}"
            )
        task = str(meta["task"])
        if task not in ("segmentation", "classification"):
            raise ValueError(f"{path}: task must be 'segmentation' or 'classification', got {task!r}")
        activation = str(meta["activation"])
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"{path}: activation must be 'softmax' or 'sigmoid', got {activation!r}")
        num_classes = int(meta["num_classes"])
        names = list(meta.get("class_names") or [f"class_{i}" for i in range(num_classes)])
        roi = meta.get("roi_size")
        temperature = float(meta.get("temperature", 1.0) or 1.0)
        if temperature <= 0:
            raise ValueError(f"{path}: temperature must be > 0, got {temperature}")
        return cls(
            path=path,
            task=task,
            model=dict(meta["model"]),
            activation=activation,
            class_names=[str(n) for n in names],
            num_classes=num_classes,
            in_channels=int(meta["in_channels"]),
            spatial_dims=int(meta["spatial_dims"]),
            roi_size=tuple(int(r) for r in roi) if roi else None,
            preprocessing=dict(meta.get("preprocessing") or {}),
            temperature=temperature,
        )


def read_checkpoint(path: str | Path, trust: bool = False) -> tuple[CheckpointInfo, dict[str, torch.Tensor]]:
    """Load ``path`` and return its :class:`CheckpointInfo` and the network's state dict (prefix removed).

    Args:
        path: a ``.ckpt``/``.pt`` written by a medfocal LightningModule (or by hand, same keys).
        trust: fall back to ``weights_only=False`` (full unpickling) when the safe load fails. Only for
            checkpoints you made yourself.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not loadable safely, or not a medfocal checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if not trust:
            raise ValueError(
                f"{path}: cannot be loaded with weights_only=True ({type(err).__name__}: {str(err)[:200]}); "
                "re-save it with plain types, or pass --trust-checkpoint if you made it yourself"
            ) from None
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, Mapping) or "medfocal" not in ckpt or "state_dict" not in ckpt:
        keys = list(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"{path}: not a medfocal checkpoint (expected keys 'medfocal' and 'state_dict', got {keys})"
        )
    info = CheckpointInfo.from_dict(ckpt["medfocal"], path)
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    if not state:
        raise ValueError(f"{path}: state_dict has no 'model.'-prefixed weights")
    return info, state


def load_checkpoint(path: str | Path, trust: bool = False) -> tuple[CheckpointInfo, nn.Module]:
    """Read a checkpoint, rebuild its network with ``medfocal.nets.build_model``, load weights, eval mode."""
    from medfocal.nets import build_model

    info, state = read_checkpoint(path, trust=trust)
    model = build_model(info.model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path}: weights do not fit the model spec {info.model.get('class_path', info.model)}: {err}"
        ) from None
    return info, model.eval()
