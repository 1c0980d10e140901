"""Dataset layouts: where the images and labels of a dataset are, as lists of MONAI-style dicts.

Each layout is a small class with a typed ``__init__`` (so LightningCLI builds it from YAML through
``class_path``) and a ``records()`` method returning ``[{"image": path | [paths], "label": path | int,
"case": str, "split": "train" | "val" | "test" | None}, ...]``. A path string alone is recognised by
:func:`detect_layout`. Multi-modal images are a list of paths per record (stacked as channels by
``LoadImaged``) or one 4D file.

Example::

    layout = CaseFoldersLayout("brats2013/train", channels=["Flair*.nii.gz", "T1c*.nii.gz"],
                               label="OTMultiClass.nii.gz", val_root="brats2013/validation")
    records = layout.records()

Files: ``layouts_base.py`` (the :class:`Layout` interface), ``layouts_classification.py`` (ImageFolder,
MedMNIST), this module (segmentation layouts and :func:`detect_layout`; re-exports all of them). Image
suffixes and case ids come from :mod:`medfocal.io`, shared with ``medfocal infer``.
"""

from __future__ import annotations

import csv as csv_module
import json
from pathlib import Path
from typing import Any

from medfocal.data.errors import DataValidationError
from medfocal.data.layouts_base import _SPLITS, Layout, _require_dir, _require_file
from medfocal.data.layouts_classification import ImageFolderLayout, MedMNISTLayout
from medfocal.io import IMAGE_SUFFIXES, strip_suffix

__all__ = [
    "CSVLayout",
    "CaseFoldersLayout",
    "DecathlonLayout",
    "ImageFolderLayout",
    "Layout",
    "MedMNISTLayout",
    "PairedFoldersLayout",
    "detect_layout",
    "strip_suffix",
]


class DecathlonLayout(Layout):
    """Medical Segmentation Decathlon folder: ``dataset.json`` + ``imagesTr``/``labelsTr`` (+ ``imagesTs``).

    Class names come from ``"labels"``, channels from ``"modality"``. ``training`` items have no split
    (the datamodule splits them); ``test`` items (paths, or dicts with a label) become the test split.

    Args:
        root: the folder (or the ``dataset.json`` path itself).
        dataset_json: file name of the JSON inside ``root``.

    Raises:
        FileNotFoundError: no ``dataset.json``.
        DataValidationError: (a ``ValueError``) the JSON is malformed: a syntax error, not an object, no
            ``training`` list, an entry without ``image``/``label``, ``labels`` or ``modality`` neither a
            mapping nor a list; every problem is listed, each naming the file.
    """

    def __init__(self, root: str, dataset_json: str = "dataset.json") -> None:
        path = Path(root)
        if path.is_file():
            path, dataset_json = path.parent, path.name
        self.root = str(path)
        self.json_path = _require_file(path / dataset_json, "DecathlonLayout")
        self._meta = _read_dataset_json(self.json_path)

    def _path(self, rel: str) -> str:
        return str((Path(self.root) / rel).resolve())

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in self._meta["training"]:
            out.append(
                {
                    "image": self._path(item["image"]),
                    "label": self._path(item["label"]),
                    "case": strip_suffix(Path(item["image"]).name),
                    "split": None,
                }
            )
        for item in self._meta.get("test", []):
            record: dict[str, Any] = {"split": "test"}
            if isinstance(item, str):
                record["image"] = self._path(item)
            else:
                record["image"] = self._path(item["image"])
                if "label" in item:
                    record["label"] = self._path(item["label"])
            record["case"] = strip_suffix(Path(record["image"]).name)
            out.append(record)
        return out

    def class_names(self) -> list[str] | None:
        labels = self._meta.get("labels")
        if not labels:
            return None
        if isinstance(labels, dict):
            return [name for _, name in _label_pairs(labels)]
        return [str(v) for v in labels]

    def in_channels(self) -> int | None:
        modality = self._meta.get("modality") or self._meta.get("channel_names")
        return len(modality) if modality else None


