"""Box-annotated dataset layouts: Pascal VOC folders, COCO JSON and MONAI's box JSON (LUNA16 split format).

Every layout yields :class:`BoxRecord` s with boxes as a float ``(N, 2 * dims)`` array and labels as
class indices into ``class_names``:

=============  ==========================  ===============  ==============================================
layout         files                       box mode         coordinates
=============  ==========================  ===============  ==============================================
VOC            Annotations/*.xml,          ``xyxy``         pixels, 0-based continuous (VOC ``xmin - 1``,
               JPEGImages/, ImageSets/                      ``xmax``: VOC stores 1-based inclusive pixels)
COCO           one JSON (images,           ``xyxy``         pixels (COCO ``[x, y, w, h]`` converted)
               annotations, categories)
box JSON       ``{"training": [{"image",    ``cccwhd``       world millimetres (LUNA16: ITK/LPS world)
               "box", "label"}], ...}``
=============  ==========================  ===============  ==============================================

2D images load with MONAI's ``PILReader`` as ``(C, W, H)``: axis 0 is x (columns), axis 1 is y (rows), so
``xyxy`` pixel boxes index the loaded array directly.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BoxLayout",
    "BoxRecord",
    "detect_box_layout",
    "is_box_layout",
    "read_box_json",
    "read_coco",
    "read_voc",
]

_SPLIT_ALIASES = {"train": ("training", "train"), "val": ("validation", "val"), "test": ("test", "testing")}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class BoxRecord:
    """One image and its boxes.

    Attributes:
        image: path of the image file.
        boxes: float32 ``(N, 2 * dims)`` in the layout's ``box_mode`` and coordinates.
        labels: int64 ``(N,)`` class indices into the layout's ``class_names``.
        id: a name for the image (file stem, VOC id, COCO file name, series uid).
        size: spatial size when the annotation gives it (VOC ``<size>``, COCO width/height), else None.
    """

    image: str
    boxes: np.ndarray
    labels: np.ndarray
    id: str
    size: tuple[int, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as a MONAI data dict: ``{"image", "boxes", "labels", "id"}``."""
        return {"image": self.image, "boxes": self.boxes, "labels": self.labels, "id": self.id}


@dataclass
class BoxLayout:
    """Records per split, class names and how boxes are stored (see the module table)."""

    splits: dict[str, list[BoxRecord]]
    class_names: list[str]
    spatial_dims: int
    box_mode: str
    world_coordinates: bool = False
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _empty_boxes(dims: int) -> np.ndarray:
    return np.zeros((0, 2 * dims), dtype=np.float32)


# ----------------------------------------------------------------------------------------------- VOC
def _voc_objects(xml_path: Path) -> tuple[list[tuple[str, list[float]]], tuple[int, int] | None]:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{xml_path}: not valid XML ({err}); expected a Pascal VOC annotation") from err
    size = None
    node = root.find("size")
    if node is not None and node.findtext("width") and node.findtext("height"):
        size = (int(float(node.findtext("width"))), int(float(node.findtext("height"))))
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        if not name or bnd is None:
            raise ValueError(f"{xml_path}: an <object> without <name> or <bndbox>; fix or remove it")
        try:
            xmin, ymin, xmax, ymax = (float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{xml_path}: <bndbox> of {name!r} lacks a number in xmin/ymin/xmax/ymax"
            ) from err
        objects.append((name, [xmin - 1.0, ymin - 1.0, xmax, ymax]))
    return objects, size


