"""`plan` reads the formats training reads: a Decathlon folder of NRRD volumes plans like its NIfTI twin."""

from __future__ import annotations

import json

import pytest
import SimpleITK as sitk

from medfocal.data.fingerprint import compute_fingerprint


def test_nrrd_dataset_fingerprints_like_its_nifti_twin(lesion_dataset, tmp_path):
    meta = json.loads((lesion_dataset / "dataset.json").read_text())
    nrrd = tmp_path / "nrrd"
    for sub in ("imagesTr", "labelsTr"):
        (nrrd / sub).mkdir(parents=True)
    training = []
    for entry in meta["training"]:
        pair = {}
        for key in ("image", "label"):
            src = lesion_dataset / entry[key]
            rel = entry[key].replace(".nii.gz", ".nrrd")
            sitk.WriteImage(sitk.ReadImage(str(src)), str(nrrd / rel))
            pair[key] = rel
        training.append(pair)
    (nrrd / "dataset.json").write_text(json.dumps({**meta, "training": training, "test": []}))
    a = compute_fingerprint(str(lesion_dataset), max_cases=4).to_dict()
    b = compute_fingerprint(str(nrrd), max_cases=4).to_dict()
    # NRRD stores the affine in float32-ish precision: the same geometry to 1e-6
    assert b["median_spacing"] == pytest.approx(a["median_spacing"], rel=1e-6)
    assert b["median_shape"] == a["median_shape"]
    assert b["class_fractions"] == pytest.approx(a["class_fractions"], abs=1e-6)
