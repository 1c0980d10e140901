"""The stroke preset's DenseUNet training step against a MONAI UNet step (issue 19, item 6).

Same batch (2, 3, 64, 64, 32), loss (DiceFocalLoss), optimiser (AdamW); medians over repeats.
``stem_stride=1`` runs the first dense block and the last decoder block at full resolution (3x3x3
convolutions with 32-64 channels on every voxel: most of the step); ``stem_stride=2`` (the preset's
setting) halves the resolution before any block, as a MONAI UNet's strided first convolution does.

Usage::

    python bench/dense_unet.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def step_seconds(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 2) -> float:
    from medfocal.losses import DiceFocalLoss

    loss = DiceFocalLoss(activation="softmax", include_background=False)
    opt = torch.optim.AdamW(net.parameters())
    opt.zero_grad()
    loss(net(x), y).backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss(net(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from medfocal.nets import create_model

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64, 32)
    y = (torch.rand(2, 1, 64, 64, 32) > 0.97).long()
    nets = {
        "MONAI UNet (create_model('unet'))": lambda: create_model("unet", spatial_dims=3, in_channels=3),
        "DenseUNet stem_stride=1 (before)": lambda: create_model("dense_unet", spatial_dims=3, in_channels=3),
        "DenseUNet stem_stride=2 (preset)": lambda: create_model(
            "dense_unet", spatial_dims=3, in_channels=3, stem_stride=2
        ),
    }
    times = {name: statistics.median(step_seconds(build(), x, y) for _ in range(args.repeats))
             for name, build in nets.items()}  # fmt: skip
    reference = times["MONAI UNet (create_model('unet'))"]
    print(f"training step (2, 3, 64, 64, 32), {args.threads} threads, median of {args.repeats}")
    for name, seconds in times.items():
        print(f"{name:<40} {seconds * 1e3:9.0f} ms  {seconds / reference:6.1f}x UNet")


if __name__ == "__main__":
    main()
