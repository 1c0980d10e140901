"""Find the layout of a bare dataset path for ``medfocal plan``, or say which option resolves it.

Builds on :func:`medfocal.data.layouts.detect_layout` (``dataset.json``, ``.csv``, ``.npz``) and adds:

- paired folders whose file names differ by a constant suffix (DRIVE: ``images/21_training.tif`` with
  ``1st_manual/21_manual1.gif``), plus a field-of-view folder (``mask/21_training_mask.gif``);
- BraTS-style case folders (``train/<case>/{Flair,T1c,OTMultiClass,brainmask}.nii.gz``, optional
  ``validation/``): channels, label and region mask recognised by file name.

Where two readings are possible the search stops with a ``ValueError`` that names the option to add.

Example::

    layout = find_layout("drive/training")     # PairedFoldersLayout(images, 1st_manual, fov_dir=mask)
"""

from __future__ import annotations

import re
from pathlib import Path

from medfocal.data.layouts import (
    IMAGE_SUFFIXES,
    CaseFoldersLayout,
    Layout,
    PairedFoldersLayout,
    detect_layout,
    strip_suffix,
)

__all__ = ["LABEL_DIR_NAMES", "REGION_DIR_NAMES", "find_layout"]

LABEL_DIR_NAMES = (
    "masks",
    "labels",
    "1st_manual",
    "manual",
    "gt",
    "ground_truth",
    "groundtruth",
    "segmentations",
)
REGION_DIR_NAMES = ("mask", "fov", "roi")
_LABEL_FILE = re.compile(r"(seg|label|truth|manual|^ot|^gt)", re.IGNORECASE)
_REGION_FILE = re.compile(r"(brainmask|^mask|roi|fov)", re.IGNORECASE)
_SPLIT_DIRS = {"train": None, "training": None, "val": "val", "validation": "val", "test": "test"}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))


def _common_prefix(names: list[str]) -> list[str]:
    out = []
    for chars in zip(*names):
        if len(set(chars)) != 1:
            break
        out.append(chars[0])
    return out


def _suffix_of(names: list[str]) -> str:
    """Longest common suffix of names (``["21_training.tif", "22_training.tif"]`` -> ``"_training.tif"``)."""
    rev = "".join(_common_prefix([n[::-1] for n in names]))[::-1]
    # keep the suffix from a separator or the extension on, so "1.png"/"11.png" keep their digits
    cut = min((rev.find(c) for c in "_-." if c in rev), default=len(rev))
    return rev[cut:]


def _pairing(images: list[Path], others: list[Path]) -> tuple[str | None, str | None] | None:
    """``(image_suffix, other_suffix)`` that pairs every image with one file of ``others``, else None."""
    stems = {strip_suffix(p.name) for p in images}
    if stems and stems <= {strip_suffix(p.name) for p in others}:
        return None, None
    img_sfx, oth_sfx = _suffix_of([p.name for p in images]), _suffix_of([p.name for p in others])
    if not img_sfx or not oth_sfx:
        return None
    cases = {p.name[: -len(img_sfx)] for p in images}
    if cases and cases <= {p.name[: -len(oth_sfx)] for p in others if p.name.endswith(oth_sfx)}:
        return img_sfx, oth_sfx
    return None


def _paired(path: Path) -> Layout | None:
    images_dir = path / "images"
    if not images_dir.is_dir():
        return None
    label_dirs = [path / n for n in LABEL_DIR_NAMES if (path / n).is_dir()]
    region_dirs = [path / n for n in REGION_DIR_NAMES if (path / n).is_dir()]
    if not label_dirs and len(region_dirs) == 1:  # "mask/" alone holds the labels
        label_dirs, region_dirs = region_dirs, []
    if not label_dirs:
        return None
    if len(label_dirs) > 1:
        names = [d.name for d in label_dirs]
        raise ValueError(
            f"{path}: several label folders {names}; choose one with masks_dir=<{'|'.join(names)}> "
            f"(medfocal plan --masks-dir {names[0]})"
        )
    images = _image_files(images_dir)
    pairing = _pairing(images, _image_files(label_dirs[0]))
    if pairing is None:
        raise ValueError(
            f"{path}: cannot pair the files of images/ and {label_dirs[0].name}/ by name; "
            "give image_suffix and mask_suffix (e.g. image_suffix=_training.tif mask_suffix=_manual1.gif)"
        )
    fov_dir, fov_sfx = None, None
    if len(region_dirs) > 1:
        raise ValueError(
            f"{path}: several region-mask folders {[d.name for d in region_dirs]}; choose one with fov_dir="
        )
    if region_dirs:
        fov_pairing = _pairing(images, _image_files(region_dirs[0]))
        if fov_pairing is not None:
            fov_dir, fov_sfx = str(region_dirs[0]), fov_pairing[1]
            if fov_pairing[0] not in (None, pairing[0]):
                fov_sfx = None  # names differ differently: let the layout look for <case>.<ext>
    return PairedFoldersLayout(
        str(images_dir), str(label_dirs[0]), pairing[0], pairing[1], fov_dir=fov_dir, fov_suffix=fov_sfx
    )


def _case_roots(path: Path) -> dict[str | None, Path] | None:
    subdirs = [p for p in path.iterdir() if p.is_dir()]
    named = {_SPLIT_DIRS[p.name.lower()]: p for p in subdirs if p.name.lower() in _SPLIT_DIRS}
    if named:
        return named
    if subdirs and all(
        any(q.name.lower().endswith((".nii", ".nii.gz")) for q in d.iterdir()) for d in subdirs
    ):
        return {None: path}
    return None


def _case_folders(path: Path) -> Layout | None:
    roots = _case_roots(path)
    if roots is None or None not in roots:
        return None
    cases = sorted(p for p in roots[None].iterdir() if p.is_dir())
    if not cases:
        return None
    files = [
        q.name for q in cases[0].iterdir() if q.name.lower().endswith((".nii", ".nii.gz", ".nrrd", ".mha"))
    ]
    if not files:
        return None
    labels = [f for f in files if _LABEL_FILE.search(f)]
    regions = [f for f in files if _REGION_FILE.search(f) and f not in labels]
    channels = sorted(f for f in files if f not in labels and f not in regions)
    if len(labels) != 1 or not channels:
        raise ValueError(
            f"{cases[0]}: cannot tell the label file among {sorted(files)}; give label=<file name> "
            "(medfocal plan --label NAME)"
        )
    return CaseFoldersLayout(
        str(roots[None]),
        channels=channels,
        label=labels[0],
        val_root=str(roots["val"]) if "val" in roots else None,
        test_root=str(roots["test"]) if "test" in roots else None,
        mask=regions[0] if len(regions) == 1 else None,
    )


def find_layout(data: str | Path | Layout) -> Layout:
    """The layout of ``data``: a layout object as is, else the detected one.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the folder fits no layout, or several readings are possible (the message names the
            option to add).
    """
    if isinstance(data, Layout):
        return data
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    if path.is_file() or (path / "dataset.json").is_file():
        return detect_layout(path)
    for finder in (_paired, _case_folders):
        layout = finder(path)
        if layout is not None:
            return layout
    flat = _image_files(path)
    if flat and all(p.name.lower().endswith((".nii", ".nii.gz")) for p in flat):
        raise ValueError(
            f"{path}: a flat folder of {len(flat)} NIfTI files; write a CSV manifest with image and label "
            "columns and plan that (medfocal plan cases.csv)"
        )
    return detect_layout(path)  # a class-folder tree (ImageFolder)
