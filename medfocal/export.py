"""Export a medfocal checkpoint's network to ONNX or TorchScript, with its model card inside the file.

The card (what inference needs: task, classes, activation, preprocessing, roi size, temperature, as in
``checkpoint["medfocal"]``) is stored as one JSON string: ONNX ``metadata_props`` key
``medfocal_card``, TorchScript extra file ``medfocal_card.json``. Batch and spatial axes are dynamic.

:func:`load_model` reads any of the three (checkpoint, ``.onnx``, TorchScript) and returns
``(CheckpointInfo, network)``; the network is an ``nn.Module`` (for ONNX: :class:`OnnxNetwork`, which
runs onnxruntime), so :class:`~medfocal.inference.predictor.Predictor` runs it through the same
preprocessing, sliding window and inversion::

    export_onnx("best.ckpt", "model.onnx")
    info, net = load_model("model.onnx")
    Predictor(net, info).predict_folder("imagesTs", "out")

ONNX needs the ``onnx`` extra (``pip install "medfocal[onnx]"``: onnx, onnxruntime).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfocal._optional import require
from medfocal.inference.checkpoint import CheckpointInfo, load_checkpoint

__all__ = [
    "CARD_FILE",
    "CARD_KEY",
    "OnnxNetwork",
    "card_dict",
    "export_onnx",
    "export_torchscript",
    "load_model",
    "load_onnx",
    "load_torchscript",
]

CARD_KEY = "medfocal_card"  # ONNX metadata_props key
CARD_FILE = "medfocal_card.json"  # TorchScript _extra_files name
_AXES = ("x", "y", "z")


def card_dict(info: CheckpointInfo) -> dict[str, Any]:
    """The model card as JSON types (``ModelCard.to_dict``), readable by ``ModelCard.from_dict``."""
    return json.loads(json.dumps(info.to_dict()))


class _FirstOutput(nn.Module):
    """The full-resolution output only (deep-supervision nets return a list of heads)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def _example_input(info: CheckpointInfo, spatial_size: tuple[int, ...] | None) -> torch.Tensor:
    size = spatial_size or info.roi_size or (32,) * info.spatial_dims
    if len(size) != info.spatial_dims:
        raise ValueError(f"spatial_size: expected {info.spatial_dims} values, got {list(size)}")
    return torch.randn(1, info.in_channels, *size)


def _prepare(checkpoint: str | Path, trust: bool, spatial_size) -> tuple[CheckpointInfo, nn.Module, Any]:
    info, net = load_checkpoint(checkpoint, trust=trust)
    return info, _FirstOutput(net).eval(), _example_input(info, spatial_size)


def export_onnx(
    checkpoint: str | Path,
    out_path: str | Path,
    spatial_size: tuple[int, ...] | None = None,
    opset: int = 17,
    trust: bool = False,
    check: bool = True,
) -> Path:
    """Write the checkpoint's network as ONNX (dynamic batch and spatial axes) with the card inside.

    Args:
        checkpoint: a medfocal checkpoint.
        out_path: the ``.onnx`` file (written atomically).
        spatial_size: the example input's size for tracing (default: the card's roi size, else 32 per
            axis); other sizes work at run time.
        opset: ONNX opset.
        trust: allow a full unpickle of the checkpoint (own checkpoints only).
        check: run onnxruntime on a batch of 2 at twice the example's size and compare with torch
            (max abs difference of the logits < 1e-4 x their largest magnitude, at least 1e-4),
            raising ``ValueError`` otherwise.

    Raises:
        MissingExtraError: onnx/onnxruntime not installed (one line with the install command).
    """
    onnx = require("onnx", "onnx", "ONNX export")
    if check:
        require("onnxruntime", "onnx", "ONNX export")
    from medfocal.inference.writer import atomic_path

    info, net, example = _prepare(checkpoint, trust, spatial_size)
    out_path = Path(out_path)
    with torch.no_grad():
        out_ndim = net(example).ndim
    axes_in = {0: "batch", **{i + 2: _AXES[i] for i in range(info.spatial_dims)}}
    axes_out = {0: "batch", **({i + 2: _AXES[i] for i in range(info.spatial_dims)} if out_ndim > 2 else {})}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the TorchScript-based exporter is deprecated; dynamo needs onnxscript
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes_in, "logits": axes_out},
            opset_version=opset,
        )
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = CARD_KEY, json.dumps(card_dict(info))
        model.producer_name = "medfocal"
        onnx.save(model, str(tmp))
        if check:
            _check(OnnxNetwork(tmp), net, example, out_path)
    return out_path


