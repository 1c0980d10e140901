"""``SegmentationDataModule``: 2D/3D segmentation from any layout with label maps (see ``medfocal.data``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfocal.data.base_datamodule import BaseDataModule
from medfocal.data.check_cache import ContentCache, default_cache_file
from medfocal.data.checks import cached_label_counts
from medfocal.data.layouts import Layout
from medfocal.data.loading import LoaderConfig
from medfocal.data.transforms import (
    MASK_KEYS,
    Augmentation,
    PreprocessingSpec,
    check_roi_size,
    inference_transforms,
    train_transforms,
)
from medfocal.io import PHOTO_SUFFIXES

__all__ = ["SegmentationDataModule"]


class SegmentationDataModule(BaseDataModule):
    """2D/3D segmentation from any layout with label maps (Decathlon, CSV, paired folders, case folders).

    Args:
        layout: a :class:`~medfocal.data.layouts.Layout` (YAML: ``class_path`` + ``init_args``) or a path
            (Decathlon folder or ``dataset.json``, ``images/`` + ``masks/`` folder, ``.csv``).
        preprocessing: :class:`PreprocessingSpec`; default generic 3D (no resampling, no intensity change).
        class_names: names of the label values 0..K-1; default from ``dataset.json`` or, failing that,
            ``["background", "class_1", ...]`` up to the largest label value found.
        roi_size: training patch and sliding-window size; ``None`` trains on whole images.
        crop: ``"pos_neg"`` (foreground-centred with probability ``pos_fraction``),
            ``"label_classes"`` (``class_ratios``), or ``"random"``.
        pos_fraction: share of patches centred on foreground (``RandCropByPosNegLabeld``).
        class_ratios: per-class patch-centre ratios for ``crop="label_classes"``.
        num_samples: patches per image per step.
        augmentation: random transforms (:class:`Augmentation`); default ``Augmentation()``.
        val_fraction, fold, num_folds, seed: seeded split when the layout has no validation split
            (``fold`` switches to k-fold).
        batch_size: images per training batch (patches = ``batch_size * num_samples``).
        val_batch_size: whole images per validation batch (1 unless they share a size).
        num_workers: loader workers; ``None`` = min(4, CPUs - 1). pin_memory: ``None`` = CUDA present.
        cache: ``"none"``, ``"memory"`` (``CacheDataset``) or ``"disk"`` (``PersistentDataset`` in
            ``cache_dir``); caches the deterministic part only.
        check: before training: ``"quick"`` (headers on every run: missing/corrupt files, shapes,
            affines, channels; NaN/Inf voxels and label values read once per file version and remembered
            in ``~/.cache/medfocal/data_checks.json`` or ``$MEDFOCAL_CACHE_DIR``), ``"full"`` (all read on
            every run), or ``"none"``.

    Raises:
        DataValidationError: in ``setup`` when ``check`` finds problems.
    """

    task = "segmentation"

    def __init__(
        self,
        layout: Layout | str,
        preprocessing: PreprocessingSpec | None = None,
        class_names: list[str] | None = None,
        roi_size: list[int] | None = None,
        crop: str = "pos_neg",
        pos_fraction: float = 0.5,
        class_ratios: list[float] | None = None,
        num_samples: int = 2,
        augmentation: Augmentation | None = None,
        val_fraction: float = 0.2,
        fold: int | None = None,
        num_folds: int = 5,
        seed: int = 0,
        batch_size: int = 2,
        val_batch_size: int = 1,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        cache: str = "none",
        cache_rate: float = 1.0,
        cache_dir: str | None = None,
        check: str = "quick",
    ) -> None:
        loading = LoaderConfig.from_arguments(locals())
        super().__init__(layout, preprocessing, class_names, loading)
        if crop not in ("pos_neg", "label_classes", "random"):
            raise ValueError(f"crop: expected 'pos_neg', 'label_classes' or 'random', got {crop!r}")
        self._roi_size = tuple(int(v) for v in roi_size) if roi_size is not None else None
        self.crop = crop
        self.pos_fraction = pos_fraction
        self.class_ratios = class_ratios
        self.num_samples = num_samples
        self.augmentation = augmentation
        check_roi_size(self._roi_size, self.spatial_dims)

    @property
    def roi_size(self) -> tuple[int, ...] | None:
        """Patch size for training and sliding-window inference."""
        return self._roi_size

    @property
    def class_names(self) -> list[str]:
        """Names of the classes, index = label value."""
        if self._class_names_arg:
            return self._class_names_arg
        declared = self.layout.class_names()
        if declared:
            return declared
        n = len(self._voxel_counts(self.splits["train"]))
        return ["background"] + [f"class_{i}" for i in range(1, max(n, 2))]

    def _default_spec(self) -> PreprocessingSpec:
        first = self.records[0]["image"] if self.records else ""
        first = first[0] if isinstance(first, list) else first
        if isinstance(first, str) and first.lower().endswith(PHOTO_SUFFIXES):
            return PreprocessingSpec(modality="rgb")
        return PreprocessingSpec()

    def _declared_num_classes(self) -> int | None:
        if self._class_names_arg:
            return len(self._class_names_arg)
        declared = self.layout.class_names()
        return len(declared) if declared else None

    def _cache_file(self, records: list[dict[str, Any]]) -> Path | None:
        if self.loading.cache_dir is None:
            return None
        key = json.dumps(
            [[str(r.get("label")), Path(str(r.get("label"))).stat().st_mtime] for r in records]
            + [self.preprocessing.to_dict()],
            sort_keys=True,
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return Path(self.loading.cache_dir) / f"class_counts_{digest}.json"

    def _voxel_counts(self, records: list[dict[str, Any]]) -> np.ndarray:
        if not hasattr(self, "_count_memo"):
            self._count_memo: dict[int, np.ndarray] = {}
        memo_key = hash(tuple(str(r.get("label")) for r in records))
        if memo_key in self._count_memo:
            return self._count_memo[memo_key]
        path = self._cache_file(records)
        if path is not None and path.is_file():
            counts = np.asarray(json.loads(path.read_text()), dtype=np.float64)
        else:
            total = np.zeros(0, dtype=np.float64)
            memory = ContentCache(default_cache_file())  # counts the data checks already read
            for record in records:
                if "label" not in record:
                    continue
                counts = cached_label_counts(record["label"], self.preprocessing, memory)
                size = max(len(total), len(counts))
                total = np.pad(total, (0, size - len(total))) + np.pad(counts, (0, size - len(counts)))
            counts = total
            memory.save()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(counts.tolist()))
        self._count_memo[memo_key] = counts
        return counts

    def class_counts(self) -> torch.Tensor:
        """Voxels per class of the training split (native grid, after label mapping), ``(num_classes,)``.

        Read from the label files once, then memoised (and cached as JSON in ``cache_dir`` if set).

        Raises:
            ValueError: label values beyond ``num_classes - 1`` (naming them).
        """
        counts = self._voxel_counts(self.splits["train"])
        n = self.num_classes
        if len(counts) > n and counts[n:].any():
            bad = [int(i) for i in np.nonzero(counts)[0] if i >= n]
            raise ValueError(f"{self.describe()}: label values {bad} outside the classes {self.class_names}")
        counts = np.pad(counts[:n], (0, max(0, n - len(counts))))
        return torch.as_tensor(counts, dtype=torch.float32)

    def train_transform(self) -> Any:
        """Deterministic preprocessing + patch sampling + augmentation."""
        return train_transforms(
            self.preprocessing,
            ("image", "label"),
            roi_size=self._roi_size,
            crop=self.crop,
            pos_fraction=self.pos_fraction,
            num_samples=self.num_samples,
            class_ratios=self.class_ratios,
            num_classes=self.num_classes if self.crop == "label_classes" else 2,
            augmentation=self.augmentation,
        )

    def val_transform(self, keys: Sequence[str] | None = None) -> Any:
        """The deterministic part only (identical to ``medfocal infer``)."""
        return inference_transforms(self.preprocessing, keys or ("image", "label"))

    def _keys(self, records: list[dict[str, Any]]) -> tuple[str, ...]:
        """``image`` (+ ``label``) + the region masks every record has (``fov``, ``mask``, ``brainmask``).

        Region masks are loaded on the evaluation splits only, on the image grid, as ``{0, 1}`` tensors
        (e.g. DRIVE's field of view for ``TemperatureScaling(mask_key="fov")``).
        """
        masks = tuple(k for k in MASK_KEYS if records and all(k in r for r in records))
        return (*super()._keys(records), *masks)
