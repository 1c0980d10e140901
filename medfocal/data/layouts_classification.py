"""Classification layouts: an ImageFolder tree (one folder per class) and a MedMNIST ``.npz``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medfocal.data.layouts_base import _SPLITS, Layout, _require_dir, _require_file
from medfocal.io import IMAGE_SUFFIXES, strip_suffix

__all__ = ["ImageFolderLayout", "MedMNISTLayout"]


class ImageFolderLayout(Layout):
    """Classification tree ``root/<class>/<image>`` (torchvision ImageFolder, BreakHis).

    If ``root`` holds ``train``/``val``/``test`` sub-folders, those give the split. Class names are the
    sorted class folder names; the label is the class index.
    """

    def __init__(self, root: str) -> None:
        self.root = str(_require_dir(Path(root), "ImageFolderLayout.root"))

    def _split_dirs(self) -> list[tuple[Path, str | None]]:
        root = Path(self.root)
        named = {"train": "train", "val": "val", "validation": "val", "test": "test"}
        found = [(root / name, split) for name, split in named.items() if (root / name).is_dir()]
        return found or [(root, None)]

    def class_names(self) -> list[str] | None:
        names: set[str] = set()
        for folder, _ in self._split_dirs():
            names |= {p.name for p in folder.iterdir() if p.is_dir()}
        return sorted(names)

    def records(self) -> list[dict[str, Any]]:
        classes = self.class_names() or []
        index = {name: i for i, name in enumerate(classes)}
        out = []
        for folder, split in self._split_dirs():
            for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                for image in sorted(class_dir.rglob("*")):
                    if image.is_file() and image.name.lower().endswith(IMAGE_SUFFIXES):
                        out.append(
                            {
                                "image": str(image.resolve()),
                                "label": index[class_dir.name],
                                "case": strip_suffix(image.name),
                                "split": split,
                            }
                        )
        return out


class MedMNISTLayout(Layout):
    """A MedMNIST ``.npz`` (``{train,val,test}_images`` uint8, ``_labels`` of shape (N,) or (N, 1)).

    Images become channel-first float arrays in memory: 2D grey ``(N, H, W)`` -> ``(1, H, W)``, RGB
    ``(N, H, W, 3)`` -> ``(3, H, W)``, 3D ``(N, D, H, W)`` -> ``(1, D, H, W)``. Labels ``(N, 1)`` are
    squeezed to ints; multi-label ``(N, K)`` (K > 1) stay float vectors.

    Args:
        npz: path of the file.
        spatial_dims: 2 or 3; ``None`` guesses (3 when images are 4D and the last axis is not 3).

    Raises:
        FileNotFoundError: missing file. ValueError: missing arrays (named) or inconsistent lengths.
    """

    def __init__(self, npz: str, spatial_dims: int | None = None) -> None:
        self.npz = _require_file(Path(npz), "MedMNISTLayout")
        self.root = str(self.npz)
        self._spatial_dims = spatial_dims
        self._arrays: dict[str, np.ndarray] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The raw arrays of the file (loaded once)."""
        if self._arrays is None:
            with np.load(self.npz) as data:
                missing = [k for k in ("train_images", "train_labels") if k not in data]
                if missing:
                    raise ValueError(f"{self.npz}: expected arrays {missing}, found {sorted(data.files)}")
                self._arrays = {k: data[k] for k in data.files}
        return self._arrays

    def spatial_dims(self) -> int:
        """2 or 3, from the image array shape unless given."""
        if self._spatial_dims is not None:
            return self._spatial_dims
        shape = self.arrays()["train_images"].shape
        return 3 if len(shape) == 4 and shape[-1] != 3 else 2

    def _channel_first(self, images: np.ndarray) -> np.ndarray:
        dims = self.spatial_dims()
        if images.ndim == dims + 1:
            return images[:, None].astype(np.float32)
        if images.ndim == dims + 2:
            return np.moveaxis(images, -1, 1).astype(np.float32)
        raise ValueError(f"{self.npz}: images of shape {images.shape} do not fit spatial_dims={dims}")

    def labels(self, split: str = "train") -> np.ndarray:
        """Labels of one split: ``(N,)`` int64, or ``(N, K)`` float32 when multi-label."""
        labels = self.arrays()[f"{split}_labels"]
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        return labels.astype(np.int64) if labels.ndim == 1 else labels.astype(np.float32)

    def records(self) -> list[dict[str, Any]]:
        arrays = self.arrays()
        out = []
        for split in _SPLITS:
            if f"{split}_images" not in arrays:
                continue
            images = self._channel_first(arrays[f"{split}_images"])
            labels = self.labels(split)
            if len(images) != len(labels):
                raise ValueError(f"{self.npz}: {len(images)} {split}_images but {len(labels)} {split}_labels")
            for i in range(len(images)):
                label = int(labels[i]) if labels.ndim == 1 else labels[i]
                out.append({"image": images[i], "label": label, "case": f"{split}_{i:05d}", "split": split})
        return out

    def in_channels(self) -> int | None:
        return int(self._channel_first(self.arrays()["train_images"][:1]).shape[1])
