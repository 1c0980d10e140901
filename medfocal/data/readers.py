"""SimpleITK image reader for MONAI's ``LoadImage``: NRRD, MetaImage (``.mha``, ``.mhd`` + ``.raw``), DICOM.

:class:`SimpleITKReader` is a MONAI :class:`~monai.data.ImageReader`, so ``LoadImage(reader=...)`` and
``LoadImaged(keys, reader=...)`` take it like their own readers. Arrays and affines come out exactly as
MONAI's ``NibabelReader`` gives them for the same volume stored as NIfTI:

* array axes in ITK index order ``(i, j, k)`` (= NIfTI's voxel order), channels last;
* ``affine = diag(-1, -1, 1, 1) @ [[D @ diag(spacing), origin], [0, 1]]``, i.e. SimpleITK's physical
  (LPS) frame turned into RAS, as MONAI's ``ITKReader`` does (``affine_lps_to_ras=True``).

A DICOM series is given as a folder holding exactly one series (several series in one folder are an
error that lists them). :func:`dicom_series_folders` lists the cases of a folder whose subfolders are
series, one case each.

Example::

    from monai.transforms import LoadImage
    image = LoadImage(reader=SimpleITKReader(), image_only=True)("case_001.nrrd")  # MetaTensor
    image.affine                                                                     # RAS, as NIfTI
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

__all__ = [
    "SIMPLEITK_SUFFIXES",
    "SimpleITKReader",
    "dicom_series_files",
    "dicom_series_folders",
    "dicom_series_uids",
    "is_dicom_folder",
    "save_label_like",
    "sitk_affine",
]

# what SimpleITKReader reads from a file name (a DICOM series is a folder)
SIMPLEITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
# what save_label_like writes (atomic single files: .mhd would leave its .raw behind a renamed header)
LABEL_WRITE_SUFFIXES = (".nrrd", ".mha")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _sitk():
    import SimpleITK as sitk

    return sitk


def dicom_series_uids(folder: str | Path) -> list[str]:
    """The DICOM SeriesInstanceUIDs found directly in ``folder`` (GDCM's scan; empty if none)."""
    return list(_sitk().ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def is_dicom_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is a directory holding at least one DICOM series (not counting subfolders)."""
    return Path(folder).is_dir() and bool(dicom_series_uids(folder))


def dicom_series_files(folder: str | Path) -> list[Path]:
    """The files of the one DICOM series in ``folder``, in slice order (GDCM's sort along the normal).

    This is the order of the third array axis that :class:`SimpleITKReader` returns.

    Raises:
        FileNotFoundError: no DICOM series in the folder.
        ValueError: several series in the folder (listed, with their file counts).
    """
    folder = Path(folder)
    sitk = _sitk()
    uids = dicom_series_uids(folder)
    if not uids:
        raise FileNotFoundError(f"{folder}: no DICOM series found (expected .dcm slices of one series)")
    if len(uids) > 1:
        listed = ", ".join(
            f"{uid} ({len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))} files)"
            for uid in uids
        )
        raise ValueError(
            f"{folder}: {len(uids)} DICOM series in one folder ({listed}); "
            "put each series in its own subfolder (one case each)"
        )
    return [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uids[0])]


def dicom_series_folders(root: str | Path) -> list[Path]:
    """The series folders of an input: ``[root]`` if it holds a series, else its subfolders with one.

    Subfolders are sorted by name; each must hold exactly one series (its folder name is the case id).

    Raises:
        FileNotFoundError: ``root`` is missing, or neither it nor its subfolders hold DICOM.
        ValueError: a folder holding several series (see :func:`dicom_series_files`).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: DICOM input must be a folder (one series, or one subfolder each)")
    if is_dicom_folder(root):
        dicom_series_files(root)  # raises when several series share the folder
        return [root]
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and is_dicom_folder(p)]
    if not folders:
        raise FileNotFoundError(f"{root}: no DICOM series in the folder or its subfolders")
    for folder in folders:
        dicom_series_files(folder)
    return folders


def sitk_affine(image: Any) -> np.ndarray:
    """MONAI/NIfTI (RAS) voxel-to-world affine of a SimpleITK image (LPS physical space).

    ``(d+1, d+1)`` for a ``d``-dimensional image (``d`` <= 3): ``diag(-1, -1, 1) @ D @ diag(spacing)``
    and ``diag(-1, -1, 1) @ origin`` (2D: the first two rows flipped).
    """
    dim = image.GetDimension()
    sr = min(dim, 3)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:sr, :sr]
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:sr]
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)[:sr]
    affine = np.eye(sr + 1)
    affine[:sr, :sr] = direction @ np.diag(spacing)
    affine[:sr, -1] = origin
    flip = np.diag([-1.0] * min(sr, 2) + [1.0] * (sr + 1 - min(sr, 2)))
    return flip @ affine


