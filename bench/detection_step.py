"""Detection training step: where the time of a ``DetectionModule`` step goes, against the bare network.

Builds the preset exactly as ``medfocal fit`` does (``MedfocalCLI(run=False)`` on the config and the
overrides given), draws ``--steps`` real training batches from its datamodule (augmented, as training
sees them) and times, interleaved ``--repeats`` times (medians):

- ``network``:   the bare network, forward + backward + AdamW step of the same batch (loss: the mean of
  every head output, which costs nothing): what the step cannot go below;
- ``detector``:  the same plus MONAI's detector losses (anchors, ATSS matching, hard-negative sampling,
  box coding, focal + smooth-L1 losses), no Lightning;
- ``module``:    ``Trainer.fit`` of the preset's ``DetectionModule`` over the same batches held in memory
  (hooks, logging; no validation, checkpoints, logger or progress bar);
- ``module+data``: ``Trainer.fit`` over the preset's own training loader (loading, decoding, zoom,
  augmentation and collation included; with ``cache_rate`` the first epoch fills the cache, so one
  warm-up epoch over the same ``--steps`` images runs first);

then one validation pass over the validation split or ``--val-batches`` batches (detections, COCO
metrics, validation loss).
Times are wall clock and process CPU time (``time.process_time``, all threads of this process): on a
shared machine the CPU time is the figure that does not depend on the load.

Usage (from the repository root; ``../shared/data/bccd`` is the BCCD VOC folder)::

    OMP_NUM_THREADS=1 python bench/detection_step.py --threads 1
    python bench/detection_step.py -- --data.init_args.cache_rate=0       # the loader without the cache
    python bench/detection_step.py --config configs/nodule_det_ct.yaml -- --data.init_args.layout=...
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDFOCAL_DATA", ROOT.parent / "shared" / "data"))


class _Clock:
    """Wall and process CPU seconds since creation."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def build(config: str, overrides: list[str]) -> tuple[Any, Any]:
    """``(module, datamodule)`` of ``medfocal fit --config config overrides`` (nothing is trained)."""
    from medfocal.cli.lightning import MedfocalCLI

    args = ["--config", config, "--trainer.logger=false", *overrides]
    cli = MedfocalCLI(args=args, run=False, parser_kwargs={"exit_on_error": False})
    return cli.model, cli.datamodule


def _bare_loss(outputs: dict[str, list[torch.Tensor]]) -> torch.Tensor:
    return sum(o.float().mean() for maps in outputs.values() for o in maps)


