"""Find the cases of an inference input (folder, single file or CSV list) and check them cheaply.

Naming rule for multi-channel cases (nnU-Net's): the channels of one case are separate files
``case_0000.nii.gz``, ``case_0001.nii.gz``, ... in the same folder; the case id is ``case``.
A folder where every image name ends in ``_dddd`` is read this way; otherwise each file is one case
(a 4D NIfTI ``(x, y, z, c)`` holds all the channels of its case). A CSV list has a column ``image``
(several channel files separated by ``;``, or extra columns ``image_1``, ``image_2``, ...) and an
optional ``case`` column; relative paths are relative to the CSV file.

Example:
    >>> from medfocal.inference.cases import case_id_of
    >>> case_id_of("scans/brain_017.nii.gz")
    'brain_017'
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from medfocal.io import IMAGE_SUFFIXES, NIFTI_SUFFIXES, PHOTO_SUFFIXES, case_id_of, image_suffix, is_photo

__all__ = [
    "IMAGE_2D_SUFFIXES",
    "NIFTI_SUFFIXES",
    "Case",
    "case_id_of",
    "check_case",
    "discover_cases",
    "refuse_output_in_input",
]

# the suffix lists and case ids are medfocal.io's, shared with training's layouts; old names kept
IMAGE_2D_SUFFIXES = PHOTO_SUFFIXES
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class Case:
    """One inference case: its id (output file stem) and its channel files, in channel order."""

    case_id: str
    paths: list[Path] = field(default_factory=list)

    @property
    def is_2d_image(self) -> bool:
        return is_photo(self.paths[0])

    @property
    def source(self) -> str:
        return str(self.paths[0]) if len(self.paths) == 1 else f"{self.paths[0]} (+{len(self.paths) - 1})"


def _folder_cases(folder: Path) -> list[Case]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and image_suffix(p) and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(
            f"{folder}: no images found ({', '.join(IMAGE_SUFFIXES)}; or DICOM series, here or one per "
            "subfolder)"
        )
    stems = [case_id_of(p) for p in files]
    matches = [_CHANNEL_RE.match(s) for s in stems]
    if all(matches):
        grouped: dict[str, list[tuple[int, Path]]] = {}
        for m, p in zip(matches, files):
            grouped.setdefault(m["case"], []).append((int(m["channel"]), p))
        cases = []
        for case_id, items in sorted(grouped.items()):
            items.sort()
            channels = [c for c, _ in items]
            if channels != list(range(len(channels))):
                raise ValueError(
                    f"{folder}: case {case_id!r} has channel files {channels}, "
                    f"expected 0..{len(channels) - 1} "
                    "(nnU-Net naming: case_0000.nii.gz, case_0001.nii.gz, ...)"
                )
            cases.append(Case(case_id, [p for _, p in items]))
        return cases
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ValueError(f"{folder}: several files per case id {dupes[:5]} (e.g. both .nii and .nii.gz)")
    return [Case(s, [p]) for s, p in zip(stems, files)]


def _dicom_cases(folder: Path) -> list[Case] | None:
    """The cases of a DICOM input: ``folder`` holding one series (one case), or subfolders holding one
    series each (one case each, id = subfolder name); ``None`` when ``folder`` holds image files of
    another format or no DICOM at all.

    Raises:
        ValueError: a folder holding several series (listed): MONAI's ``LoadImage`` would otherwise
            silently read one of them.
    """
    if any(p.is_file() and image_suffix(p) for p in folder.iterdir()):
        return None
    from medfocal.data.readers import dicom_series_folders

    try:
        folders = dicom_series_folders(folder)
    except FileNotFoundError:
        return None
    return [Case(f.name, [f]) for f in folders]


def _csv_cases(csv_path: Path) -> list[Case]:
    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "image" not in rows[0]:
        raise ValueError(
            f"{csv_path}: expected a CSV with an 'image' column, got columns {list(rows[0]) if rows else []}"
        )
    image_cols = ["image", *sorted(c for c in rows[0] if c.startswith("image_"))]
    cases = []
    for i, row in enumerate(rows):
        paths: list[Path] = []
        for col in image_cols:
            for part in (row.get(col) or "").split(";"):
                if part.strip():
                    p = Path(part.strip())
                    paths.append(p if p.is_absolute() else csv_path.parent / p)
        if not paths:
            raise ValueError(f"{csv_path}: row {i + 2} has no image path")
        case_id = (row.get("case") or "").strip() or case_id_of(paths[0])
        cases.append(Case(case_id, paths))
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{csv_path}: duplicate case ids {dupes[:5]}; add a 'case' column")
    return cases


def discover_cases(source: str | Path) -> list[Case]:
    """List the cases of a folder, a single image file, a ``.csv`` list, or DICOM series folders.

    A folder without image files that holds one DICOM series is one case; one whose subfolders hold a
    series each is one case per subfolder (the case id is the folder's name).

    Raises:
        FileNotFoundError: the source does not exist or the folder holds no images.
        ValueError: broken channel numbering, a malformed CSV, several DICOM series in one folder.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: input not found")
    if source.is_dir():
        return _dicom_cases(source) or _folder_cases(source)
    if source.suffix.lower() == ".csv":
        return _csv_cases(source)
    if image_suffix(source) is None:
        raise ValueError(
            f"{source}: expected a folder, a .csv list or an image file ({', '.join(IMAGE_SUFFIXES)})"
        )
    return [Case(case_id_of(source), [source])]


def refuse_output_in_input(cases: list[Case], source: str | Path, output_dir: str | Path) -> None:
    """Raise ``ValueError`` if ``output_dir`` is an input folder or lies inside one (never write there)."""
    out = Path(output_dir).resolve()
    folders = {Path(source).resolve()} if Path(source).is_dir() else set()
    # a DICOM series folder is itself the input folder (its parent may hold the output)
    folders |= {p.resolve() if p.is_dir() else p.resolve().parent for c in cases for p in c.paths}
    for folder in folders:
        if out == folder or folder in out.parents:
            raise ValueError(f"output folder {out} is inside the input folder {folder}: choose another -o")


def _volume_shape(path: Path) -> tuple[int, ...]:
    """Shape from the header only: nibabel for NIfTI, SimpleITK for NRRD/MetaImage (``(x, y, z[, c])``);
    a DICOM series folder: its first slice's ``(columns, rows)`` and the slice count."""
    if path.is_dir():
        from medfocal.data.readers import dicom_series_files

        files = dicom_series_files(path)  # one series, else a ValueError listing them
        return (*_volume_shape(files[0])[:2], len(files))
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            return tuple(int(s) for s in nib.load(str(path)).shape)
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        components = reader.GetNumberOfComponents()
        return tuple(int(s) for s in reader.GetSize()) + ((components,) if components > 1 else ())
    except Exception as err:  # nibabel and ITK raise many types for broken headers
        raise ValueError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None


def _image_2d_channels(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            return len(im.getbands())
    except Exception as err:
        raise ValueError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None


def check_case(case: Case, in_channels: int, spatial_dims: int) -> None:
    """Check a case's files from their headers only (cheap): readable, dimensionality, channel count.

    Raises:
        ValueError: one line naming the file, with expected vs got.
    """
    for p in case.paths:
        if not (p.is_file() or p.is_dir()):
            raise ValueError(f"{p}: file not found")
    if case.is_2d_image:
        if spatial_dims != 2:
            raise ValueError(f"{case.paths[0]}: 2D image given to a {spatial_dims}D model")
        channels = sum(_image_2d_channels(p) for p in case.paths)
        # a greyscale model accepts RGB files after conversion is not guessed here: be explicit
        if channels != in_channels:
            raise ValueError(f"{case.paths[0]}: expected {in_channels} channel(s), got {channels}")
        return
    shapes = [_volume_shape(p) for p in case.paths]
    channels = 0
    for p, shape in zip(case.paths, shapes):
        squeezed = shape[:spatial_dims] + tuple(s for s in shape[spatial_dims:] if s != 1)
        if len(squeezed) == spatial_dims:
            channels += 1
        elif len(squeezed) == spatial_dims + 1 and len(case.paths) == 1:
            channels += squeezed[-1]
        else:
            raise ValueError(
                f"{p}: expected a {spatial_dims}D image (or {spatial_dims}D + channels), got shape {shape}"
            )
    if len({s[:spatial_dims] for s in shapes}) > 1:
        raise ValueError(f"{case.paths[0]}: channel files have different shapes {shapes}")
    if channels != in_channels:
        raise ValueError(f"{case.source}: expected {in_channels} channel(s), got {channels}")
