"""Shared pieces of the accuracy benchmark: paths, data root, quiet CPU trainer, augmentations, records."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _augmentations() -> dict[str, Any]:
    from medfocal.data import Augmentation

    off = dict(noise_prob=0.0, contrast_prob=0.0, intensity_prob=0.0, colour_prob=0.0)
    return {
        "flips": Augmentation(flip_prob=0.5, rot90_prob=0.0, affine_prob=0.0, **off),
        "affine": Augmentation(flip_prob=0.5, rot90_prob=0.0, affine_prob=0.5, rotate_degrees=10.0, **off),
        "none": Augmentation(flip_prob=0.0, rot90_prob=0.0, affine_prob=0.0, **off),
        "default": Augmentation(),
    }


AUGMENT_TEXT = {
    "flips": "random flips",
    "affine": "random flips + affine (rotation ±10°, scale ±10%, p 0.5)",
    "default": "medfocal's default `Augmentation()`",
    "none": "none",
}


def data_root(explicit: str | None = None) -> Path:
    """``--data``, else ``$MEDFOCAL_DATA``, else ``<repo>/../shared/data``."""
    return Path(explicit or os.environ.get("MEDFOCAL_DATA") or REPO.parent / "shared" / "data")


def _quiet() -> None:
    import logging

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _cpu_trainer(run_dir: Path, epochs: int, callbacks: list[Any], **kwargs: Any) -> Any:
    """A quiet single-device CPU ``Trainer`` logging to ``<run_dir>/logs`` (CSV)."""
    import pytorch_lightning as pl

    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=pl.loggers.CSVLogger(run_dir, name="logs"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def _best_epoch(checkpoint: Any) -> int | None:
    import torch

    path = checkpoint.best_model_path
    if not path or not Path(path).is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=False).get("epoch", -1))


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {float(np.std(values, ddof=1)):.3f}"


def load_records(path: Path, include_smoke: bool = False) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if include_smoke or not r.get("smoke")]