def _array(image: Any) -> np.ndarray:
    """Voxel array in ITK index order ``(i, j, k[, c])`` (SimpleITK's numpy view is ``(k, j, i[, c])``)."""
    arr = _sitk().GetArrayFromImage(image)
    dim = image.GetDimension()
    spatial = tuple(range(dim - 1, -1, -1))
    if image.GetNumberOfComponentsPerPixel() > 1:
        return np.transpose(arr, (*spatial, dim))
    return np.transpose(arr, spatial)


class SimpleITKReader(ImageReader):
    """MONAI image reader backed by SimpleITK (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, DICOM series folder).

    Args:
        channel_dim: as MONAI's readers: ``None`` (no channel for scalar images, last axis for vector
            pixels), or an explicit axis.
        extra_suffixes: more file suffixes to accept (anything ``sitk.ReadImage`` reads, e.g. ``.nii.gz``;
            NIfTI is normally left to ``NibabelReader``).

    The metadata holds ``affine``/``original_affine`` (RAS), ``spatial_shape``, ``spacing``,
    ``original_channel_dim`` and ``space = RAS``, like ``NibabelReader``'s.
    """

    def __init__(self, channel_dim: str | int | None = None, extra_suffixes: Sequence[str] = ()) -> None:
        super().__init__()
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.suffixes = tuple(s.lower() for s in (*SIMPLEITK_SUFFIXES, *extra_suffixes))

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """True if every name is a DICOM series folder or ends in one of ``self.suffixes``."""
        names = ensure_tuple(filename)
        return bool(names) and all(Path(n).is_dir() or str(n).lower().endswith(self.suffixes) for n in names)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> Any:
        """Read one file/series folder (a SimpleITK image) or several (a list: channels of one case).

        Raises:
            FileNotFoundError / ValueError: a missing file, an empty or multi-series DICOM folder, or a
                file SimpleITK cannot read (naming the file).
        """
        sitk = _sitk()
        names = ensure_tuple(data)
        images = []
        for name in names:
            path = Path(name)
            if path.is_dir():
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames([str(f) for f in dicom_series_files(path)])
                try:
                    images.append(reader.Execute())
                except RuntimeError as err:
                    raise ValueError(f"{path}: unreadable DICOM series ({_first_line(err)})") from None
                continue
            if not path.is_file():
                raise FileNotFoundError(f"{path}: image not found")
            try:
                images.append(sitk.ReadImage(str(path)))
            except RuntimeError as err:
                raise ValueError(f"{path}: unreadable image ({_first_line(err)})") from None
        return images if len(names) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """``(array, meta)``: several images are stacked as channels (first axis), like MONAI's readers."""
        from monai.data.image_reader import _copy_compatible_dict, _stack_images

        arrays: list[np.ndarray] = []
        meta: dict = {}
        # not ensure_tuple: a SimpleITK image is itself iterable (over its pixels)
        for image in img if isinstance(img, (list, tuple)) else [img]:
            data = _array(image)
            sr = min(image.GetDimension(), 3)
            header: dict[str, Any] = {
                key: image.GetMetaData(key) for key in image.GetMetaDataKeys() if not key.startswith("ITK_")
            }
            header["spacing"] = np.asarray(image.GetSpacing(), dtype=np.float64)
            header[MetaKeys.ORIGINAL_AFFINE] = sitk_affine(image)
            header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
            header[MetaKeys.SPACE] = SpaceKeys.RAS
            header[MetaKeys.SPATIAL_SHAPE] = np.asarray(image.GetSize()[:sr])
            if self.channel_dim is None:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if data.ndim == sr else -1
            else:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
            arrays.append(data)
            _copy_compatible_dict(header, meta)
        return _stack_images(arrays, meta), meta


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _reference_image(reference: str | Path) -> Any:
    """Geometry donor: a SimpleITK image (header only for files; a DICOM folder is read)."""
    sitk = _sitk()
    reference = Path(reference)
    if reference.is_dir():
        return SimpleITKReader().read(reference)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ValueError(f"{reference}: unreadable image ({_first_line(err)})") from None
    return reader


