"""Tiny checkpoints following the medfocal checkpoint contract, made without the training code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

# generic modality: orientation to RAS, resampling to 1 x 1 x 1.5 mm, intensities / 1000
RESAMPLING_SPEC = {
    "modality": "generic",
    "spatial_dims": 3,
    "orientation": "RAS",
    "spacing": [1.0, 1.0, 1.5],
    "intensity_range": [0.0, 1000.0],
}
# lesions of medfocal.synthetic are ~ 650-900 raw, the organ ~ 450-520: 0.59 after / 1000 separates them
THRESHOLD = 0.59


def save_checkpoint(
    path: Path,
    model: nn.Module,
    spec: dict[str, Any],
    *,
    task: str = "segmentation",
    activation: str = "softmax",
    class_names: list[str] | None = None,
    in_channels: int = 1,
    spatial_dims: int = 3,
    roi_size: list[int] | None = None,
    preprocessing: dict[str, Any] | None = None,
    temperature: float = 1.0,
) -> Path:
    """``torch.save`` a dict with ``state_dict`` (``model.`` prefixed) and ``medfocal`` (JSON types)."""
    class_names = class_names or ["background", "lesion"]
    meta = {
        "format_version": 1,
        "task": task,
        "model": spec,
        "activation": activation,
        "class_names": class_names,
        "num_classes": len(class_names),
        "in_channels": in_channels,
        "spatial_dims": spatial_dims,
        "roi_size": roi_size,
        "preprocessing": preprocessing if preprocessing is not None else dict(RESAMPLING_SPEC),
        "temperature": temperature,
    }
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["loss.dummy"] = torch.zeros(1)  # non-model keys must be ignored
    torch.save({"state_dict": state, "medfocal": meta, "epoch": 3}, path)
    return path


def threshold_oracle(
    in_channels: int = 1,
    spatial_dims: int = 3,
    threshold: float = THRESHOLD,
    gain: float = 40.0,
    sign: float = 1.0,
):
    """A 1x1 conv whose softmax says "lesion" where ``sign * (channel 0 - threshold) > 0``.

    Lesions of ``medfocal.synthetic`` are bright blobs (3D) or dark ellipses (2D: ``sign=-1``).
    """
    gain = gain * sign
    conv_cls = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    conv = conv_cls(in_channels, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = -gain / 2
        conv.weight[1, 0] = gain / 2
        conv.bias.copy_(torch.tensor([gain / 2 * threshold, -gain / 2 * threshold]))
    cls_path = "torch.nn.Conv3d" if spatial_dims == 3 else "torch.nn.Conv2d"
    spec = {
        "class_path": cls_path,
        "init_args": {"in_channels": in_channels, "out_channels": 2, "kernel_size": 1},
    }
    return conv, spec


def oracle_checkpoint(path: Path, **kwargs: Any) -> Path:
    in_channels = kwargs.pop("in_channels", 1)
    spatial_dims = kwargs.pop("spatial_dims", 3)
    oracle_kwargs = {k: kwargs.pop(k) for k in ("threshold", "sign") if k in kwargs}
    model, spec = threshold_oracle(in_channels, spatial_dims, **oracle_kwargs)
    return save_checkpoint(path, model, spec, in_channels=in_channels, spatial_dims=spatial_dims, **kwargs)


def trained_segmentation_checkpoint(
    tmp_path: Path, root: Path, spec: Any, steps: int
) -> tuple[Path, Any, Any]:
    """(checkpoint, module, datamodule) of ``steps`` real Lightning training steps of a tiny 3D UNet on the
    Decathlon folder ``root`` with ``spec`` (a ``PreprocessingSpec``), as ``medfocal fit`` writes them."""
    import pytorch_lightning as pl

    from medfocal.data import SegmentationDataModule
    from medfocal.losses import DiceCELoss
    from medfocal.nets import create_model
    from medfocal.tasks import SegmentationModule

    torch.manual_seed(0)
    data = SegmentationDataModule(
        str(root), preprocessing=spec, roi_size=[16, 16, 16], batch_size=2, num_workers=0, check="none"
    )
    net = create_model("unet", spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    module = SegmentationModule(net, DiceCELoss(), compute_hd95=False)
    trainer = pl.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt, module, data
