from __future__ import annotations

import pytest

from medfocal.inference.cases import discover_cases


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")
    return folder


def test_nnunet_channel_naming_groups_files(tmp_path):
    folder = _touch(tmp_path / "in", "b_0001.nii.gz", "a_0000.nii.gz", "b_0000.nii.gz", "a_0001.nii.gz")
    cases = discover_cases(folder)
    assert [c.case_id for c in cases] == ["a", "b"]
    assert [p.name for p in cases[1].paths] == ["b_0000.nii.gz", "b_0001.nii.gz"]


def test_plain_folder_and_errors(tmp_path):
    folder = _touch(tmp_path / "plain", "x.nii.gz", "y_0000.nii.gz", "notes.txt", ".hidden.nii.gz")
    assert [c.case_id for c in discover_cases(folder)] == ["x", "y_0000"]
    with pytest.raises(ValueError, match=r"channel files \[0, 2\]"):
        discover_cases(_touch(tmp_path / "gap", "a_0000.nii.gz", "a_0002.nii.gz"))
    with pytest.raises(ValueError, match="several files per case id"):
        discover_cases(_touch(tmp_path / "dup", "a.nii", "a.nii.gz"))
    with pytest.raises(FileNotFoundError, match="no images found"):
        discover_cases(_touch(tmp_path / "empty", "readme.md"))
    with pytest.raises(FileNotFoundError):
        discover_cases(tmp_path / "missing")


def test_csv_list(tmp_path):
    _touch(tmp_path / "imgs", "t1.nii.gz", "t2.nii.gz", "u.nii.gz")
    (tmp_path / "list.csv").write_text("case,image\npat1,imgs/t1.nii.gz;imgs/t2.nii.gz\n,imgs/u.nii.gz\n")
    cases = discover_cases(tmp_path / "list.csv")
    assert [c.case_id for c in cases] == ["pat1", "u"]
    assert [p.name for p in cases[0].paths] == ["t1.nii.gz", "t2.nii.gz"]
    assert cases[0].paths[0].parent == tmp_path / "imgs"
    (tmp_path / "bad.csv").write_text("path\nimgs/u.nii.gz\n")
    with pytest.raises(ValueError, match="'image' column"):
        discover_cases(tmp_path / "bad.csv")


def _write_itk(path, shape_xyz, components=1):
    import numpy as np
    import SimpleITK as sitk

    array = np.zeros((*shape_xyz[::-1], components) if components > 1 else shape_xyz[::-1], np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=components > 1), str(path))


def test_mha_nrrd_mhd_found_like_training_does(tmp_path):
    # training reads .mha/.nrrd (data layouts); infer must find the same cases under the same ids
    from medfocal.data.layouts import PairedFoldersLayout

    images, labels = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    labels.mkdir()
    for name in ("ct_1.mha", "ct_2.nrrd", "ct_3.mhd"):
        _write_itk(images / name, (6, 5, 4))
        _write_itk(labels / name, (6, 5, 4))
    cases = discover_cases(images)
    assert [c.case_id for c in cases] == ["ct_1", "ct_2", "ct_3"]
    assert [c.paths[0].name for c in cases] == ["ct_1.mha", "ct_2.nrrd", "ct_3.mhd"]
    layout = PairedFoldersLayout(str(images), str(labels))
    assert sorted(r["case"] for r in layout.records()) == [c.case_id for c in cases]
    assert [c.case_id for c in discover_cases(images / "ct_2.nrrd")] == ["ct_2"]


def test_check_case_reads_itk_headers(tmp_path):
    from medfocal.inference.cases import Case, check_case

    _write_itk(tmp_path / "a.mha", (6, 5, 4))
    _write_itk(tmp_path / "rgbish.nrrd", (6, 5, 4), components=2)
    check_case(Case("a", [tmp_path / "a.mha"]), in_channels=1, spatial_dims=3)
    check_case(Case("v", [tmp_path / "rgbish.nrrd"]), in_channels=2, spatial_dims=3)
    with pytest.raises(ValueError, match=r"a\.mha \(\+1\): expected 3 channel\(s\), got 2"):
        check_case(Case("a", [tmp_path / "a.mha", tmp_path / "a.mha"]), in_channels=3, spatial_dims=3)
    (tmp_path / "broken.mha").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"broken\.mha: unreadable image"):
        check_case(Case("b", [tmp_path / "broken.mha"]), in_channels=1, spatial_dims=3)