def export_torchscript(
    checkpoint: str | Path,
    out_path: str | Path,
    spatial_size: tuple[int, ...] | None = None,
    trust: bool = False,
    check: bool = True,
) -> Path:
    """Write the checkpoint's network as a traced TorchScript module with the card as an extra file.

    Arguments as :func:`export_onnx`; ``check`` compares the traced module with the network on a batch
    of 2 at a different spatial size.
    """
    from medfocal.inference.writer import atomic_path

    info, net, example = _prepare(checkpoint, trust, spatial_size)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        traced = torch.jit.trace(net, example, check_trace=False)
        with atomic_path(out_path) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files={CARD_FILE: json.dumps(card_dict(info))})
            if check:
                _check(torch.jit.load(str(tmp)), net, example, out_path)
    return out_path


def _check(exported: nn.Module, net: nn.Module, example: torch.Tensor, out_path: Path) -> None:
    """Compare on a batch of 2 at double the example's spatial size (dynamic axes must really work);
    at the example's size for networks that only take that size (e.g. a fixed-size classifier)."""
    x = torch.randn(2, example.shape[1], *(2 * s for s in example.shape[2:]))
    with torch.no_grad():
        try:
            want = net(x)
        except RuntimeError:
            x = torch.cat([example, example])
            want = net(x)
        got = exported(x)
    diff = float((want - got).abs().max()) if want.shape == got.shape else float("inf")
    if diff > 1e-4 * max(1.0, float(want.abs().max())):  # relative: untrained logits can be ~1e4
        raise ValueError(
            f"{out_path}: exported network differs from the checkpoint's on input {tuple(x.shape)} "
            f"(shapes {tuple(want.shape)} vs {tuple(got.shape)}, max abs difference {diff:.3g})"
        )


class OnnxNetwork(nn.Module):
    """An ONNX model run by onnxruntime, called like the torch network: ``(B, C_in, *spatial)`` tensor in,
    logits tensor out (on the input's device, float32).

    Args:
        path: the ``.onnx`` file.
        providers: onnxruntime execution providers (default: CUDA when available, then CPU).
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None) -> None:
        super().__init__()
        ort = require("onnxruntime", "onnx", "running an ONNX model")
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).numpy()
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(array)})[0]
        return torch.from_numpy(out).to(x.device)

    @property
    def card(self) -> dict[str, Any]:
        """The card stored in the file (``ValueError`` if there is none)."""
        meta = self.session.get_modelmeta().custom_metadata_map
        if CARD_KEY not in meta:
            raise ValueError(f"{self.path}: no '{CARD_KEY}' metadata; export it with medfocal export")
        return json.loads(meta[CARD_KEY])


def load_onnx(path: str | Path, providers: list[str] | None = None) -> tuple[CheckpointInfo, OnnxNetwork]:
    """``(info, network)`` of an ONNX file written by :func:`export_onnx`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model not found")
    net = OnnxNetwork(path, providers)
    return CheckpointInfo.from_dict(net.card, path), net


def load_torchscript(path: str | Path) -> tuple[CheckpointInfo, nn.Module]:
    """``(info, module)`` of a TorchScript file written by :func:`export_torchscript` (eval mode, CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model not found")
    extra = {CARD_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[CARD_FILE]:
        raise ValueError(f"{path}: TorchScript file without '{CARD_FILE}'; export it with medfocal export")
    return CheckpointInfo.from_dict(json.loads(extra[CARD_FILE]), path), module.eval()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith(f"/extra/{CARD_FILE}") for name in archive.namelist())


def load_model(path: str | Path, trust: bool = False) -> tuple[CheckpointInfo, nn.Module]:
    """``(info, network)`` from a checkpoint, an exported ``.onnx`` or an exported TorchScript file.

    ``.onnx`` → :func:`load_onnx`; a zip holding ``extra/medfocal_card.json`` → :func:`load_torchscript`;
    anything else → :func:`~medfocal.inference.checkpoint.load_checkpoint` (``trust`` as there).
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return load_onnx(path)
    if path.is_file() and _is_torchscript(path):
        return load_torchscript(path)
    return load_checkpoint(path, trust=trust)
