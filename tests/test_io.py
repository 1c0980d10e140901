"""Tests for medfocal.io: the suffixes, case ids, atomic writes, JSON conversion and spacing shared by all."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medfocal.io import (
    IMAGE_SUFFIXES,
    TMP_PREFIX,
    atomic_path,
    case_id_of,
    image_suffix,
    is_photo,
    remove_stale_temporaries,
    spacing_of,
    strip_suffix,
    to_plain,
)


@pytest.mark.parametrize(
    ("name", "case", "suffix"),
    [("a/brain_017.nii.gz", "brain_017", ".nii.gz"), ("ct.NII", "ct", ".nii"), ("x.1.nrrd", "x.1", ".nrrd"),
     ("scan.MHA", "scan", ".mha"), ("s.mhd", "s", ".mhd"), ("im.JPEG", "im", ".jpeg"),
     ("notes.txt", "notes", None)],
)  # fmt: skip
def test_case_ids_and_suffixes(name, case, suffix):
    assert strip_suffix(name) == case == case_id_of(Path(name))
    assert image_suffix(name) == suffix
    assert is_photo(name) == (suffix in (".jpeg",))


def test_every_suffix_is_lower_case_and_nifti_gz_matches_before_nii():
    assert all(s == s.lower() for s in IMAGE_SUFFIXES)
    assert IMAGE_SUFFIXES.index(".nii.gz") < IMAGE_SUFFIXES.index(".nii")


def test_atomic_path_replaces_on_success_and_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "mask.nii.gz"
    with atomic_path(final) as tmp:
        assert tmp.name.startswith(TMP_PREFIX) and tmp.name.endswith("-mask.nii.gz")
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert final.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]
    (tmp_path / f"{TMP_PREFIX}dead-a.npz").write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == 1 and [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]


class _Mode(enum.Enum):
    FAST = "fast"


class _Card:
    def to_dict(self):
        return {"roi": (8, 8)}


def test_to_plain_gives_json_types():
    value = {
        "t": torch.tensor([1.5, 2.0]), "a": np.arange(2), "s": np.float32(0.25), "i": np.int64(3),
        "p": Path("x/y"), "e": _Mode.FAST, "c": _Card(), 7: (None, True),
    }  # fmt: skip
    plain = to_plain(value)
    assert plain == {"t": [1.5, 2.0], "a": [0, 1], "s": 0.25, "i": 3, "p": "x/y", "e": "fast",
                     "c": {"roi": [8, 8]}, "7": [None, True]}  # fmt: skip
    assert json.loads(json.dumps(plain)) == plain


def test_spacing_of_an_oblique_affine():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.8, 3.0])
    affine[:3, 3] = [10, -4, 2]
    assert spacing_of(affine) == pytest.approx((0.7, 0.8, 3.0))
    assert spacing_of(affine, 2) == pytest.approx((0.7, 0.8))
    assert spacing_of(torch.as_tensor(np.diag([0.5, 2.0, 1.0]))) == pytest.approx((0.5, 2.0))
