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
