"""Is data loading hidden behind compute? A training epoch from the datamodule vs from tensors in memory.

Issue 19, item 4: an epoch on the DRIVE datamodule (the planned recipe's sampling: 48 x 48 patches,
8 per image, 4 images per step, augmentation on, ``cache: memory``, 2 loader workers) should take within
1.10x of the same epoch over batches already in memory (the same number of steps through the same
network, loss and optimiser). Both sides are interleaved and repeated; medians.

- loader:   ``for batch in dm.train_dataloader(): step(batch)`` (workers crop and augment while the
            network trains)
- memory:   the batches of one loader pass collected beforehand, then ``for batch in batches: step(batch)``

Usage::

    python bench/data_loading.py [--data ../shared/data/drive/training] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

GOAL = 1.10


def _datamodule(root: Path, workers: int):
    from medfocal.data import Augmentation, PairedFoldersLayout, PreprocessingSpec, SegmentationDataModule

    layout = PairedFoldersLayout(
        images_dir=str(root / "images"),
        masks_dir=str(root / "1st_manual"),
        image_suffix="_training.tif",
        mask_suffix="_manual1.gif",
    )
    return SegmentationDataModule(
        layout,
        preprocessing=PreprocessingSpec(modality="rgb", spatial_dims=2, label_threshold=127),
        roi_size=[48, 48],
        num_samples=8,
        batch_size=4,
        augmentation=Augmentation(flip_prob=0.5, rot90_prob=0.5, affine_prob=0.3, contrast_prob=0.3),
        num_workers=workers,
        cache="memory",
        check="none",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("MEDFOCAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default / "drive" / "training")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from medfocal.losses import DiceFocalLoss
    from medfocal.nets import create_model

    dm = _datamodule(args.data, args.workers)
    dm.setup("fit")
    loader = dm.train_dataloader()
    torch.manual_seed(0)
    net = create_model("unet", spatial_dims=2, in_channels=3, out_channels=2)
    loss_fn = DiceFocalLoss(activation="softmax", include_background=False)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step(batch: dict) -> None:
        opt.zero_grad(set_to_none=True)
        image, label = (torch.as_tensor(batch[k]) for k in ("image", "label"))
        loss_fn(net(image), label).backward()
        opt.step()

    batches = list(loader)  # one pass: fills the memory cache and gives the in-memory epoch
    loader_s, memory_s = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for batch in loader:
            step(batch)
        loader_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        memory_s.append(time.perf_counter() - start)
    a, b = statistics.median(loader_s), statistics.median(memory_s)
    print(f"DRIVE epoch ({len(batches)} steps of {batches[0]['image'].shape[0]} patches 48x48), "
          f"{args.workers} workers, {args.threads} threads, median of {args.repeats}")  # fmt: skip
    print(f"{'from the datamodule':<24}{a:8.2f} s")
    print(f"{'from memory':<24}{b:8.2f} s")
    flag = "met" if a / b <= GOAL else "NOT met"
    print(f"{'ratio':<24}{a / b:8.2f}x   goal <= {GOAL:.2f}x  {flag}")


if __name__ == "__main__":
    main()
