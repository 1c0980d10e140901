"""``ClassificationDataModule``: image classification from MedMNIST, class folders or a CSV manifest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from monai.transforms import Compose, EnsureTyped

from medfocal.data.base_datamodule import BaseDataModule
from medfocal.data.layouts import Layout, MedMNISTLayout
from medfocal.data.loading import LoaderConfig
from medfocal.data.sampling import class_balanced_sampler
from medfocal.data.transforms import Augmentation, PreprocessingSpec, inference_transforms, train_transforms

__all__ = ["ClassificationDataModule"]


class ClassificationDataModule(BaseDataModule):
    """Image classification from a MedMNIST ``.npz``, an ImageFolder tree or a CSV manifest.

    Args:
        layout: a layout or a path (``.npz``, ``.csv``, class-folder tree).
        preprocessing: default: grey/RGB 2D scaled to [0, 1] (from the data), or generic 3D for
            3D MedMNIST; set ``resize`` when images differ in size.
        class_names: names in index order; default from the layout (folders) or CSV label strings
            (sorted), else ``["0", "1", ...]``.
        balanced_sampler: draw training samples with a class-balanced ``WeightedRandomSampler``
            (with replacement). Under DDP Lightning wraps it in ``DistributedSamplerWrapper``
            (``use_distributed_sampler=True``, the default), so ranks see disjoint shares.
        augmentation: random transforms; default flips/rotations/intensity (:class:`Augmentation`).
        other args: as :class:`SegmentationDataModule` (split stratified by class).
    """

    task = "classification"

    def __init__(
        self,
        layout: Layout | str,
        preprocessing: PreprocessingSpec | None = None,
        class_names: list[str] | None = None,
        balanced_sampler: bool = False,
        augmentation: Augmentation | None = None,
        val_fraction: float = 0.2,
        fold: int | None = None,
        num_folds: int = 5,
        seed: int = 0,
        batch_size: int = 32,
        val_batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        cache: str = "none",
        cache_rate: float = 1.0,
        cache_dir: str | None = None,
        check: str = "quick",
    ) -> None:
        loading = LoaderConfig.from_arguments(locals())
        super().__init__(layout, preprocessing, class_names, loading)
        self.balanced_sampler = balanced_sampler
        self.augmentation = augmentation
        self._label_index: dict[str, int] | None = None

    roi_size = None

    def _default_spec(self) -> PreprocessingSpec:
        if isinstance(self.layout, MedMNISTLayout):
            dims = self.layout.spatial_dims()
            if dims == 3:
                return PreprocessingSpec(modality="generic", spatial_dims=3, intensity_range=(0.0, 255.0))
            channels = self.layout.in_channels()
            return PreprocessingSpec(modality="rgb" if channels == 3 else "grey", spatial_dims=2)
        return PreprocessingSpec(modality="rgb", spatial_dims=2)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Layout items with labels mapped to class indices (CSV label strings -> index)."""
        if self._records is None:
            records = self.layout.records()
            raw = [r["label"] for r in records if not isinstance(r["label"], np.ndarray)]
            if raw and isinstance(raw[0], str):
                names = self._class_names_arg
                if names is None:
                    try:
                        names = [str(v) for v in sorted({int(v) for v in raw})]
                        names = [str(i) for i in range(int(names[-1]) + 1)]
                    except ValueError:
                        names = sorted(set(raw))
                index = {n: i for i, n in enumerate(names)}
                unknown = sorted({v for v in raw if v not in index and not v.isdigit()})
                if unknown:
                    raise ValueError(f"{self.describe()}: labels {unknown} not in class_names {names}")
                self._label_index = index
                for r in records:
                    r["label"] = index[r["label"]] if r["label"] in index else int(r["label"])
                if self._class_names_arg is None:
                    self._class_names_arg = list(names)
            self._records = records
        return self._records

    def _labels(self, records: list[dict[str, Any]]) -> np.ndarray:
        return np.stack([np.asarray(r["label"]) for r in records]) if records else np.zeros(0, np.int64)

    def _stratify_labels(self, records: list[dict[str, Any]]) -> np.ndarray | None:
        labels = self._labels(records)
        return labels if labels.ndim == 1 else None

    @property
    def multi_label(self) -> bool:
        """True when labels are ``(K,)`` vectors (``(B, K)`` float batches)."""
        return self._labels(self.records[:1]).ndim == 2

    @property
    def class_names(self) -> list[str]:
        """Class names, index = label."""
        records = self.records  # may set names from CSV strings
        if self._class_names_arg:
            return self._class_names_arg
        declared = self.layout.class_names()
        if declared:
            return declared
        labels = self._labels(records)
        n = labels.shape[1] if labels.ndim == 2 else int(labels.max()) + 1
        return [str(i) for i in range(max(n, 2))]

    def class_counts(self) -> torch.Tensor:
        """Training samples per class (float ``(num_classes,)``), from the labels only (no image loading)."""
        labels = self._labels(self.splits["train"])
        if labels.ndim == 2:
            counts = labels.sum(axis=0)
        else:
            counts = np.bincount(labels.astype(np.int64), minlength=self.num_classes)
        if len(counts) > self.num_classes:
            raise ValueError(
                f"{self.describe()}: labels up to {len(counts) - 1} but classes {self.class_names}"
            )
        return torch.as_tensor(counts, dtype=torch.float32)

    def train_transform(self) -> Any:
        """Deterministic preprocessing + augmentation (no cropping)."""
        return train_transforms(
            self.preprocessing, ("image",), roi_size=None, augmentation=self.augmentation, load=self._load
        )

    def val_transform(self, keys: Sequence[str] | None = None) -> Any:
        """The deterministic part only, as plain tensors (no geometry to invert, plain metric states)."""
        steps = list(inference_transforms(self.preprocessing, ("image",), load=self._load).transforms)
        return Compose([*steps, EnsureTyped(("image",), dtype=torch.float32, track_meta=False)])

    def _keys(self, records: list[dict[str, Any]]) -> tuple[str, ...]:
        return ("image",)

    def train_dataloader(self) -> DataLoader:
        if not self.balanced_sampler:
            return self._loader("train", self.batch_size, shuffle=True)
        labels = self._labels(self.splits["train"])
        if labels.ndim != 1:
            raise ValueError("balanced_sampler: needs single-label classes, got multi-label vectors")
        sampler = class_balanced_sampler(labels, seed=self.loading.seed)
        return self._loader("train", self.batch_size, shuffle=False, sampler=sampler)
