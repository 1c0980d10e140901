"""Small in-memory datamodules and a stand-in loss for the task tests (no files, no real losses needed)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class _Dicts(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i]}


class BlobSegmentationData(pl.LightningDataModule):
    """Bright square "lesions" on noise: image (1, *shape), label (1, *shape) in {0, 1}."""

    def __init__(self, n: int = 16, shape: tuple[int, ...] = (32, 32), batch_size: int = 4, seed: int = 0):
        super().__init__()
        self.n, self.shape, self.batch_size, self.seed = n, tuple(shape), batch_size, seed
        self.class_names = ["background", "lesion"]
        self.num_classes = 2
        self.in_channels = 1
        self.spatial_dims = len(self.shape)
        self.roi_size = None
        self.preprocessing = {"modality": "generic", "spatial_dims": self.spatial_dims}

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(self.seed)
        labels = torch.zeros(self.n, 1, *self.shape)
        for i in range(self.n):
            c = [int(torch.randint(4, s - 8, (1,), generator=g)) for s in self.shape]
            labels[(i, 0, *[slice(ci, ci + 5) for ci in c])] = 1.0
        images = labels * 2.0 + 0.5 * torch.randn(labels.shape, generator=g)
        self.data = _Dicts(images, labels)

    def class_counts(self) -> torch.Tensor:
        fg = float(self.data.labels.sum()) if hasattr(self, "data") else 1.0
        total = float(self.n * torch.tensor(self.shape).prod())
        return torch.tensor([total - fg, fg])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size)

    test_dataloader = val_dataloader


class BlobClassificationData(pl.LightningDataModule):
    """Imbalanced 3-class vectors-as-images: class k has mean intensity k (image (1, 8, 8))."""

    def __init__(self, n: int = 60, batch_size: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.class_names = ["common", "rare", "rarest"]
        self.num_classes = 3
        self.in_channels = 1
        self.spatial_dims = 2
        self.roi_size = None
        self.preprocessing = {"modality": "grey", "spatial_dims": 2}

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(self.seed)
        labels = torch.multinomial(torch.tensor([0.7, 0.2, 0.1]), self.n, replacement=True, generator=g)
        labels[:3] = torch.arange(3)
        images = labels.float()[:, None, None, None] * 1.5 + torch.randn(self.n, 1, 8, 8, generator=g)
        self.data = _Dicts(images, labels)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.data.labels, minlength=3).float()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size)

    test_dataloader = val_dataloader


class TinyClassifier(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * in_channels, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossEntropy(nn.Module):
    """Plain cross-entropy with the medfocal loss signature (labels (B,) or (B, 1, *spatial))."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim > 2:
            target = target[:, 0]
        return nn.functional.cross_entropy(logits, target.long())


class RankMarker(pl.Callback):
    """Write ``<out_dir>/rank_<global rank>.txt`` (with the steps run) at the end of training."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from pathlib import Path

        path = Path(self.out_dir) / f"rank_{trainer.global_rank}.txt"
        path.write_text(f"{trainer.global_step} {trainer.world_size}")


# ----------------------------------------------------------------------------- a task kind from outside
def _mean_intensity_head():
    """Build the head class lazily: importing medfocal.inference here is only needed by one test."""
    import numpy as np

    from medfocal.inference.heads import Prediction, PredictionHead
    from medfocal.inference.writer import atomic_path

    class MeanIntensityHead(PredictionHead):
        """A toy task kind: the mean of each output channel, written to ``<case>.npy`` and a row."""

        report_name = "means.csv"

        def run(self, network, x):
            return network(x).float().mean(dim=tuple(range(2, x.ndim))) / self.card.temperature

        def finish(self, case, image, output):
            return Prediction(case.case_id, output.numpy())

        def output_paths(self, case, output_dir, save_probabilities):
            return [output_dir / f"{case.case_id}.npy"]

        def write(self, case, prediction, paths):
            with atomic_path(paths[0]) as tmp, open(tmp, "wb") as fh:
                np.save(fh, prediction.probabilities)

        def report_row(self, prediction):
            return {f"mean_{i}": round(float(v), 6) for i, v in enumerate(prediction.probabilities)}

    return MeanIntensityHead


def __getattr__(name: str):
    if name == "MeanIntensityHead":
        return _mean_intensity_head()
    raise AttributeError(name)
