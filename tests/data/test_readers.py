"""SimpleITKReader: the same volume as NIfTI, NRRD, MHA, MHD and a DICOM series loads identically."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from dicom_helpers import SHAPE, ras_affine, volume, write_dicom_series, write_nifti, write_sitk
from monai.data import NibabelReader
from monai.transforms import EnsureChannelFirstd, LoadImage, LoadImaged, Orientationd, Spacingd

from medfocal.data.readers import (
    SimpleITKReader,
    dicom_series_files,
    dicom_series_folders,
    save_label_like,
    sitk_affine,
)


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    data = volume()
    out = {"nifti": write_nifti(root / "v.nii.gz", data)}
    for name in ("nrrd", "mha", "mhd"):
        out[name] = write_sitk(root / f"v.{name}", data)
    write_dicom_series(root / "series", data)
    out["dicom"] = root / "series"
    return out


def _load(path: Path):
    reader = NibabelReader() if path.name.endswith(".nii.gz") else SimpleITKReader()
    return LoadImage(reader=reader, image_only=True)(str(path))


@pytest.mark.parametrize("fmt", ["nrrd", "mha", "mhd", "dicom"])
def test_same_array_and_affine_as_nifti(formats, fmt):
    ref = _load(formats["nifti"])
    img = _load(formats[fmt])
    assert tuple(img.shape) == SHAPE
    np.testing.assert_array_equal(np.asarray(img), volume())
    np.testing.assert_array_equal(np.asarray(img), np.asarray(ref))
    # NIfTI stores the affine as float32; DICOM as decimal text (8 digits here)
    np.testing.assert_allclose(img.affine.numpy(), ref.affine.numpy(), atol=1e-5)
    np.testing.assert_allclose(img.affine.numpy(), ras_affine(), atol=1e-5)
    assert str(img.meta["space"]) == "RAS"
    np.testing.assert_array_equal(img.meta["spatial_shape"], SHAPE)


@pytest.mark.parametrize("fmt", ["nrrd", "mha"])
def test_preprocessing_pipeline_matches_nifti(formats, fmt, tmp_path):
    """Orientation + resampling (what medfocal's transforms do) give the same tensor as from NIfTI.

    The file is written with the NIfTI's stored (float32) affine: MONAI's ``Spacing`` aligns the grid
    differently for an affine off by float32 rounding, so equal input geometry is what this compares.
    """
    import nibabel as nib

    def pipeline(path: Path, reader):
        steps = [
            LoadImaged("image", reader=reader, image_only=True),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS", labels=None),
            Spacingd("image", pixdim=(1.0, 1.0, 1.5)),
        ]
        item = {"image": str(path)}
        for step in steps:
            item = step(item)
        return item["image"]

    path = write_sitk(tmp_path / f"v.{fmt}", volume(), affine=nib.load(formats["nifti"]).affine)
    ref = pipeline(formats["nifti"], NibabelReader())
    out = pipeline(path, SimpleITKReader())
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-3)
    np.testing.assert_allclose(out.affine.numpy(), ref.affine.numpy(), atol=1e-6)


def test_reader_registered_in_load_image(formats):
    """``LoadImage().register(SimpleITKReader())`` picks it for .nrrd/.mha and DICOM folders by itself."""
    loader = LoadImage(image_only=True)
    loader.register(SimpleITKReader())
    for fmt in ("nrrd", "mha", "dicom"):
        np.testing.assert_array_equal(np.asarray(loader(str(formats[fmt]))), volume())
    assert np.asarray(loader(str(formats["nifti"]))).shape == SHAPE


def test_verify_suffix(formats, tmp_path):
    reader = SimpleITKReader()
    assert reader.verify_suffix(str(formats["nrrd"]))
    assert reader.verify_suffix([str(formats["mha"]), str(formats["mhd"])])
    assert reader.verify_suffix(str(formats["dicom"]))
    assert not reader.verify_suffix(str(formats["nifti"]))
    assert SimpleITKReader(extra_suffixes=(".nii.gz",)).verify_suffix(str(formats["nifti"]))


def test_channels_stack_first(formats):
    img = LoadImage(reader=SimpleITKReader(), image_only=True)([str(formats["nrrd"]), str(formats["mha"])])
    assert tuple(img.shape) == (2, *SHAPE)
    np.testing.assert_array_equal(np.asarray(img[1]), volume())


def test_sitk_affine_2d():
    import SimpleITK as sitk

    img = sitk.Image(5, 4, sitk.sitkUInt8)
    img.SetSpacing((0.5, 2.0))
    img.SetOrigin((3.0, 4.0))
    np.testing.assert_allclose(sitk_affine(img), [[-0.5, 0, -3.0], [0, -2.0, -4.0], [0, 0, 1]])


def test_several_series_in_one_folder_is_an_error(tmp_path):
    write_dicom_series(tmp_path / "mixed", volume(), series_uid="1.2.3.4")
    write_dicom_series(tmp_path / "mixed", volume(1), series_uid="1.2.3.5", prefix="other")
    with pytest.raises(ValueError, match=r"mixed: 2 DICOM series in one folder \(1\.2\.3\.4 \(6 files\), "):
        dicom_series_files(tmp_path / "mixed")
    # (MONAI's LoadImage would fall back to its other readers: case discovery calls the listing first)
    with pytest.raises(ValueError, match="2 DICOM series"):
        SimpleITKReader().read(tmp_path / "mixed")


def test_series_folders(tmp_path):
    for case in ("case_b", "case_a"):
        write_dicom_series(tmp_path / "root" / case, volume())
    (tmp_path / "root" / "notes").mkdir()
    assert dicom_series_folders(tmp_path / "root") == [
        tmp_path / "root" / "case_a",
        tmp_path / "root" / "case_b",
    ]
    assert dicom_series_folders(tmp_path / "root" / "case_a") == [tmp_path / "root" / "case_a"]
    files = dicom_series_files(tmp_path / "root" / "case_a")
    assert [f.name for f in files] == [f"slice_{i:03d}.dcm" for i in range(5, -1, -1)]  # sorted by position
    with pytest.raises(FileNotFoundError, match="no DICOM series in the folder or its subfolders"):
        dicom_series_folders(tmp_path / "root" / "notes")


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.nrrd"
    bad.write_text("not an nrrd")
    with pytest.raises(ValueError, match=r"broken\.nrrd: unreadable image"):
        SimpleITKReader().read(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.mha: image not found"):
        SimpleITKReader().read(tmp_path / "missing.mha")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no DICOM series found"):
        SimpleITKReader().read(tmp_path / "empty")


@pytest.mark.parametrize("fmt", ["nrrd", "mha", "dicom"])
def test_save_label_like_keeps_geometry(formats, fmt, tmp_path):
    label = (volume() > 1000).astype(np.uint8)
    out = save_label_like(label, formats[fmt], tmp_path / "mask.nrrd")
    back = _load(out)
    np.testing.assert_array_equal(np.asarray(back), label)
    np.testing.assert_allclose(back.affine.numpy(), _load(formats[fmt]).affine.numpy(), atol=1e-6)
    assert not list(tmp_path.glob(".medfocal-tmp-*"))


def test_save_label_like_errors(formats, tmp_path):
    with pytest.raises(ValueError, match=r"mask\.nrrd: mask shape \(3, 3, 3\) differs from v\.nrrd"):
        save_label_like(np.zeros((3, 3, 3), np.uint8), formats["nrrd"], tmp_path / "mask.nrrd")
    with pytest.raises(ValueError, match=r"mask\.mhd: expected a \.nrrd or \.mha file name"):
        save_label_like(np.zeros(SHAPE, np.uint8), formats["nrrd"], tmp_path / "mask.mhd")
