"""How a datamodule splits, caches and loads its records: :class:`LoaderConfig` and the functions using it.

The datamodules keep flat, typed ``__init__`` arguments (their YAML schema: ``batch_size: 4``,
``cache: disk`` ...) and gather the ones shared by every task into one :class:`LoaderConfig`, checked once.

Example:
    >>> config = LoaderConfig(batch_size=4, cache="memory", num_workers=0)
    >>> config.batch_size, config.pin_memory in (True, False)
    (4, True)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, list_data_collate

from medfocal.data.sampling import split_indices

__all__ = ["CACHE_MODES", "CHECK_MODES", "LoaderConfig", "make_dataset", "make_loader", "split_records"]

CACHE_MODES = ("none", "memory", "disk")
CHECK_MODES = ("none", "quick", "full")
_SPLITS = ("train", "val", "test")


def _default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


@dataclass
class LoaderConfig:
    """Split, batching, caching and checking settings shared by all datamodules.

    Args:
        val_fraction, fold, num_folds, seed: seeded split when the layout has no validation split
            (``fold`` switches to k-fold).
        batch_size: training batch size; val_batch_size: evaluation batch size.
        num_workers: loader workers; ``None`` = min(4, CPUs - 1). pin_memory: ``None`` = CUDA present.
        cache: ``"none"``, ``"memory"`` (``CacheDataset``) or ``"disk"`` (``PersistentDataset`` in
            ``cache_dir``); cache_rate: share of items cached in memory.
        check: validation in ``setup``: ``"quick"`` (headers on every run; NaN/Inf voxels and label values
            read once per file and remembered in :func:`~medfocal.data.check_cache.default_cache_file`),
            ``"full"`` (everything read on every run) or ``"none"``.

    Raises:
        ValueError: an unknown ``cache``/``check`` mode, or ``cache="disk"`` without ``cache_dir``.
    """

    val_fraction: float = 0.2
    fold: int | None = None
    num_folds: int = 5
    seed: int = 0
    batch_size: int = 2
    val_batch_size: int = 1
    num_workers: int | None = None
    pin_memory: bool | None = None
    cache: str = "none"
    cache_rate: float = 1.0
    cache_dir: str | None = None
    check: str = "quick"

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any]) -> LoaderConfig:
        """The config of a datamodule's flat ``__init__`` arguments (``locals()``): its own fields only."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls) if f.name in arguments})

    def __post_init__(self) -> None:
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache: expected one of {CACHE_MODES}, got {self.cache!r}")
        if self.check not in CHECK_MODES:
            raise ValueError(f"check: expected one of {CHECK_MODES}, got {self.check!r}")
        if self.cache == "disk" and self.cache_dir is None:
            raise ValueError("cache='disk' needs cache_dir (a folder for MONAI PersistentDataset)")
        if self.num_workers is None:
            self.num_workers = _default_workers()
        if self.pin_memory is None:
            self.pin_memory = torch.cuda.is_available()


def split_records(
    records: list[dict[str, Any]],
    config: LoaderConfig,
    stratify: Callable[[list[dict[str, Any]]], np.ndarray | None] = lambda pool: None,
) -> dict[str, list[dict[str, Any]]]:
    """``{"train", "val", "test"}``: the layout's explicit splits, else a seeded (k-fold) split.

    ``stratify(pool)`` gives the labels to stratify the split by (classification), or ``None``.
    """
    explicit = {s: [r for r in records if r.get("split") == s] for s in _SPLITS}
    pool = explicit["train"] + [r for r in records if r.get("split") is None]
    if explicit["val"] and config.fold is None:
        return {"train": pool, "val": explicit["val"], "test": explicit["test"]}
    if explicit["val"]:  # k-fold over everything labelled for training
        pool = pool + explicit["val"]
    if len(pool) > 1:
        labels = stratify(pool)
        tr_idx, va_idx = split_indices(
            len(pool), config.val_fraction, config.seed, config.fold, config.num_folds, stratify=labels
        )
    else:
        tr_idx, va_idx = np.arange(len(pool)), np.array([], dtype=np.int64)
    return {"train": [pool[i] for i in tr_idx], "val": [pool[i] for i in va_idx], "test": explicit["test"]}


def _strip(record: dict[str, Any]) -> dict[str, Any]:
    """Drop bookkeeping keys that the collate function cannot batch (``split`` may be None)."""
    return {k: v for k, v in record.items() if k != "split"}


def make_dataset(records: list[dict[str, Any]], transform: Any, config: LoaderConfig, cache: bool) -> Any:
    """A MONAI dataset of ``records``; cached as ``config.cache`` says when ``cache`` is True."""
    data = [_strip(r) for r in records]
    if not cache or config.cache == "none":
        return Dataset(data, transform)
    if config.cache == "memory":
        workers = max(1, int(config.num_workers or 0))  # MONAI reads None as os.cpu_count() threads
        rate = config.cache_rate
        return CacheDataset(data, transform, cache_rate=rate, num_workers=workers, progress=False)
    return PersistentDataset(data, transform, cache_dir=config.cache_dir)


def make_loader(
    dataset: Any, batch_size: int, config: LoaderConfig, shuffle: bool, sampler: Any = None
) -> DataLoader:
    """A MONAI ``DataLoader`` (list collate: patch lists flatten into the batch) with the config's workers."""
    workers = int(config.num_workers or 0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=bool(config.pin_memory),
        persistent_workers=workers > 0,
        collate_fn=list_data_collate,
    )