def save_label_like(label: np.ndarray, reference: str | Path, final: str | Path) -> Path:
    """Write a label map as uint8 NRRD/MHA with the reference image's origin, spacing and direction.

    Args:
        label: integer array in the reference's voxel order (what MONAI and :class:`SimpleITKReader`
            give: ``(i, j, k)``), shape = the reference's size.
        reference: the input image (any file SimpleITK reads, or a DICOM series folder).
        final: ``.nrrd`` or ``.mha`` path; written compressed and atomically.

    Raises:
        ValueError: unsupported suffix, values outside uint8, or a shape that differs from the reference.
    """
    from medfocal.inference.writer import atomic_path

    sitk = _sitk()
    final = Path(final)
    if not final.name.lower().endswith(LABEL_WRITE_SUFFIXES):
        raise ValueError(f"{final}: expected a {' or '.join(LABEL_WRITE_SUFFIXES)} file name")
    label = np.asarray(label)
    if label.min(initial=0) < 0 or label.max(initial=0) > 255:
        raise ValueError(f"{final}: label values must fit uint8, got range [{label.min()}, {label.max()}]")
    ref = _reference_image(reference)
    size = tuple(int(s) for s in ref.GetSize())
    if label.shape != size:
        raise ValueError(f"{final}: mask shape {label.shape} differs from {Path(reference).name} {size}")
    out = sitk.GetImageFromArray(np.ascontiguousarray(label.astype(np.uint8).T))
    out.SetOrigin(ref.GetOrigin())
    out.SetSpacing(ref.GetSpacing())
    out.SetDirection(ref.GetDirection())
    with atomic_path(final) as tmp:
        sitk.WriteImage(out, str(tmp), True)
    return final


def with_simpleitk(loader: Any, reader: str | ImageReader | None = None) -> Any:
    """``loader`` (a MONAI ``LoadImage``/``LoadImaged``) that also reads NRRD, MetaImage and DICOM folders.

    With ``reader=None`` (MONAI picks a reader per file) :class:`SimpleITKReader` is registered first: it
    accepts only its own suffixes and folders, so NIfTI and photos keep their usual readers. The name
    ``"SimpleITKReader"`` (MONAI does not know it) is mapped to the class; any other reader is kept.
    """
    if reader is None:
        target = getattr(loader, "_loader", loader)  # LoadImaged wraps a LoadImage
        target.register(SimpleITKReader())
    return loader


def resolve_reader(reader: str | ImageReader | None) -> str | ImageReader | None:
    """``reader`` for MONAI's ``LoadImage``, with ``"SimpleITKReader"`` made an instance."""
    if isinstance(reader, str) and reader.lower() in ("simpleitkreader", "simpleitk"):
        return SimpleITKReader()
    return reader
