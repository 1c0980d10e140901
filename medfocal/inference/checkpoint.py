"""Read a self-describing medfocal checkpoint and rebuild its network (no training code needed).

The checkpoint contract: ``checkpoint["medfocal"]`` is the model card (:class:`medfocal.card.ModelCard`:
task, model spec, activation, class names, channels, spatial dims, roi size, preprocessing,
temperature, ...) and ``checkpoint["state_dict"]`` holds the network weights under the prefix
``"model."``. Checkpoints are loaded with ``torch.load(..., weights_only=True)``: no arbitrary pickle
code runs.

Example::

    card, model = load_checkpoint("best.ckpt")
    card.task, card.class_names          # ('segmentation', ['background', 'lesion'])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from medfocal.card import FORMAT_VERSION, ModelCard, card_of_checkpoint, load_checkpoint_file

__all__ = ["FORMAT_VERSION", "CheckpointInfo", "load_checkpoint", "read_checkpoint"]

#: the name inference used for the model card before :mod:`medfocal.card` (same class)
CheckpointInfo = ModelCard


def read_checkpoint(path: str | Path, trust: bool = False) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """Load ``path``: its :class:`~medfocal.card.ModelCard` and the network's state dict (prefix removed).

    Args:
        path: a ``.ckpt``/``.pt`` written by a medfocal LightningModule (or by hand, same keys).
        trust: fall back to ``weights_only=False`` (full unpickling) when the safe load fails. Only for
            checkpoints you made yourself.

    Raises:
        FileNotFoundError: no such file.
        ValueError: truncated or corrupt; holds Python objects the safe loader refuses (and not
            ``trust``); not a medfocal checkpoint (see :func:`medfocal.card.load_checkpoint_file`).
    """
    path = Path(path)
    ckpt = load_checkpoint_file(path, trust=trust)
    if isinstance(ckpt, Mapping) and "state_dict" not in ckpt:
        raise ValueError(
            f"{path}: not a medfocal checkpoint (expected keys 'medfocal' and 'state_dict', "
            f"got {list(ckpt)[:8]})"
        )
    info = card_of_checkpoint(ckpt, path)
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    if not state:
        raise ValueError(f"{path}: state_dict has no 'model.'-prefixed weights")
    return info, state


def load_checkpoint(path: str | Path, trust: bool = False) -> tuple[ModelCard, nn.Module]:
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