def _voc_ids(root: Path, split: str) -> list[str] | None:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        return None
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def read_voc(root: str | Path, class_names: Sequence[str] | None = None) -> BoxLayout:
    """Read a Pascal VOC folder: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, ``ImageSets/Main/*.txt``.

    Splits come from ``ImageSets/Main/{train,val,test}.txt`` (those present); without them every
    annotation is in ``"train"``. Class names are ``class_names`` when given (an unknown name then
    raises), else the sorted names found.

    Raises:
        FileNotFoundError: no ``Annotations`` folder, or an image listed without its file.
        ValueError: malformed XML, or a class name not in ``class_names``.
    """
    root = Path(root)
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"{root}: no Annotations/ folder; expected a Pascal VOC layout")
    ids_by_split = {s: _voc_ids(root, s) for s in ("train", "val", "test")}
    if all(v is None for v in ids_by_split.values()):
        ids_by_split = {"train": sorted(p.stem for p in ann_dir.glob("*.xml"))}
    parsed: dict[str, tuple[list[tuple[str, list[float]]], tuple[int, int] | None]] = {}
    for ids in ids_by_split.values():
        for i in ids or []:
            xml = ann_dir / f"{i}.xml"
            if not xml.is_file():
                raise FileNotFoundError(
                    f"{xml}: listed in ImageSets/Main but missing; remove the id or add the file"
                )
            parsed[i] = _voc_objects(xml)
    found = sorted({name for objects, _ in parsed.values() for name, _ in objects})
    names = list(class_names) if class_names is not None else found
    index = {n: k for k, n in enumerate(names)}
    splits: dict[str, list[BoxRecord]] = {}
    for split, ids in ids_by_split.items():
        if ids is None:
            continue
        records = []
        for i in ids:
            objects, size = parsed[i]
            unknown = sorted({n for n, _ in objects if n not in index})
            if unknown:
                raise ValueError(
                    f"{ann_dir / (i + '.xml')}: class {unknown[0]!r} is not in class_names {names}; "
                    "add it to class_names or fix the annotation"
                )
            records.append(
                BoxRecord(
                    image=str(_voc_image(root, i)),
                    boxes=np.asarray([b for _, b in objects], dtype=np.float32).reshape(-1, 4),
                    labels=np.asarray([index[n] for n, _ in objects], dtype=np.int64),
                    id=i,
                    size=size,
                )
            )
        splits[split] = records
    return BoxLayout(splits, names, spatial_dims=2, box_mode="xyxy", source=str(root))


def _voc_image(root: Path, image_id: str) -> Path:
    folder = root / "JPEGImages"
    for suffix in _IMAGE_SUFFIXES:
        path = folder / f"{image_id}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{folder}: no image file for id {image_id!r} (looked for {', '.join(_IMAGE_SUFFIXES)})"
    )


