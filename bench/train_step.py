"""Lightning training-step overhead: a medfocal task module against a bare PyTorch loop.

Both sides train the same network with the same loss, optimiser (AdamW, lr 1e-3) and batch held in
memory, so the ratio measures only what Lightning and the task module add per step (hooks, logging,
metric bookkeeping), not data loading. Sides are interleaved R times and medians reported.

- bare:      ``opt.zero_grad(); loss_fn(net(x), y).backward(); opt.step()`` in a Python loop
- lightning: ``Trainer(max_steps=N).fit(module, loader)`` over the same tensors (no validation,
  no checkpointing, no logger, no progress bar: the settings that do not change what a step computes)

Goal (issue 19, item 3): lightning within 1.05x of bare for ``SegmentationModule`` (3D UNet +
``DiceFocalLoss``) and for ``ClassificationModule`` (2D ResNet-18 + ``FocalLoss``).

Usage::

    python bench/train_step.py                    # 20 steps, 3 repeats, 2 threads
    python bench/train_step.py --steps 40 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

GOAL = 1.05


@dataclass
class Case:
    name: str
    build: Callable[[], tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]]
    module: Callable[[nn.Module, nn.Module], object]


def _segmentation() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    from medfocal.losses import DiceFocalLoss
    from medfocal.nets import create_model

    torch.manual_seed(0)
    net = create_model("unet", spatial_dims=3, in_channels=1, out_channels=2)
    loss = DiceFocalLoss(activation="softmax", include_background=False)
    x = torch.randn(2, 1, 48, 48, 32)
    y = (torch.rand(2, 1, 48, 48, 32) > 0.95).long()
    return net, loss, x, y


def _classification() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    from medfocal.losses import FocalLoss
    from medfocal.nets import create_model

    torch.manual_seed(0)
    net = create_model(
        "resnet18", spatial_dims=2, in_channels=3, out_channels=5, conv1_t_size=3, no_max_pool=True
    )
    loss = FocalLoss(activation="softmax", gamma=2.0)
    x = torch.randn(32, 3, 28, 28)
    y = torch.randint(0, 5, (32,))
    return net, loss, x, y


def _seg_module(net: nn.Module, loss: nn.Module) -> object:
    from medfocal.tasks import SegmentationModule

    return SegmentationModule(net, loss, class_names=["background", "lesion"])


def _cls_module(net: nn.Module, loss: nn.Module) -> object:
    from medfocal.tasks import ClassificationModule

    return ClassificationModule(net, loss, num_classes=5, class_names=[str(i) for i in range(5)])


CASES = [
    Case("SegmentationModule: 3D UNet + DiceFocalLoss, (2, 1, 48, 48, 32)", _segmentation, _seg_module),
    Case("ClassificationModule: ResNet-18 + FocalLoss, (32, 3, 28, 28)", _classification, _cls_module),
]


class _Batches(torch.utils.data.Dataset):
    """The same in-memory batch ``steps`` times (a dict, as the datamodules give it)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        self.x, self.y, self.steps = x, y, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.x, "label": self.y}


def bare(net: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()
    start = time.perf_counter()
    for _ in range(steps):
        batch = {"image": x, "label": y}  # the same dict unpacking the module does
        x, y = batch["image"], batch["label"]
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def lightning(module: object, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Seconds per step between the first batch's start and the last batch's end (fit setup excluded)."""
    import pytorch_lightning as pl

    class _Clock(pl.Callback):
        start = end = 0.0

        def on_train_batch_start(self, *args: object) -> None:
            if not self.start:
                self.start = time.perf_counter()

        def on_train_batch_end(self, *args: object) -> None:
            self.end = time.perf_counter()

    clock = _Clock()
    loader = torch.utils.data.DataLoader(_Batches(x, y, steps), batch_size=None, num_workers=0)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=loader)
    # from the first batch's start to the last batch's end: all `steps` steps, fit setup excluded
    return (clock.end - clock.start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    import pytorch_lightning  # noqa: F401  (import first: it sets its loggers' levels on import)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    print(f"training step, {args.steps} steps x {args.repeats} repeats, {args.threads} threads (medians)")
    print(f"{'case':<68} {'bare ms':>9} {'module ms':>10} {'ratio':>7} {'goal':>6}")
    for case in CASES:
        net, loss, x, y = case.build()
        bare_times, module_times = [], []
        # warm-up both paths once (allocator, first-call dispatch)
        bare(copy.deepcopy(net), copy.deepcopy(loss), x, y, 2)
        for _ in range(args.repeats):
            bare_times.append(bare(copy.deepcopy(net), copy.deepcopy(loss), x, y, args.steps))
            module = case.module(copy.deepcopy(net), copy.deepcopy(loss))
            module_times.append(lightning(module, x, y, args.steps))
        b, m = statistics.median(bare_times), statistics.median(module_times)
        ratio = m / b
        flag = "met" if ratio <= GOAL else "NOT met"
        print(f"{case.name:<68} {b * 1e3:9.1f} {m * 1e3:10.1f} {ratio:6.2f}x {GOAL:5.2f}x  {flag}")


if __name__ == "__main__":
    main()
