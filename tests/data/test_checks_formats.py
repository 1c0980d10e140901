"""``medfocal check-data`` on NRRD and MetaImage datasets: a Decathlon ``dataset.json`` naming ``.nrrd``
files, and paired ``images/`` + ``masks/`` folders of ``.mha`` files, read through SimpleITK."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from dicom_helpers import write_sitk

from medfocal.data.checks import main_check_data


def _convert(nifti: Path, target: Path, dtype: type = np.float32, shift: float = 0.0) -> Path:
    """``nifti``'s array and affine (origin moved ``shift`` mm along x) written by SimpleITK."""
    img = nib.load(str(nifti))
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[0, 3] += shift
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_sitk(target, np.asarray(img.dataobj).astype(dtype), affine)


@pytest.fixture(scope="module")
def nrrd_decathlon(lesion_dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nrrd") / "Task_nrrd"
    meta = json.loads((lesion_dataset / "dataset.json").read_text())
    for item in meta["training"]:
        for key, dtype in (("image", np.float32), ("label", np.uint8)):
            name = item[key].replace(".nii.gz", ".nrrd")
            _convert(lesion_dataset / item[key], root / name, dtype)
            item[key] = name
    meta["test"] = []
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def mha_pairs(lesion_dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mha") / "pairs"
    for image in sorted((lesion_dataset / "imagesTr").glob("*.nii.gz"))[:3]:
        case = image.name[: -len(".nii.gz")]
        _convert(image, root / "images" / f"{case}.mha")
        _convert(lesion_dataset / "labelsTr" / image.name, root / "masks" / f"{case}.mha", np.uint8)
    return root


def test_decathlon_of_nrrd_files(nrrd_decathlon, capsys):
    assert main_check_data([str(nrrd_decathlon)]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "case_000" in out and "lesion" in out
    assert main_check_data(["--dataset-json", str(nrrd_decathlon / "dataset.json"), "--quick"]) == 0


def test_paired_folders_of_mha_files(mha_pairs, capsys):
    assert main_check_data([str(mha_pairs)]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and all(f"case_00{i}" in out for i in range(3))


def test_nrrd_label_in_another_geometry_is_named(nrrd_decathlon, lesion_dataset, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(nrrd_decathlon, broken)
    label = lesion_dataset / "labelsTr" / "case_001.nii.gz"
    _convert(label, broken / "labelsTr" / "case_001.nrrd", np.uint8, shift=5.0)
    assert main_check_data([str(broken)]) == 1
    out = capsys.readouterr().out
    assert "case_001.nrrd" in out and "affine" in out