def _read_dataset_json(path: Path) -> dict[str, Any]:
    """The parsed ``dataset.json``, checked for the fields :class:`DecathlonLayout` reads."""
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataValidationError(
            [f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"]
        ) from None
    except UnicodeDecodeError:
        message = f"{path}: not a text file (expected a JSON dataset description)"
        raise DataValidationError([message]) from None
    if not isinstance(meta, dict):
        raise DataValidationError(
            [f"{path}: expected a JSON object with a 'training' list, got a JSON {type(meta).__name__}"]
        )
    problems: list[str] = []
    training = meta.get("training")
    if not isinstance(training, list):
        problems.append(f'{path}: expected a \'training\' list of {{"image": ..., "label": ...}} entries')
        training = []
    for i, item in enumerate(training):
        entry = item if isinstance(item, dict) else {}
        missing = [k for k in ("image", "label") if not isinstance(entry.get(k), str)]
        if missing:
            problems.append(
                f"{path}: training[{i}] = {json.dumps(item)[:80]} lacks {' and '.join(missing)} "
                '(expected {"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"})'
            )
    test = meta.get("test", [])
    if not isinstance(test, list):
        problems.append(f"{path}: 'test' must be a list of image paths, got {json.dumps(test)[:60]}")
        test = []
    for i, item in enumerate(test):
        if not isinstance(item, str) and not (isinstance(item, dict) and isinstance(item.get("image"), str)):
            shown = json.dumps(item)[:80]
            problems.append(f"{path}: test[{i}] = {shown} is neither a path nor has an 'image'")
    for key, example in (("labels", '{"0": "background", "1": "tumour"}'), ("modality", '{"0": "MRI"}')):
        value = meta.get(key)
        if value is not None and not isinstance(value, (dict, list)):
            shown = json.dumps(value)[:60]
            problems.append(f"{path}: {key!r} must be a mapping such as {example}, got {shown}")
    labels = meta.get("labels")
    if isinstance(labels, dict) and labels:
        try:
            _label_pairs(labels)
        except (TypeError, ValueError):
            problems.append(
                f'{path}: \'labels\' must map class indices to names ({{"0": "background"}}) or names to '
                f'indices ({{"background": 0}}), got {json.dumps(labels)[:80]}'
            )
    if problems:
        raise DataValidationError(problems)
    return meta


def _label_pairs(labels: dict[str, Any]) -> list[tuple[int, str]]:
    """``(index, name)`` pairs from MSD ``{"0": "background"}`` or nnU-Net v2 ``{"background": 0}``."""
    try:
        return sorted((int(k), str(v)) for k, v in labels.items())
    except (TypeError, ValueError):
        pairs = sorted((int(v), str(k)) for k, v in labels.items())
    return pairs


class CSVLayout(Layout):
    """A CSV manifest: one row per case, an image column (or several channel columns) and a label column.

    Args:
        csv: path of the CSV file; relative paths inside it are resolved against ``base_dir`` (default:
            the CSV's folder).
        image: column name, or a list of columns stacked as channels (e.g. ``["flair", "t1c"]``).
        label: label column: a mask path (segmentation) or a class name/index (classification).
        split: optional column holding ``train``/``val``/``test`` (``validation`` is accepted).
        case: optional column with the case id (default: the image file name).
        base_dir: folder for relative paths.

    Raises:
        FileNotFoundError: the CSV is missing.
        ValueError: a named column is not in the header.
    """

    def __init__(
        self,
        csv: str,
        image: str | list[str] = "image",
        label: str = "label",
        split: str | None = "split",
        case: str | None = None,
        base_dir: str | None = None,
    ) -> None:
        self.csv = _require_file(Path(csv), "CSVLayout")
        self.root = str(self.csv)
        self.image_columns = [image] if isinstance(image, str) else list(image)
        self.label_column = label
        self.split_column = split
        self.case_column = case
        self.base_dir = Path(base_dir) if base_dir else self.csv.parent
        with self.csv.open(newline="") as handle:
            reader = csv_module.DictReader(handle)
            header = reader.fieldnames or []
            self._rows = list(reader)
        needed = [*self.image_columns, label] + ([case] if case else [])
        missing = [c for c in needed if c not in header]
        if missing:
            raise ValueError(f"{self.csv}: expected columns {needed}, missing {missing} (header: {header})")
        if split not in header:
            self.split_column = None

    def _resolve(self, value: str) -> str:
        path = Path(value)
        return str(path if path.is_absolute() else (self.base_dir / path).resolve())

    def _label(self, value: str) -> Any:
        if any(value.lower().endswith(s) for s in IMAGE_SUFFIXES):
            return self._resolve(value)
        return value  # class name or index; the datamodule maps it

    def records(self) -> list[dict[str, Any]]:
        out = []
        for row in self._rows:
            images = [self._resolve(row[c]) for c in self.image_columns]
            split = row.get(self.split_column, "") if self.split_column else ""
            split = split.strip().lower()
            split = {"validation": "val", "training": "train"}.get(split, split)
            if split and split not in _SPLITS:
                raise ValueError(f"{self.csv}: split column value {split!r}, expected one of {_SPLITS}")
            out.append(
                {
                    "image": images[0] if len(images) == 1 else images,
                    "label": self._label(row[self.label_column]),
                    "case": row[self.case_column] if self.case_column else strip_suffix(Path(images[0]).name),
                    "split": split or None,
                }
            )
        return out

    def in_channels(self) -> int | None:
        return len(self.image_columns) if len(self.image_columns) > 1 else None


class PairedFoldersLayout(Layout):
    """Paired folders ``images/`` and ``masks/`` matched by case name (ISIC, Kvasir-SEG, DRIVE).

    The case name is the image file name without ``image_suffix`` (default: without its extension); the
    mask is ``<case><mask_suffix>`` (default: any file of that case name with an image extension).
    DRIVE: ``image_suffix="_training.tif", mask_suffix="_manual1.gif"``, optional field-of-view masks
    ``fov_dir`` + ``fov_suffix="_training_mask.gif"`` (stored under the ``"fov"`` key).

    Raises:
        FileNotFoundError: a folder is missing, or an image has no mask (all such images are named).
    """

    def __init__(
        self,
        images_dir: str,
        masks_dir: str | None = None,
        image_suffix: str | None = None,
        mask_suffix: str | None = None,
        fov_dir: str | None = None,
        fov_suffix: str | None = None,
    ) -> None:
        self.images_dir = _require_dir(Path(images_dir), "PairedFoldersLayout.images_dir")
        self.root = str(self.images_dir.parent)
        self.masks_dir = _require_dir(Path(masks_dir), "PairedFoldersLayout.masks_dir") if masks_dir else None
        self.image_suffix = image_suffix
        self.mask_suffix = mask_suffix
        self.fov_dir = _require_dir(Path(fov_dir), "PairedFoldersLayout.fov_dir") if fov_dir else None
        self.fov_suffix = fov_suffix

    def _case(self, name: str) -> str | None:
        if self.image_suffix is None:
            return strip_suffix(name) if name.lower().endswith(IMAGE_SUFFIXES) else None
        return name[: -len(self.image_suffix)] if name.endswith(self.image_suffix) else None

    @staticmethod
    def _find(folder: Path, case: str, suffix: str | None) -> Path | None:
        if suffix is not None:
            path = folder / f"{case}{suffix}"
            return path if path.exists() else None
        for path in sorted(folder.glob(f"{case}.*")):
            if path.name.lower().endswith(IMAGE_SUFFIXES) and strip_suffix(path.name) == case:
                return path
        return None

    def records(self) -> list[dict[str, Any]]:
        out, unmatched = [], []
        for image in sorted(self.images_dir.iterdir()):
            case = self._case(image.name)
            if case is None or not image.is_file():
                continue
            record: dict[str, Any] = {"image": str(image.resolve()), "case": case, "split": None}
            if self.masks_dir is not None:
                mask = self._find(self.masks_dir, case, self.mask_suffix)
                if mask is None:
                    unmatched.append(image.name)
                    continue
                record["label"] = str(mask.resolve())
            if self.fov_dir is not None:
                fov = self._find(self.fov_dir, case, self.fov_suffix)
                if fov is not None:
                    record["fov"] = str(fov.resolve())
            out.append(record)
        if unmatched:
            expected = f"<case>{self.mask_suffix}" if self.mask_suffix else "<case>.<ext>"
            raise FileNotFoundError(
                f"{self.masks_dir}: no mask named {expected} for images {unmatched}; "
                "set image_suffix/mask_suffix when names differ"
            )
        return out


class CaseFoldersLayout(Layout):
    """One folder per case holding one file per channel (BraTS-style), matched by glob patterns.

    Args:
        root: folder of case folders (each sub-folder is a case).
        channels: one glob per channel inside a case folder, in channel order
            (e.g. ``["Flair*.nii.gz", "T1c*.nii.gz"]``); each must match exactly one file.
        label: glob of the label map (``None`` for unlabelled cases).
        val_root / test_root: optional folders of validation / test cases (an explicit split).
        mask: optional glob of a binary region mask (e.g. ``"brainmask.nii.gz"``), stored under the
            ``"mask"`` key: loaded with the evaluation splits and usable as
            ``TemperatureScaling(mask_key="mask")`` or to score calibration inside the brain.

    Raises:
        FileNotFoundError: a folder is missing or a pattern matches no file (every such case is named).
        ValueError: a pattern matches several files.
    """

    def __init__(
        self,
        root: str,
        channels: list[str],
        label: str | None = None,
        val_root: str | None = None,
        test_root: str | None = None,
        mask: str | None = None,
    ) -> None:
        if not channels:
            raise ValueError("CaseFoldersLayout.channels: expected at least one file pattern, got []")
        self.root = str(_require_dir(Path(root), "CaseFoldersLayout.root"))
        self.channels = list(channels)
        self.label = label
        self.mask = mask
        self.val_root = str(_require_dir(Path(val_root), "CaseFoldersLayout.val_root")) if val_root else None
        self.test_root = (
            str(_require_dir(Path(test_root), "CaseFoldersLayout.test_root")) if test_root else None
        )

    def _one(self, case_dir: Path, pattern: str, problems: list[str]) -> str | None:
        found = sorted(case_dir.glob(pattern))
        if not found:
            problems.append(f"{case_dir}: no file matches {pattern!r}")
            return None
        if len(found) > 1:
            names = [p.name for p in found]
            raise ValueError(f"{case_dir}: pattern {pattern!r} matches {len(found)} files {names}")
        return str(found[0].resolve())

    def _cases(self, root: str, split: str | None, problems: list[str]) -> list[dict[str, Any]]:
        out = []
        for case_dir in sorted(p for p in Path(root).iterdir() if p.is_dir()):
            images = [self._one(case_dir, pattern, problems) for pattern in self.channels]
            record: dict[str, Any] = {
                "image": images[0] if len(images) == 1 else images,
                "case": case_dir.name,
                "split": split,
            }
            if self.label is not None:
                record["label"] = self._one(case_dir, self.label, problems)
            if self.mask is not None:
                record["mask"] = self._one(case_dir, self.mask, problems)
            out.append(record)
        return out

    def records(self) -> list[dict[str, Any]]:
        problems: list[str] = []
        out = self._cases(self.root, None, problems)
        if self.val_root:
            out += self._cases(self.val_root, "val", problems)
        if self.test_root:
            out += self._cases(self.test_root, "test", problems)
        if problems:
            raise FileNotFoundError("CaseFoldersLayout: " + "; ".join(problems))
        return out

    def in_channels(self) -> int | None:
        return len(self.channels)


def detect_layout(path: str | Path, **kwargs: Any) -> Layout:
    """Pick a layout from a path: ``dataset.json``/its folder, ``.csv``, ``.npz``, ``images/`` + ``masks/``
    (or ``labels/``), else an ImageFolder tree.

    Raises:
        FileNotFoundError: the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    if path.is_file():
        if path.suffix == ".json":
            return DecathlonLayout(str(path), **kwargs)
        if path.suffix == ".csv":
            return CSVLayout(str(path), **kwargs)
        if path.suffix == ".npz":
            return MedMNISTLayout(str(path), **kwargs)
        raise ValueError(f"{path}: expected a dataset.json, .csv or .npz file, or a folder")
    if (path / "dataset.json").is_file():
        return DecathlonLayout(str(path), **kwargs)
    for masks in ("masks", "labels", "1st_manual"):
        if (path / "images").is_dir() and (path / masks).is_dir():
            return PairedFoldersLayout(str(path / "images"), str(path / masks), **kwargs)
    return ImageFolderLayout(str(path), **kwargs)