def time_network(module: Any, batches: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds per step (wall, CPU) of the bare network's forward + backward + AdamW step."""
    net = copy.deepcopy(module.model).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    clock = _Clock()
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        _bare_loss(net(batch["image"])).backward()
        opt.step()
    wall, cpu = clock.stop()
    return wall / len(batches), cpu / len(batches)


def time_detector(module: Any, batches: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds per step of the network + MONAI's detector losses (the training loss, no Lightning)."""
    module = copy.deepcopy(module).train()
    detector = module.detector
    detector.training = True
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    clock = _Clock()
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        losses = detector(batch["image"], module._targets(batch))
        (losses[detector.cls_key] + losses[detector.box_reg_key]).backward()
        opt.step()
    wall, cpu = clock.stop()
    return wall / len(batches), cpu / len(batches)


def _trainer(steps: int, callbacks: list[Any], epochs: int = 1) -> Any:
    import pytorch_lightning as pl

    return pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def _step_clock() -> Any:
    import pytorch_lightning as pl

    class StepClock(pl.Callback):
        """From the first batch's start to the last batch's end of the last epoch (setup excluded)."""

        def __init__(self) -> None:
            self.start: _Clock | None = None
            self.steps = 0
            self.result = (0.0, 0.0)

        def on_train_epoch_start(self, *args: object) -> None:
            self.start, self.steps = None, 0

        def on_train_batch_start(self, *args: object) -> None:
            if self.start is None:
                self.start = _Clock()

        def on_train_batch_end(self, *args: object) -> None:
            self.steps += 1
            if self.start is not None:
                self.result = self.start.stop()

    return StepClock()


def time_module(module: Any, batches: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds per step of ``Trainer.fit`` over the batches held in memory."""
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)
    clock = _step_clock()
    _trainer(len(batches), [clock]).fit(copy.deepcopy(module), train_dataloaders=loader)
    return clock.result[0] / clock.steps, clock.result[1] / clock.steps


def time_module_with_data(module: Any, datamodule: Any, steps: int) -> tuple[float, float]:
    """Seconds per step of ``Trainer.fit`` over the preset's training loader (second of two epochs)."""
    clock = _step_clock()
    trainer = _trainer(steps, [clock], epochs=2)
    trainer.fit(copy.deepcopy(module), datamodule=datamodule)
    return clock.result[0] / clock.steps, clock.result[1] / clock.steps


def time_validation(module: Any, datamodule: Any, batches: int | None) -> tuple[float, float, int]:
    """Seconds (wall, CPU) of a validation pass over ``batches`` batches (None: all), and its images.

    A first pass fills the cache (``cache_rate``) and is not timed; the time is the second pass.
    """
    import pytorch_lightning as pl

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=batches if batches is not None else 1.0,
    )
    module = copy.deepcopy(module)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    clock = _Clock()
    trainer.validate(module, datamodule=datamodule, verbose=False)
    wall, cpu = clock.stop()
    n_batches = len(datamodule.val_dataloader())
    n_images = len(datamodule.splits["val"])
    images = n_images if batches is None or batches >= n_batches else batches * datamodule.val_batch_size
    return wall, cpu, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "cells_bccd.yaml"))
    parser.add_argument("--layout", default=str(DATA / "bccd"), help="data.init_args.layout")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--val-batches", type=int, default=None, help="default: the whole split")
    parser.add_argument("overrides", nargs="*", help="medfocal fit overrides, after --")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    import pytorch_lightning  # noqa: F401  (import first: it sets its loggers' levels on import)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    overrides = [f"--data.init_args.layout={args.layout}", *args.overrides]
    module, datamodule = build(args.config, overrides)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches = list(itertools.islice(iter(loader), args.steps))
    shape = tuple(batches[0]["image"].shape)
    params = sum(p.numel() for p in module.model.parameters())
    steps_per_epoch = len(loader)
    load = os.getloadavg()[0]
    print(f"{Path(args.config).name} {' '.join(args.overrides)}")
    print(
        f"batch {shape}, {params / 1e6:.2f} M parameters, {steps_per_epoch} steps per epoch, "
        f"{args.steps} steps x {args.repeats} repeats, {args.threads} thread(s), load average {load:.1f}"
    )
    time_network(module, batches[:2])  # warm-up (allocator, first-call dispatch)
    sides: dict[str, list[tuple[float, float]]] = {
        "network": [],
        "detector": [],
        "module": [],
        "module+data": [],
    }
    for _ in range(args.repeats):
        sides["network"].append(time_network(module, batches))
        sides["detector"].append(time_detector(module, batches))
        sides["module"].append(time_module(module, batches))
        sides["module+data"].append(time_module_with_data(module, datamodule, args.steps))
    base_wall = statistics.median(w for w, _ in sides["network"])
    base_cpu = statistics.median(c for _, c in sides["network"])
    print(f"{'per step':<14} {'wall ms':>9} {'cpu ms':>9} {'wall ratio':>11} {'cpu ratio':>10}")
    for name, values in sides.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(
            f"{name:<14} {wall * 1e3:9.1f} {cpu * 1e3:9.1f} {wall / base_wall:10.2f}x {cpu / base_cpu:9.2f}x"
        )
    v_wall, v_cpu, images = time_validation(module, datamodule, args.val_batches)
    ms_wall, ms_cpu = v_wall / images * 1e3, v_cpu / images * 1e3
    print(f"validation: {images} images, {ms_wall:.1f} ms wall, {ms_cpu:.1f} ms cpu per image")
    step_cpu = statistics.median(c for _, c in sides["module+data"])
    n_val = len(datamodule.splits["val"])
    print(
        f"estimate: one epoch {steps_per_epoch * step_cpu:.1f} s cpu, one validation of {n_val} images "
        f"{n_val * v_cpu / images:.1f} s cpu"
    )


if __name__ == "__main__":
    main()
