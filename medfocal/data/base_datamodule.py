"""The datamodule base: layout, preprocessing, class names, splits, validation, datasets and loaders.

Task datamodules (:class:`~medfocal.data.SegmentationDataModule`,
:class:`~medfocal.data.ClassificationDataModule`) add what differs: class names and counts, transforms.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from monai.data import DataLoader
from pytorch_lightning.utilities import rank_zero_warn

from medfocal.data.check_cache import ContentCache, default_cache_file
from medfocal.data.checks import CaseSummary, validate_records
from medfocal.data.errors import DataSplitError
from medfocal.data.layouts import Layout, MedMNISTLayout, detect_layout
from medfocal.data.loading import LoaderConfig, make_dataset, make_loader, split_records
from medfocal.data.transforms import MASK_KEYS, PreprocessingSpec, inference_transforms

__all__ = ["BaseDataModule"]


class BaseDataModule(pl.LightningDataModule):
    """Shared layout resolution, seeded splits, caching and loaders (settings in :class:`LoaderConfig`)."""

    task = "base"

    def __init__(
        self,
        layout: Layout | str,
        preprocessing: PreprocessingSpec | None,
        class_names: list[str] | None,
        loading: LoaderConfig,
    ) -> None:
        super().__init__()
        self.layout = detect_layout(layout) if isinstance(layout, (str, Path)) else layout
        self._spec_arg = preprocessing
        self._class_names_arg = list(class_names) if class_names is not None else None
        self.loading = loading
        self._records: list[dict[str, Any]] | None = None
        self._splits: dict[str, list[dict[str, Any]]] | None = None
        self._datasets: dict[str, Any] = {}
        self._counts: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Training batch size (settable: Lightning's batch-size finder writes it)."""
        return self.loading.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.loading.batch_size = int(value)

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
            self._splits = split_records(self.records, self.loading, self._stratify_labels)
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

    def validate(
        self, full: bool = True, raise_on_error: bool = True, cache: ContentCache | None = None
    ) -> tuple[list[CaseSummary], list[str]]:
        """Run :func:`medfocal.data.checks.validate_records` over every split.

        ``cache``: with ``full``, skip reading files that passed the content checks before.

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
            cache=cache,
        )

    # -- datasets and loaders ------------------------------------------------------------------------

    def _dataset(self, records: list[dict[str, Any]], transform: Any, cache: bool) -> Any:
        return make_dataset(records, transform, self.loading, cache)

    def setup(self, stage: str | None = None) -> None:
        """Split, validate (``check``) and build the datasets of ``stage``."""
        if self.loading.check != "none" and not getattr(self, "_checked", False):
            # quick: headers every run; NaN/Inf and label values read once per file version (cached)
            quick = self.loading.check == "quick"
            self.validate(full=True, cache=ContentCache(default_cache_file()) if quick else None)
            self._checked = True
        if stage in ("fit", None):
            if not self.splits["train"]:
                raise ValueError(f"{self.describe()}: empty training split")
            self._write_splits()
            self._datasets["train"] = self._dataset(self.splits["train"], self.train_transform(), cache=True)
        if stage in ("fit", "validate", None) and self.splits["val"]:
            keys = self._keys(self.splits["val"])
            self._datasets["val"] = self._dataset(self.splits["val"], self.val_transform(keys), cache=True)
        if stage in ("test", None):
            test = self._labelled_test_records(strict=stage == "test")
            if test:
                keys = self._keys(test)
                self._datasets["test"] = self._dataset(test, self.val_transform(keys), cache=False)
        if stage in ("predict", None):
            records = self.splits["test"] or self.splits["val"]
            keys = self._keys(records)
            self._datasets["predict"] = self._dataset(records, self.val_transform(keys), cache=False)

    def splits_record(self) -> dict[str, list[dict[str, Any]]]:
        """The splits as JSON-ready case lists: ``{"train"|"val"|"test": [{"case", "image", "label"}]}``.

        Paths and labels as the layout gives them (a list of paths for multi-channel images), plus the
        region masks a record has (``fov``, ``mask``, ``brainmask``: what ``medfocal evaluate --roi``
        scores inside); images held in memory (MedMNIST arrays) are named by their ``case`` only; other
        keys (boxes) are left out.
        """

        def plain(value: Any) -> Any:
            if isinstance(value, (list, tuple)):
                items = [plain(v) for v in value]
                return None if any(v is None for v in items) else items
            if isinstance(value, (str, Path)):
                return str(value)
            if isinstance(value, (np.ndarray, torch.Tensor)):
                flat = value.reshape(-1).tolist()
                return flat[0] if len(flat) == 1 else None  # an image held in memory: named by its case
            if isinstance(value, np.generic):
                return value.item()
            return value if isinstance(value, (int, float, bool)) else None

        out: dict[str, list[dict[str, Any]]] = {}
        for name, records in self.splits.items():
            rows = [
                {k: plain(r[k]) for k in ("case", "image", "label", *MASK_KEYS) if k in r} for r in records
            ]
            out[name] = [{k: v for k, v in row.items() if v is not None} for row in rows]
        return out

    def _write_splits(self) -> None:
        """``splits.json`` in the run's log folder (which cases trained and validated, as nnU-Net's
        ``splits_final.json``), rank 0 only, written atomically; nothing without a trainer or in a
        ``fast_dev_run`` (which writes no logs or checkpoints either)."""
        trainer = self.trainer
        if trainer is None or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        # the logger's folder, not ``trainer.log_dir``: that one broadcasts, a collective that rank 0 alone
        # would wait on forever under DDP
        folder = Path(getattr(trainer.logger, "log_dir", None) or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(self.splits_record(), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / "splits.json")

    def _labelled_test_records(self, strict: bool) -> list[dict[str, Any]]:
        """The cases ``test`` scores: the labelled cases of the test split (else the validation split).

        Raises:
            DataSplitError: (``strict``) the test split has cases but none with a label.
        """
        test = self.splits["test"]
        if not test:
            return self.splits["val"]
        labelled = [r for r in test if "label" in r]
        if len(labelled) < len(test) and strict:
            if not labelled:
                raise DataSplitError(
                    f"{self.describe()}: the test split's {len(test)} case(s) have no labels, so "
                    "`medfocal test` cannot score them; write their masks with `medfocal infer -c "
                    "CHECKPOINT -i TEST_IMAGES -o PREDICTIONS` and score them with `medfocal evaluate "
                    "-p PREDICTIONS -g TEST_LABELS`, or score the validation split with `medfocal "
                    "validate`"
                )
            rank_zero_warn(
                f"{self.describe()}: scoring the {len(labelled)} labelled test case(s); "
                f"{len(test) - len(labelled)} test case(s) have no label and are left out"
            )
        return labelled

    def _keys(self, records: list[dict[str, Any]]) -> tuple[str, ...]:
        return ("image", "label") if records and all("label" in r for r in records) else ("image",)

    def train_transform(self) -> Any:
        raise NotImplementedError

    def val_transform(self, keys: Sequence[str] | None = None) -> Any:
        raise NotImplementedError

    def _loader(self, name: str, batch_size: int, shuffle: bool, sampler: Any = None) -> DataLoader:
        if name not in self._datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[name])
        return make_loader(self._datasets[name], batch_size, self.loading, shuffle, sampler)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.splits["val"]:
            return []
        return self._loader("val", self.loading.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.loading.val_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split (all its cases, labelled or not; else the validation split)."""
        return self._loader("predict", self.loading.val_batch_size, shuffle=False)