# ----------------------------------------------------------------------------------------------- COCO
def read_coco(
    path: str | Path,
    image_root: str | Path | None = None,
    split: str = "train",
    class_names: Sequence[str] | None = None,
) -> BoxLayout:
    """Read a COCO detection JSON (``images``, ``annotations`` with ``bbox [x, y, w, h]``, ``categories``).

    Categories map to class indices in the order of their ``id`` (or of ``class_names`` by name).
    Images resolve against ``image_root`` (default: the JSON's folder). Crowd annotations are skipped.

    Raises:
        ValueError: missing keys, an annotation of an unknown image or category.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{path}: missing COCO key(s) {missing}; expected images, annotations, categories")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    names = list(class_names) if class_names is not None else [str(c["name"]) for c in cats]
    cat_index = {}
    for c in cats:
        if str(c["name"]) not in names:
            raise ValueError(f"{path}: category {c['name']!r} is not in class_names {names}")
        cat_index[c["id"]] = names.index(str(c["name"]))
    base = Path(image_root) if image_root is not None else path.parent
    images = {im["id"]: im for im in data["images"]}
    per_image: dict[Any, list[tuple[int, list[float]]]] = {k: [] for k in images}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        if ann["image_id"] not in images:
            raise ValueError(
                f"{path}: annotation {ann.get('id')} refers to unknown image_id {ann['image_id']}"
            )
        if ann["category_id"] not in cat_index:
            raise ValueError(
                f"{path}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}"
            )
        x, y, w, h = (float(v) for v in ann["bbox"])
        per_image[ann["image_id"]].append((cat_index[ann["category_id"]], [x, y, x + w, y + h]))
    records = []
    for image_id, im in images.items():
        objects = per_image[image_id]
        size = (int(im["width"]), int(im["height"])) if "width" in im and "height" in im else None
        records.append(
            BoxRecord(
                image=str(base / im["file_name"]),
                boxes=np.asarray([b for _, b in objects], dtype=np.float32).reshape(-1, 4),
                labels=np.asarray([k for k, _ in objects], dtype=np.int64),
                id=Path(im["file_name"]).stem,
                size=size,
            )
        )
    return BoxLayout({split: records}, names, spatial_dims=2, box_mode="xyxy", source=str(path))


# ----------------------------------------------------------------------------------------------- box JSON
def read_box_json(
    path: str | Path,
    base_dir: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    box_mode: str = "cccwhd",
) -> BoxLayout:
    """Read MONAI's box JSON (the LUNA16 data split format) for 3D detection.

    ``{"training": [{"image": "a.nii.gz", "box": [[x, y, z, w, h, d], ...], "label": [0, ...]}, ...],
    "validation": [...], "test": [...]}`` with boxes in world coordinates (mm), centre + size
    (``cccwhd``) unless ``box_mode`` says otherwise. Image paths resolve against ``base_dir`` (default:
    the JSON's folder). Optional top-level ``"labels": {"0": "nodule"}`` names the classes.

    Raises:
        ValueError: no split key, an item without ``image``/``box``, box rows of the wrong length.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    base = Path(base_dir) if base_dir is not None else path.parent
    splits: dict[str, list[BoxRecord]] = {}
    max_label = -1
    for split, aliases in _SPLIT_ALIASES.items():
        key = next((a for a in aliases if a in data), None)
        if key is None:
            continue
        records = []
        for n, item in enumerate(data[key]):
            if "image" not in item or "box" not in item:
                raise ValueError(
                    f"{path}: {key}[{n}] needs 'image' and 'box' (world cccwhd boxes), got {sorted(item)}"
                )
            boxes = (
                np.asarray(item["box"], dtype=np.float32).reshape(-1, 6) if item["box"] else _empty_boxes(3)
            )
            if np.asarray(item["box"]).size % 6:
                raise ValueError(f"{path}: {key}[{n}] box rows must have 6 values (x, y, z, w, h, d)")
            labels = np.asarray(item.get("label", [0] * len(boxes)), dtype=np.int64).reshape(-1)
            if len(labels) != len(boxes):
                raise ValueError(f"{path}: {key}[{n}] has {len(boxes)} boxes but {len(labels)} labels")
            max_label = max(max_label, int(labels.max()) if len(labels) else -1)
            image = Path(item["image"])
            records.append(
                BoxRecord(
                    image=str(image if image.is_absolute() else base / image),
                    boxes=boxes,
                    labels=labels,
                    id=_strip_suffixes(image.name),
                )
            )
        splits[split] = records
    if not splits:
        raise ValueError(f"{path}: no 'training'/'validation'/'test' list; expected MONAI's box JSON format")
    if class_names is None:
        declared = data.get("labels")
        if isinstance(declared, dict):
            class_names = [str(declared[k]) for k in sorted(declared, key=int)]
        else:
            class_names = ["nodule"] if max_label <= 0 else [f"class_{k}" for k in range(max_label + 1)]
    return BoxLayout(
        splits, list(class_names), spatial_dims=3, box_mode=box_mode, world_coordinates=True, source=str(path)
    )


def _strip_suffixes(name: str) -> str:
    for suffix in (".nii.gz", ".nii", ".mhd", ".nrrd", ".mha"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_box_layout(path: str | Path) -> bool:
    """Whether ``path`` is detection data (what :func:`detect_box_layout` reads): a Pascal VOC folder
    (``Annotations/``), a COCO JSON or a MONAI / LUNA16 box JSON; ``dataset.json`` is a Decathlon file."""
    path = Path(path)
    if path.is_dir():
        return (path / "Annotations").is_dir()
    if path.suffix.lower() != ".json" or path.name == "dataset.json" or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return True  # COCO
    entries = [e for v in (data.values() if isinstance(data, dict) else []) if isinstance(v, list) for e in v]
    return any(isinstance(e, dict) and "box" in e for e in entries)  # MONAI / LUNA16 box JSON


def detect_box_layout(
    path: str | Path, class_names: Sequence[str] | None = None, image_root: str | Path | None = None
) -> BoxLayout:
    """Read ``path`` as VOC (a folder with ``Annotations/``), COCO JSON or MONAI box JSON.

    ``image_root`` is the folder the JSON layouts' image paths are relative to (default: the JSON's).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: neither layout matches.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "Annotations").is_dir():
            return read_voc(path, class_names)
        raise ValueError(
            f"{path}: a folder without Annotations/; expected Pascal VOC, a COCO JSON or a box JSON"
        )
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return read_coco(path, image_root=image_root, class_names=class_names)
    return read_box_json(path, base_dir=image_root, class_names=class_names)
