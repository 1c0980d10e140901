"""Seeded train/validation splits (k-fold, stratified) and a class-balanced sampler.

Example::

    train_idx, val_idx = split_indices(100, val_fraction=0.2, seed=0, stratify=labels)
    sampler = class_balanced_sampler(labels[train_idx])   # WeightedRandomSampler
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from torch.utils.data import WeightedRandomSampler

__all__ = ["class_balanced_sampler", "class_balanced_weights", "split_indices"]


def _can_stratify(labels: np.ndarray | None, n_val: int) -> bool:
    if labels is None or labels.ndim != 1:
        return False
    counts = np.bincount(labels.astype(np.int64))
    counts = counts[counts > 0]
    return counts.min() >= 2 and n_val >= len(counts)


def split_indices(
    n: int,
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int = 5,
    stratify: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation indices of ``n`` items.

    Args:
        n: number of items.
        val_fraction: validation share when ``fold`` is ``None``.
        seed: shuffling seed; the same seed gives the same split on every machine.
        fold: with ``num_folds``: use k-fold cross-validation and return fold ``fold`` (0-based).
        stratify: class index per item (1D); stratifies the split when each class has >= 2 items,
            otherwise falls back to a plain shuffled split.

    Returns:
        ``(train_indices, val_indices)`` sorted int64 arrays; ``val`` is empty when ``val_fraction == 0``.

    Raises:
        ValueError: ``n < 2`` with a non-zero validation share, a fraction outside [0, 1), or a bad fold.
    """
    indices = np.arange(n)
    labels = None if stratify is None else np.asarray(stratify)
    if fold is not None:
        if not 0 <= fold < num_folds or num_folds < 2:
            raise ValueError(
                f"fold: expected 0 <= fold < num_folds (num_folds >= 2), got fold={fold}, "
                f"num_folds={num_folds}"
            )
        if n < num_folds:
            raise ValueError(f"k-fold: expected at least num_folds={num_folds} items, got {n}")
        counts = None if labels is None or labels.ndim != 1 else np.bincount(labels.astype(np.int64))
        if counts is not None and counts[counts > 0].min() >= num_folds:
            splitter = StratifiedKFold(num_folds, shuffle=True, random_state=seed)
            train, val = list(splitter.split(indices, labels))[fold]
        else:
            splitter = KFold(num_folds, shuffle=True, random_state=seed)
            train, val = list(splitter.split(indices))[fold]
        return np.sort(train), np.sort(val)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return indices, np.array([], dtype=np.int64)
    if n < 2:
        raise ValueError(f"train/val split: expected at least 2 items, got {n}")
    n_val = max(1, round(n * val_fraction))
    n_val = min(n_val, n - 1)
    strat = labels if _can_stratify(labels, n_val) else None
    train, val = train_test_split(indices, test_size=n_val, random_state=seed, shuffle=True, stratify=strat)
    return np.sort(train), np.sort(val)


def class_balanced_weights(
    labels: Sequence[int] | np.ndarray, num_classes: int | None = None
) -> torch.Tensor:
    """Per-sample weights ``1 / count(class of sample)`` (each class drawn equally often on average)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes or 0).astype(np.float64)
    weights = 1.0 / np.maximum(counts[labels], 1.0)
    return torch.as_tensor(weights, dtype=torch.double)


def class_balanced_sampler(
    labels: Sequence[int] | np.ndarray, num_samples: int | None = None, seed: int = 0
) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` drawing classes uniformly, with replacement, seeded.

    Under DDP, Lightning (``use_distributed_sampler=True``, the default) wraps it in a
    ``DistributedSamplerWrapper`` so each rank gets a disjoint share of the drawn indices.
    """
    weights = class_balanced_weights(labels)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples or len(weights), replacement=True, generator=generator)
