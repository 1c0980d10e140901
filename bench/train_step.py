"""Lightning training-step overhead: a medfocal task module against a bare PyTorch loop.

Both sides train the same network with the same loss, optimiser (AdamW, lr 1e-3) and batch held in
memory, so the ratio measures only what Lightning and the task module add per step (hooks, logging,
metric bookkeeping), not data loading.

- bare:      ``opt.zero_grad(); loss_fn(net(x), y).backward(); opt.step()`` in a Python loop
- lightning: ``Trainer(max_steps=N).fit(module, loader)`` over the same tensors (no validation,
  no checkpointing, no logger, no progress bar: the settings that do not change what a step computes)

Robust to a shared, loaded machine: each side's block of N steps is timed step by step (bare: loop
iteration to loop iteration; lightning: from one ``on_train_batch_start`` to the next, so hooks, the
optimiser closure and the loader's fetch are inside), the first ``--warmup`` steps of every block are
dropped, blocks alternate ABBA over ``--repeats`` rounds, and the figure is the median step of each side
over all blocks; the load average before and after is printed.

Goal (issue 19, item 3): lightning within 1.05x of bare for ``SegmentationModule`` (3D UNet +
``DiceFocalLoss``) and for ``ClassificationModule`` (2D ResNet-18 + ``FocalLoss``).

Usage::

    python bench/train_step.py                    # 6 steps, 4 ABBA rounds, 2 threads
    python bench/train_step.py --steps 12 --repeats 6 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
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


def bare(net: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    """Seconds of each of ``steps`` plain PyTorch training steps."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()
    marks = [time.perf_counter()]
    for _ in range(steps):
        batch = {"image": x, "label": y}  # the same dict unpacking the module does
        image, label = batch["image"], batch["label"]
        opt.zero_grad(set_to_none=True)
        loss_fn(net(image), label).backward()
        opt.step()
        marks.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(marks)]


def lightning(module: object, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    """Seconds of each of ``steps`` Lightning steps, batch start to next batch start (fit setup excluded)."""
    import pytorch_lightning as pl

    class _Clock(pl.Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_batch_start(self, *args: object) -> None:
            self.marks.append(time.perf_counter())

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
    marks = [*clock.marks, clock.end]
    return [b - a for a, b in itertools.pairwise(marks)]


def measure(case: Case, steps: int, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Per-step seconds of both sides over ``repeats`` ABBA rounds, warm-up steps of each block dropped."""
    net, loss, x, y = case.build()
    times: dict[str, list[float]] = {"bare": [], "module": []}

    def run(side: str) -> None:
        if side == "bare":
            block = bare(copy.deepcopy(net), copy.deepcopy(loss), x, y, steps)
        else:
            block = lightning(case.module(copy.deepcopy(net), copy.deepcopy(loss)), x, y, steps)
        times[side].extend(block[warmup:])

    bare(copy.deepcopy(net), copy.deepcopy(loss), x, y, 2)  # first calls: allocator, kernel compilation
    for r in range(repeats):
        for side in ("bare", "module") if r % 2 == 0 else ("module", "bare"):
            run(side)
    return times["bare"], times["module"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="steps dropped at the start of each block")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    import pytorch_lightning  # noqa: F401  (import first: it sets its loggers' levels on import)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    print(
        f"training step, {args.steps} steps x {args.repeats} ABBA rounds (first {args.warmup} of each block "
        f"dropped), {args.threads} threads, median step; load average before: {os.getloadavg()[0]:.1f}"
    )
    print(f"{'case':<68} {'bare ms':>9} {'module ms':>10} {'ratio':>7} {'goal':>6}")
    for case in CASES:
        bare_times, module_times = measure(case, args.steps, args.repeats, args.warmup)
        b, m = statistics.median(bare_times), statistics.median(module_times)
        ratio = m / b
        flag = "met" if ratio <= GOAL else "NOT met"
        print(f"{case.name:<68} {b * 1e3:9.1f} {m * 1e3:10.1f} {ratio:6.2f}x {GOAL:5.2f}x  {flag}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
