"""``medfocal infer`` on NRRD/MetaImage: the same volume as NIfTI, NRRD, MHA and MHD gives the same mask.

One run over a folder holding one synthetic lesion case in four formats (oblique, anisotropic, x
flipped): every NIfTI mask has the NIfTI input's array and affine, and NRRD/MetaImage inputs also get
their mask in their own format (``.nrrd``; ``.mha`` for ``.mha`` and ``.mhd``), in the input's geometry.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.transforms import LoadImage

sys.path.insert(0, str(Path(__file__).parents[1]))

from dicom_helpers import write_sitk

from medfocal.cli import main
from medfocal.data.readers import SimpleITKReader
from medfocal.inference import Predictor
from medfocal.inference.html_report import read_rows

FORMATS = {"as_nifti": ".nii.gz", "as_nrrd": ".nrrd", "as_mha": ".mha", "as_mhd": ".mhd"}
NATIVE = {"as_nrrd": ".nrrd", "as_mha": ".mha", "as_mhd": ".mha"}


@pytest.fixture(scope="module")
def formats(lesion_cases, tmp_path_factory) -> Path:
    """One lesion case written once per format, from the array and affine nibabel reads.

    Not a SimpleITK conversion of the NIfTI file: ITK's NIfTI reader perturbs the affine by ~1e-8,
    enough to change the resampled grid's shape by one voxel (MONAI rounds the extent).
    """
    nifti = sorted((lesion_cases / "imagesTs").glob("*.nii.gz"))[0]
    folder = tmp_path_factory.mktemp("formats") / "images"
    folder.mkdir()
    shutil.copy(nifti, folder / "as_nifti.nii.gz")
    img = nib.load(str(nifti))
    data = np.asarray(img.dataobj)
    for stem, suffix in FORMATS.items():
        if suffix != ".nii.gz":
            write_sitk(folder / f"{stem}{suffix}", data, img.affine)
    return folder


@pytest.fixture(scope="module")
def run(formats, oracle_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("formats_out") / "pred"
    argv = ["infer", "-c", str(oracle_ckpt), "-i", str(formats), "-o", str(out)]
    options = ["--overlap", "0.25", "--num-workers", "0", "--no-progress", "--save-probabilities", "nifti"]
    assert main([*argv, *options]) == 0
    return out


def test_every_format_gives_the_nifti_mask(run):
    want = nib.load(str(run / "as_nifti.nii.gz"))
    assert np.asarray(want.dataobj).any()
    for stem in FORMATS:
        got = nib.load(str(run / f"{stem}.nii.gz"))
        assert got.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj), err_msg=stem)
        np.testing.assert_allclose(got.affine, want.affine, atol=1e-4, err_msg=stem)
        probs = nib.load(str(run / f"{stem}_probabilities.nii.gz"))
        assert probs.shape == (*got.shape, 2)
        np.testing.assert_allclose(probs.affine, want.affine, atol=1e-4, err_msg=stem)
    rows = {r["case"]: r for r in read_rows(run / "report.csv")}
    assert sorted(rows) == sorted(FORMATS) and {r["status"] for r in rows.values()} == {"ok"}
    volumes = {r["lesion_volume_ml"] for r in rows.values()}
    assert len(volumes) == 1 and volumes.pop() > 0


def test_native_format_mask_in_the_input_geometry(run, formats):
    want = np.asarray(nib.load(str(run / "as_nifti.nii.gz")).dataobj)
    assert not (run / "as_nifti.nrrd").exists() and not (run / "as_nifti.mha").exists()
    loader = LoadImage(reader=SimpleITKReader(), image_only=True)
    for stem, suffix in NATIVE.items():
        mask = run / f"{stem}{suffix}"
        image = loader(str(formats / f"{stem}{FORMATS[stem]}"))
        back = loader(str(mask))
        np.testing.assert_array_equal(np.asarray(back), want, err_msg=stem)
        np.testing.assert_allclose(back.affine.numpy(), image.affine.numpy(), atol=1e-5, err_msg=stem)
        assert sitk.ReadImage(str(mask)).GetPixelID() == sitk.sitkUInt8


def test_predict_volume_affine_of_nrrd(oracle_ckpt, formats):
    predictor = Predictor.from_checkpoint(oracle_ckpt, device="cpu", overlap=0.25)
    nifti = predictor.predict_volume(formats / "as_nifti.nii.gz")
    nrrd = predictor.predict_volume(formats / "as_nrrd.nrrd")
    np.testing.assert_array_equal(nrrd.label, nifti.label)
    np.testing.assert_allclose(nrrd.affine, nifti.affine, atol=1e-4)
