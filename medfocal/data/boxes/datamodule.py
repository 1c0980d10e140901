"""``DetectionDataModule``: box layouts -> box-aware MONAI transforms -> batches of images and box lists.

A batch is a dict::

    {"image": Tensor (B, C, *spatial),          # zero-padded at the end to the largest image of the batch
     "boxes": [Tensor (N_i, 2 * dims)],         # corner mode (xyxy / xyzxyz), voxels of the transformed image
     "labels": [Tensor (N_i,)],                 # class indices
     "affine": [Tensor (dims + 1, dims + 1)],   # voxel -> world of the transformed image
     "spatial_size": [list[int]],               # size of each image before padding
     "id": [str]}
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from monai.data import CacheDataset, Dataset
from torch.utils.data import DataLoader

from medfocal.data.boxes.checks import box_summary, check_record
from medfocal.data.boxes.layouts import BoxLayout, BoxRecord, detect_box_layout
from medfocal.data.boxes.transforms import BoxPreprocessing, detection_transforms
from medfocal.data.checks import CaseSummary
from medfocal.data.transforms import PreprocessingSpec

__all__ = ["DetectionDataModule", "detection_collate"]


def _flatten(items: Sequence[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def _plain(value: Any, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=dtype)
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def detection_collate(items: Sequence[Any]) -> dict[str, Any]:
    """Collate detection samples (nested lists from multi-crop transforms are flattened; see module doc)."""
    samples = _flatten(items)
    images = [s["image"] for s in samples]
    dims = images[0].ndim - 1
    sizes = [list(im.shape[1:]) for im in images]
    target = [max(s[a] for s in sizes) for a in range(dims)]
    padded = []
    for im in images:
        plain = im.as_tensor() if hasattr(im, "as_tensor") else torch.as_tensor(im)
        pad: list[int] = []
        for a in reversed(range(dims)):
            pad += [0, target[a] - plain.shape[a + 1]]
        padded.append(F.pad(plain, pad) if any(pad) else plain)
    affines = []
    for im in images:
        affine = getattr(im, "affine", None)
        affine = torch.as_tensor(affine, dtype=torch.float64) if affine is not None else torch.eye(dims + 1)
        if affine.shape[0] > dims + 1:  # MONAI keeps 4x4 affines for 2D images: keep the x, y rows/columns
            keep = [*range(dims), affine.shape[0] - 1]
            affine = affine[keep][:, keep]
        affines.append(affine)
    return {
        "image": torch.stack(padded),
        "boxes": [_plain(s["boxes"], torch.float32).reshape(-1, 2 * dims) for s in samples],
        "labels": [_plain(s["labels"], torch.long).reshape(-1) for s in samples],
        "affine": affines,
        "spatial_size": sizes,
        "id": [str(s.get("id", i)) for i, s in enumerate(samples)],
    }


class DetectionDataModule(pl.LightningDataModule):
    """Detection data from a Pascal VOC folder, a COCO JSON or MONAI's box JSON (2D and 3D).

    Splits: the layout's own (``ImageSets/Main/{train,val,test}.txt``; box JSON ``training``/
    ``validation``/``test``); without a validation split, ``val_fraction`` of the training images is held
    out (seeded). Boxes that leave the image after any transform are clipped, empty ones dropped.

    Args:
        layout: path of the VOC folder, COCO JSON or box JSON.
        class_names: class names (no background); default the names found (VOC: sorted; COCO: by id).
        image_root: folder the image paths of a COCO / box JSON are relative to (default: the JSON's).
        modality: ``"rgb"``, ``"grey"`` (2D) or ``"ct"`` (3D).
        zoom: 2D resize factor (e.g. 0.5 for 640x480 smears -> 320x240).
        orientation: 3D axcodes (``"RAS"``), ``""`` keeps the stored orientation.
        spacing: 3D target voxel size in mm, None keeps the native grid.
        window: CT window in HU scaled to [0, 1].
        affine_lps_to_ras: world boxes are in ITK's LPS world (LUNA16 box JSON) and the image affine RAS.
        box_mode: MONAI mode of the stored boxes; default ``"xyxy"`` for 2D layouts,
            ``"cccwhd"`` for box JSON.
        patch_size: training crop size around positive/negative boxes; None trains on whole images.
        num_samples: training crops per image.
        flip_prob, rot90_prob, intensity_prob: augmentation probabilities (see ``detection_transforms``).
        batch_size: training images (crops) per batch; val_batch_size: validation images per batch.
        val_fraction: held-out share of the training images when the layout has no validation split.
        num_workers: DataLoader workers.
        cache_rate: share of each split whose deterministic preprocessing (load, orient, resample, scale,
            zoom: everything before the first random transform) MONAI's ``CacheDataset`` keeps in memory
            after the first read; the random augmentations still run on every draw, so batches are the
            same as without the cache. 1.0 for small 2D sets (BCCD at zoom 0.4: about 170 MB), 0 (default)
            for CT volumes that do not fit in memory.
        seed: seed of the train/val split.

    Example::

        dm = DetectionDataModule("data/bccd", modality="rgb", zoom=0.5, batch_size=4)
        dm.setup("fit"); dm.class_names, dm.class_counts()
    """

    def __init__(
        self,
        layout: str | Path,
        class_names: Sequence[str] | None = None,
        image_root: str | Path | None = None,
        modality: str = "rgb",
        zoom: float | None = None,
        orientation: str = "",
        spacing: Sequence[float] | None = None,
        window: Sequence[float] = (-1000.0, 500.0),
        affine_lps_to_ras: bool = False,
        box_mode: str | None = None,
        patch_size: Sequence[int] | None = None,
        num_samples: int = 1,
        flip_prob: float = 0.5,
        rot90_prob: float = 0.0,
        intensity_prob: float = 0.0,
        batch_size: int = 4,
        val_batch_size: int = 1,
        val_fraction: float = 0.2,
        num_workers: int = 0,
        cache_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layout_path = Path(layout)
        self._class_names = list(class_names) if class_names is not None else None
        self.image_root = image_root
        self._layout: BoxLayout | None = None
        self._splits: dict[str, list[BoxRecord]] | None = None
        self.modality = modality
        self.zoom = zoom
        self.orientation = orientation
        self.spacing = list(spacing) if spacing is not None else None
        self.window = list(window)
        self.affine_lps_to_ras = affine_lps_to_ras
        self.box_mode = box_mode
        self.patch_size = list(patch_size) if patch_size is not None else None
        self.num_samples = int(num_samples)
        self.flip_prob, self.rot90_prob, self.intensity_prob = flip_prob, rot90_prob, intensity_prob
        self.batch_size, self.val_batch_size = int(batch_size), int(val_batch_size)
        self.val_fraction = float(val_fraction)
        self.num_workers = int(num_workers)
        if not 0.0 <= float(cache_rate) <= 1.0:
            raise ValueError(f"cache_rate must be a share in [0, 1], not {cache_rate}")
        self.cache_rate = float(cache_rate)
        self._cached: dict[tuple[str, bool], CacheDataset] = {}
        self.seed = int(seed)

    # ----------------------------------------------------------------- layout and splits
    @property
    def layout(self) -> BoxLayout:
        """The parsed layout (read on first use)."""
        if self._layout is None:
            self._layout = detect_box_layout(self.layout_path, self._class_names, self.image_root)
        return self._layout

    @property
    def splits(self) -> dict[str, list[BoxRecord]]:
        """``{"train", "val"(, "test")}`` records; ``val`` split off ``train`` when the layout has none."""
        if self._splits is None:
            splits = {k: list(v) for k, v in self.layout.splits.items()}
            if not splits.get("val"):
                train = splits.get("train", [])
                order = np.random.default_rng(self.seed).permutation(len(train))
                n_val = max(1, round(self.val_fraction * len(train))) if len(train) > 1 else 0
                splits["val"] = [train[i] for i in sorted(order[:n_val])]
                splits["train"] = [train[i] for i in sorted(order[n_val:])]
            if not splits.get("train"):
                raise ValueError(f"{self.layout_path}: no training images found")
            self._splits = splits
        return self._splits

    @property
    def box_preprocessing(self) -> BoxPreprocessing:
        """How images and boxes become the network input (:func:`detection_transforms`)."""
        layout = self.layout
        return BoxPreprocessing(
            modality=self.modality,
            spatial_dims=layout.spatial_dims,
            box_mode=self.box_mode or layout.box_mode,
            world_coordinates=layout.world_coordinates,
            affine_lps_to_ras=self.affine_lps_to_ras,
            orientation=self.orientation,
            spacing=self.spacing,
            window=self.window,
            zoom=self.zoom,
        )

    @property
    def preprocessing(self) -> PreprocessingSpec:
        """The image preprocessing inference repeats (``ModelCard.preprocessing``; see
        :meth:`BoxPreprocessing.image_spec`); the box part is :attr:`box_preprocessing`."""
        return self.box_preprocessing.image_spec()

    @property
    def class_names(self) -> list[str]:
        """Object class names (index = label; no background)."""
        return list(self.layout.class_names)

    @property
    def num_classes(self) -> int:
        """Number of object classes."""
        return len(self.class_names)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.layout.spatial_dims

    @property
    def in_channels(self) -> int:
        """Image channels the network receives."""
        return self.box_preprocessing.in_channels

    @property
    def roi_size(self) -> list[int] | None:
        """The training patch size (None: whole images)."""
        return self.patch_size

    def class_counts(self) -> torch.Tensor:
        """Training boxes per class, float ``(num_classes,)`` (for ``alpha: auto`` of the focal loss)."""
        counts = np.zeros(self.num_classes)
        for rec in self.splits["train"]:
            counts += np.bincount(rec.labels, minlength=self.num_classes)[: self.num_classes]
        return torch.as_tensor(counts, dtype=torch.float32)

    def summary(self, split: str = "train") -> dict[str, dict[str, float]]:
        """Per-class box counts and sizes of a split (see :func:`box_summary`)."""
        return box_summary(self.splits[split], self.class_names, self.box_mode or self.layout.box_mode)

    def validate(self, full: bool = True, raise_on_error: bool = True) -> tuple[list[CaseSummary], list[str]]:
        """Check every image's boxes (``medfocal check-data``): positive size, known labels, inside the image.

        Args:
            full: also read each image's header (size; 3D: affine), so that boxes are checked against
                the real image (world boxes through its affine) and a stored size against the file's.
                Without it only the annotation's own size (VOC ``<size>``, COCO width/height) is used and
                the files are only checked to exist.
            raise_on_error: raise ``ValueError`` listing the first problems instead of returning them.

        Returns:
            ``(summaries, problems)``: one :class:`~medfocal.data.checks.CaseSummary` per image (its
            ``label`` is the per-class box count, e.g. ``"RBC 12, WBC 1"``) and one line per problem.
        """
        summaries: list[CaseSummary] = []
        problems: list[str] = []
        for split, records in self.splits.items():
            for rec in records:
                summary, found = check_record(rec, split, self.box_preprocessing, self.class_names, full)
                summaries.append(summary)
                problems += found
        if problems and raise_on_error:
            shown = "; ".join(problems[:5])
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ValueError(f"{self.layout_path}: {len(problems)} box problem(s): {shown}{more}")
        return summaries, problems

    def describe(self) -> str:
        """One line: images per split, then per class the boxes and their mean side (median, min-max).

        Example: ``2D detection data bccd (images: train 205, val 87, test 72); boxes: RBC 4155,
        side 98.3 px (28.0-191.5); ...``. :func:`format_box_summary` of :meth:`summary` is the table form.
        """
        layout = self.layout
        counts = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        unit = "mm" if layout.world_coordinates else "px"
        records = [r for recs in self.splits.values() for r in recs]
        stats = box_summary(records, self.class_names, self.box_mode or layout.box_mode)
        boxes = "; ".join(
            f"{name} {s['boxes']}, side {s['size_median']:.1f} {unit} "
            f"({s['size_min']:.1f}-{s['size_max']:.1f})"
            if s["boxes"]
            else f"{name} 0"
            for name, s in stats.items()
        )
        return f"{layout.spatial_dims}D detection data {self.layout_path} (images: {counts}); boxes: {boxes}"

    # ----------------------------------------------------------------- datasets and loaders
    def setup(self, stage: str | None = None) -> None:
        _, problems = self.validate(full=False, raise_on_error=False)
        if problems:
            warnings.warn(
                f"{self.layout_path}: {len(problems)} box problem(s) (clipped or dropped by the transforms); "
                f"first: {problems[0]}",
                stacklevel=2,
            )

    def _transform(self, train: bool) -> Any:
        return detection_transforms(
            self.box_preprocessing,
            train=train,
            patch_size=self.patch_size,
            num_samples=self.num_samples,
            flip_prob=self.flip_prob,
            rot90_prob=self.rot90_prob,
            intensity_prob=self.intensity_prob,
        )

    def _dataset(self, split: str, train: bool) -> Dataset:
        """The split's dataset; with ``cache_rate`` one ``CacheDataset`` per split, filled once and reused
        by every loader asked for (Lightning asks for new loaders on each ``fit``/``validate``)."""
        data = [r.as_dict() for r in self.splits.get(split, [])]
        if self.cache_rate <= 0 or not data:
            return Dataset(data, transform=self._transform(train))
        key = (split, train)
        if key not in self._cached:
            self._cached[key] = CacheDataset(
                data,
                transform=self._transform(train),
                cache_rate=self.cache_rate,
                num_workers=0,
                progress=False,
            )
        return self._cached[key]

    def _loader(self, split: str, train: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            self._dataset(split, train),
            batch_size=batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            collate_fn=detection_collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if self.splits.get("test") else "val", False, self.val_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
