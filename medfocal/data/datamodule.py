"""Lightning datamodules for segmentation and classification; their typed ``__init__`` is the YAML schema.

``layout`` is a path (auto-detected: Decathlon folder or ``dataset.json``, ``images/`` + ``masks/``
folders, ``.csv``, ``.npz``, class-folder tree) or a layout object given by ``class_path``::

    data:                                   # Decathlon folder
      class_path: medfocal.data.SegmentationDataModule
      init_args:
        layout: data/Task01_BrainTumour
        preprocessing: {modality: mri, spacing: [1.0, 1.0, 1.0]}
        roi_size: [96, 96, 64]
        pos_fraction: 0.67

    data:                                   # BraTS-style case folders, one file per modality
      class_path: medfocal.data.SegmentationDataModule
      init_args:
        layout:
          class_path: medfocal.data.CaseFoldersLayout
          init_args: {root: brats2013/train, val_root: brats2013/validation,
                      channels: ["Flair*.nii.gz", "T1c*.nii.gz"], label: OTMultiClass.nii.gz}
        class_names: [background, necrosis, oedema, non_enhancing, enhancing]
        preprocessing: {modality: mri}
        roi_size: [96, 96, 64]

    data:                                   # MedMNIST npz, class-balanced sampling
      class_path: medfocal.data.ClassificationDataModule
      init_args: {layout: medmnist/retinamnist.npz, balanced_sampler: true}

After ``setup("fit")`` both modules expose ``class_names``, ``num_classes``, ``in_channels``,
``spatial_dims``, ``preprocessing``, ``roi_size`` and ``class_counts()`` (training split, float tensor).
Batches are dicts with ``"image"`` ``(B, C, *spatial)`` float and ``"label"``: segmentation
``(B, 1, *spatial)`` class indices (float), classification ``(B,)`` long (``(B, K)`` float multi-label).

DDP: loaders are plain ``monai.data.DataLoader``s, so Lightning (``use_distributed_sampler=True``)
adds a ``DistributedSampler``, or wraps the class-balanced ``WeightedRandomSampler`` in a
``DistributedSamplerWrapper`` (every rank draws the same seeded sequence and takes its share).
``cache="memory"`` caches the whole split in every rank; prefer ``cache="disk"`` for large data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, list_data_collate
from monai.transforms import Compose, EnsureTyped

from medfocal.data.checks import CaseSummary, label_counts, validate_records
from medfocal.data.layouts import Layout, MedMNISTLayout, detect_layout
from medfocal.data.sampling import class_balanced_sampler, split_indices
from medfocal.data.transforms import (
    MASK_KEYS,
    Augmentation,
    PreprocessingSpec,
    inference_transforms,
    train_transforms,
)

__all__ = ["ClassificationDataModule", "SegmentationDataModule"]

_CACHE_MODES = ("none", "memory", "disk")
_PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
_CHECK_MODES = ("none", "quick", "full")


def _default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def _strip(record: dict[str, Any]) -> dict[str, Any]:
    """Drop bookkeeping keys that the collate function cannot batch (``split`` may be None)."""
    return {k: v for k, v in record.items() if k != "split"}


class _BaseDataModule(pl.LightningDataModule):
    """Shared layout resolution, seeded splits, caching and loaders."""

    task = "base"

    def __init__(
        self,
        layout: Layout | str,
        preprocessing: PreprocessingSpec | None,
        class_names: list[str] | None,
        val_fraction: float,
        fold: int | None,
        num_folds: int,
        seed: int,
        batch_size: int,
        val_batch_size: int,
        num_workers: int | None,
        pin_memory: bool | None,
        cache: str,
        cache_rate: float,
        cache_dir: str | None,
        check: str,
    ) -> None:
        super().__init__()
        if cache not in _CACHE_MODES:
            raise ValueError(f"cache: expected one of {_CACHE_MODES}, got {cache!r}")
        if check not in _CHECK_MODES:
            raise ValueError(f"check: expected one of {_CHECK_MODES}, got {check!r}")
        if cache == "disk" and cache_dir is None:
            raise ValueError("cache='disk' needs cache_dir (a folder for MONAI PersistentDataset)")
        self.layout = detect_layout(layout) if isinstance(layout, (str, Path)) else layout
        self._spec_arg = preprocessing
        self._class_names_arg = list(class_names) if class_names is not None else None
        self.val_fraction = val_fraction
        self.fold = fold
        self.num_folds = num_folds
        self.seed = seed
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = _default_workers() if num_workers is None else num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.cache = cache
        self.cache_rate = cache_rate
        self.cache_dir = cache_dir
        self.check = check
        self._records: list[dict[str, Any]] | None = None
        self._splits: dict[str, list[dict[str, Any]]] | None = None
        self._datasets: dict[str, Any] = {}
        self._counts: torch.Tensor | None = None

    # -- records and splits ------------------------------------------------------------------------

    @property
    def records(self) -> list[dict[str, Any]]:
        """All items of the layout (loaded once)."""
        if self._records is None:
            self._records = self.layout.records()
        return self._records

    def _stratify_labels(self, records: list[dict[str, Any]]) -> np.ndarray | None:
        return None

    @property
    def splits(self) -> dict[str, list[dict[str, Any]]]:
        """``{"train": [...], "val": [...], "test": [...]}``: explicit splits of the layout, else seeded."""
        if self._splits is None:
            explicit = {s: [r for r in self.records if r.get("split") == s] for s in ("train", "val", "test")}
            pool = explicit["train"] + [r for r in self.records if r.get("split") is None]
            if explicit["val"] and self.fold is None:
                train, val = pool, explicit["val"]
            else:
                if explicit["val"]:  # k-fold over everything labelled for training
                    pool = pool + explicit["val"]
                tr_idx, va_idx = (
                    split_indices(
                        len(pool),
                        self.val_fraction,
                        self.seed,
                        self.fold,
                        self.num_folds,
                        stratify=self._stratify_labels(pool),
                    )
                    if len(pool) > 1
                    else (np.arange(len(pool)), np.array([], dtype=np.int64))
                )
                train = [pool[i] for i in tr_idx]
                val = [pool[i] for i in va_idx]
            self._splits = {"train": train, "val": val, "test": explicit["test"]}
        return self._splits

    # -- contract attributes -------------------------------------------------------------------------

    @property
    def preprocessing(self) -> PreprocessingSpec:
        """The preprocessing spec (given, or the generic default for the layout's dimensionality)."""
        if self._spec_arg is None:
            self._spec_arg = self._default_spec()
        return self._spec_arg

    def _default_spec(self) -> PreprocessingSpec:
        return PreprocessingSpec()

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return int(self.preprocessing.spatial_dims)

    @property
    def num_classes(self) -> int:
        """``len(class_names)``."""
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def in_channels(self) -> int:
        """Image channels, from the layout when it declares them, else from the first training image."""
        declared = self.layout.in_channels()
        if declared is not None:
            return declared
        if not hasattr(self, "_in_channels"):
            first = (self.splits["train"] or self.records)[0]
            item = inference_transforms(self.preprocessing, ("image",), load=self._load)(
                {"image": first["image"]}
            )
            self._in_channels = int(item["image"].shape[0])
        return self._in_channels

    @property
    def _load(self) -> bool:
        return not isinstance(self.layout, MedMNISTLayout)

    def describe(self) -> str:
        """The layout and where it reads from."""
        return self.layout.describe()

    # -- validation ----------------------------------------------------------------------------------

    def _declared_num_classes(self) -> int | None:
        return len(self._class_names_arg) if self._class_names_arg else None

    def validate(self, full: bool = True, raise_on_error: bool = True) -> tuple[list[CaseSummary], list[str]]:
        """Run :func:`medfocal.data.checks.validate_records` over every split.

        Raises:
            DataValidationError: problems found (all listed, each naming its file).
        """
        tagged = [dict(r, split=s) for s in ("train", "val", "test") for r in self.splits[s]]
        return validate_records(
            tagged,
            self.preprocessing,
            num_classes=self._declared_num_classes(),
            in_channels=self.layout.in_channels(),
            full=full,
            raise_on_error=raise_on_error,
            source=self.describe(),
        )

    # -- datasets and loaders ------------------------------------------------------------------------

    def _dataset(self, records: list[dict[str, Any]], transform: Any, cache: bool) -> Any:
        data = [_strip(r) for r in records]
        if not cache or self.cache == "none":
            return Dataset(data, transform)
        if self.cache == "memory":
            workers = max(1, self.num_workers)  # MONAI reads None as os.cpu_count() threads
            return CacheDataset(
                data, transform, cache_rate=self.cache_rate, num_workers=workers, progress=False
            )
        return PersistentDataset(data, transform, cache_dir=self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Split, validate (``check``) and build the datasets of ``stage``."""
        if self.check != "none" and not getattr(self, "_checked", False):
            self.validate(full=self.check == "full")
            self._checked = True
        if stage in ("fit", None):
            if not self.splits["train"]:
                raise ValueError(f"{self.describe()}: empty training split")
            self._datasets["train"] = self._dataset(self.splits["train"], self.train_transform(), cache=True)
        if stage in ("fit", "validate", None) and self.splits["val"]:
            keys = self._keys(self.splits["val"])
            self._datasets["val"] = self._dataset(self.splits["val"], self.val_transform(keys), cache=True)
        if stage in ("test", "predict", None):
            test = self.splits["test"] or self.splits["val"]
            keys = self._keys(test)
            self._datasets["test"] = self._dataset(test, self.val_transform(keys), cache=False)

    def _keys(self, records: list[dict[str, Any]]) -> tuple[str, ...]:
        return ("image", "label") if records and all("label" in r for r in records) else ("image",)

    def train_transform(self) -> Any:
        raise NotImplementedError

    def val_transform(self, keys: Sequence[str] | None = None) -> Any:
        raise NotImplementedError

    def _loader(self, name: str, batch_size: int, shuffle: bool, sampler: Any = None) -> DataLoader:
        if name not in self._datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[name])
        return DataLoader(
            self._datasets[name],
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=list_data_collate,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.splits["val"]:
            return []
        return self._loader("val", self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size, shuffle=False)


class SegmentationDataModule(_BaseDataModule):
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
        check: ``"quick"`` (headers: missing/corrupt files, shapes, affines, channels) before training,
            ``"full"`` (also NaN/Inf and label values), or ``"none"``.

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
        super().__init__(
            layout,
            preprocessing,
            class_names,
            val_fraction,
            fold,
            num_folds,
            seed,
            batch_size,
            val_batch_size,
            num_workers,
            pin_memory,
            cache,
            cache_rate,
            cache_dir,
            check,
        )
        if crop not in ("pos_neg", "label_classes", "random"):
            raise ValueError(f"crop: expected 'pos_neg', 'label_classes' or 'random', got {crop!r}")
        self._roi_size = tuple(int(v) for v in roi_size) if roi_size is not None else None
        self.crop = crop
        self.pos_fraction = pos_fraction
        self.class_ratios = class_ratios
        self.num_samples = num_samples
        self.augmentation = augmentation
        if self._roi_size is not None and len(self._roi_size) != self.spatial_dims:
            raise ValueError(f"roi_size: expected {self.spatial_dims} values, got {list(self._roi_size)}")

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
        if isinstance(first, str) and first.lower().endswith(_PHOTO_SUFFIXES):
            return PreprocessingSpec(modality="rgb")
        return PreprocessingSpec()

    def _declared_num_classes(self) -> int | None:
        if self._class_names_arg:
            return len(self._class_names_arg)
        declared = self.layout.class_names()
        return len(declared) if declared else None

    def _cache_file(self, records: list[dict[str, Any]]) -> Path | None:
        if self.cache_dir is None:
            return None
        key = json.dumps(
            [[str(r.get("label")), Path(str(r.get("label"))).stat().st_mtime] for r in records]
            + [self.preprocessing.to_dict()],
            sort_keys=True,
        )
        return Path(self.cache_dir) / f"class_counts_{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"

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
            for record in records:
                if "label" not in record:
                    continue
                counts = label_counts(record["label"], self.preprocessing)
                size = max(len(total), len(counts))
                total = np.pad(total, (0, size - len(total))) + np.pad(counts, (0, size - len(counts)))
            counts = total
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


class ClassificationDataModule(_BaseDataModule):
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
        super().__init__(
            layout,
            preprocessing,
            class_names,
            val_fraction,
            fold,
            num_folds,
            seed,
            batch_size,
            val_batch_size,
            num_workers,
            pin_memory,
            cache,
            cache_rate,
            cache_dir,
            check,
        )
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
        sampler = class_balanced_sampler(labels, seed=self.seed)
        return self._loader("train", self.batch_size, shuffle=False, sampler=sampler)
