"""How a segmentation network runs over a whole image: one function for validation and inference.

``SegmentationModule.forward`` (validation, test, temperature fitting) and the segmentation prediction
head of ``medfocal infer`` both call :func:`whole_image_logits` with the card's ``roi_size``, so a
model is scored the way it is deployed: a Gaussian-blended sliding window of ``roi_size`` patches
(MONAI ``sliding_window_inference``, logits blended in float32), or, without ``roi_size``, one pass
over the image padded to a multiple of 16 (what U-Net-like networks with 4 poolings need).

Imports no Lightning (``medfocal infer`` uses it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["PAD_MULTIPLE", "whole_image_logits"]

PAD_MULTIPLE = 16


def _main_output(network: Callable[[torch.Tensor], object]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``network`` returning float32 logits; of deep-supervision outputs, the full-resolution one."""

    def run(x: torch.Tensor) -> torch.Tensor:
        out = network(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.float()

    return run


def whole_image_logits(
    network: Callable[[torch.Tensor], object],
    image: torch.Tensor,
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
) -> torch.Tensor:
    """Float32 logits ``(B, C, *spatial)`` of ``image`` ``(B, C_in, *spatial)``, 2D or 3D.

    Args:
        network: the network (``(B, C_in, *patch) -> (B, C, *patch)``; a list/tuple output gives its
            first element).
        image: the preprocessed batch.
        roi_size: sliding-window size (one value per spatial axis); None: the whole image at once,
            zero-padded to a multiple of 16 and cropped back.
        sw_batch_size: windows per forward pass.
        overlap: overlap of neighbouring windows in [0, 1).

    Raises:
        ValueError: ``roi_size`` with the wrong number of values.

    Example:
        >>> net = torch.nn.Conv2d(1, 2, 3, padding=1)
        >>> whole_image_logits(net, torch.zeros(1, 1, 40, 30), roi_size=(16, 16)).shape
        torch.Size([1, 2, 40, 30])
    """
    run = _main_output(network)
    spatial = tuple(image.shape[2:])
    if roi_size is None:
        pad: list[int] = []
        for s in reversed(spatial):
            pad += [0, (-s) % PAD_MULTIPLE]
        out = run(F.pad(image, pad) if any(pad) else image)
        return out[(slice(None), slice(None), *(slice(0, s) for s in spatial))]
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != len(spatial):
        raise ValueError(
            f"roi_size: expected {len(spatial)} values for a {len(spatial)}D image, got {list(roi)}"
        )
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        image, roi_size=roi, sw_batch_size=sw_batch_size, predictor=run, overlap=overlap, mode="gaussian"
    )
