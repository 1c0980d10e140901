"""The Predictor's own preprocessing and inversion work on NRRD/MHA through SimpleITKReader.

Until ``infer`` registers the reader itself, this registers it on the predictor's ``LoadImaged`` (what the
wiring will do) and checks that a NIfTI case converted to NRRD/MHA gives the same mask, in the same grid.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from monai.transforms import LoadImaged

from medfocal.data.readers import SimpleITKReader, save_label_like
from medfocal.inference import Predictor


@pytest.fixture(scope="module")
def predictor(oracle_ckpt) -> Predictor:
    predictor = Predictor.from_checkpoint(oracle_ckpt, device="cpu", overlap=0.25)
    loaders = [t for t in predictor.transforms.transforms if isinstance(t, LoadImaged)]
    assert len(loaders) == 1
    loaders[0].register(SimpleITKReader())
    return predictor


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_same_mask_as_from_nifti(predictor, lesion_cases, tmp_path, suffix):
    nifti = sorted((lesion_cases / "imagesTs").glob("*.nii.gz"))[0]
    other = tmp_path / f"case{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(other))

    want = predictor.predict_volume(nifti)
    image = predictor.transforms({"image": str(other)})["image"]
    label = predictor._label_map(predictor._invert(image, predictor.predict_tensor(image)))
    assert label.any()
    np.testing.assert_array_equal(label, want.label)

    out = save_label_like(label, other, tmp_path / f"mask{suffix}")
    back = LoadImaged("image", reader=SimpleITKReader(), image_only=True)({"image": str(out)})["image"]
    np.testing.assert_array_equal(np.asarray(back), want.label)
    np.testing.assert_allclose(back.affine.numpy(), want.affine, atol=1e-4)
