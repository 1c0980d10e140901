"""``medfocal infer`` on DICOM series folders: cases, NIfTI mask in the series geometry, DICOM SEG beside it.

The series are CT Image Storage slices written with pydicom (``tests/dicom_helpers.py``: oblique,
anisotropic, slices written in reverse order) holding a bright ball that the threshold oracle segments.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

# the dicom extra is part of the dev extra: a missing or broken install fails here, it never skips
import highdicom as hd
import pydicom
from dicom_helpers import SPACING, ras_affine, write_dicom_series

from medfocal.cli import main
from medfocal.data.readers import dicom_series_files
from medfocal.inference.html_report import read_rows

SHAPE = (24, 20, 10)


def ball(centre: tuple[float, float, float], radius_mm: float = 5.0) -> np.ndarray:
    """int16 ``(i, j, k)`` volume: 100 outside, 800 inside a ball (the oracle's lesion is > 590)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), axis=-1)
    dist = np.linalg.norm((grid - np.asarray(centre)) * np.asarray(SPACING), axis=-1)
    return np.where(dist < radius_mm, 800, 100).astype(np.int16)


@pytest.fixture(scope="module")
def series_root(tmp_path_factory) -> Path:
    """``root/pat_a`` and ``root/pat_b``: one series each, the ball at different places."""
    root = tmp_path_factory.mktemp("dicom") / "study"
    write_dicom_series(root / "pat_a", ball((11.0, 9.0, 5.0)))
    write_dicom_series(root / "pat_b", ball((8.0, 12.0, 4.0), radius_mm=6.0))
    return root


def _infer(*argv: str) -> int:
    return main(["infer", *argv, "--overlap", "0.25", "--num-workers", "0", "--no-progress"])


def _seg_label(seg_path: Path, series: Path) -> np.ndarray:
    """The label map ``(i, j, k)`` a SEG encodes: each frame put at the slice it references."""
    seg = pydicom.dcmread(seg_path)
    slice_of = {pydicom.dcmread(f).SOPInstanceUID: k for k, f in enumerate(dicom_series_files(series))}
    first = pydicom.dcmread(dicom_series_files(series)[0])
    label = np.zeros((int(first.Columns), int(first.Rows), len(slice_of)), np.uint8)
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    shared = seg.SharedFunctionalGroupsSequence[0]
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        # one segment: highdicom puts its identification in the shared groups
        ident = item if "SegmentIdentificationSequence" in item else shared
        segment = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        label[:, :, slice_of[uid]][pixels[f].T > 0] = segment
    return label


@pytest.fixture(scope="module")
def run(series_root, oracle_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dicom_out") / "pred"
    assert _infer("-c", str(oracle_ckpt), "-i", str(series_root), "-o", str(out), "--html") == 0
    return out


def test_one_case_per_series_folder(run):
    rows = {r["case"]: r for r in read_rows(run / "report.csv")}
    assert sorted(rows) == ["pat_a", "pat_b"]
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert all(r["lesion_volume_ml"] > 0 for r in rows.values())


def test_nifti_mask_in_the_series_geometry(run, series_root):
    for case in ("pat_a", "pat_b"):
        img = nib.load(str(run / f"{case}.nii.gz"))
        assert img.shape == SHAPE and img.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.affine, ras_affine(decimals=8), atol=1e-4)
        # the ball's voxels: the oracle finds it where it is, in the reader's (i, j, k) order
        truth = ball((11.0, 9.0, 5.0)) > 590 if case == "pat_a" else ball((8.0, 12.0, 4.0), 6.0) > 590
        mask = np.asarray(img.dataobj) > 0
        assert (mask & truth).sum() / (mask | truth).sum() > 0.8


def test_dicom_seg_pixels_equal_the_nifti_mask(run, series_root):
    for case in ("pat_a", "pat_b"):
        seg_path = run / f"{case}_seg.dcm"
        seg = hd.seg.segread(seg_path)
        assert seg.Modality == "SEG" and [s.SegmentLabel for s in seg.SegmentSequence] == ["lesion"]
        source = pydicom.dcmread(dicom_series_files(series_root / case)[0])
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
        mask = np.asarray(nib.load(str(run / f"{case}.nii.gz")).dataobj)
        # one frame per slice holding the lesion (empty frames omitted)
        assert int(seg.NumberOfFrames) == int((mask.reshape(-1, SHAPE[2]) > 0).any(axis=0).sum())
        np.testing.assert_array_equal(_seg_label(seg_path, series_root / case), mask)


def test_review_page_shows_the_series(run):
    text = (run / "report.html").read_text()
    assert text.count('class="thumb"') == 2 and 'class="error"' not in text


def test_single_series_folder(series_root, oracle_ckpt, tmp_path):
    assert _infer("-c", str(oracle_ckpt), "-i", str(series_root / "pat_b"), "-o", str(tmp_path / "o")) == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("pat_b*")) == ["pat_b.nii.gz", "pat_b_seg.dcm"]


def test_several_series_in_one_folder_are_listed(oracle_ckpt, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    write_dicom_series(mixed, ball((11.0, 9.0, 5.0)), series_uid="1.2.826.0.1.3680043.8.498.1", prefix="a")
    write_dicom_series(mixed, ball((8.0, 12.0, 4.0)), series_uid="1.2.826.0.1.3680043.8.498.2", prefix="b")
    assert _infer("-c", str(oracle_ckpt), "-i", str(mixed), "-o", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"medfocal infer: error: {mixed}: 2 DICOM series in one folder")
    assert "1.2.826.0.1.3680043.8.498.1 (10 files)" in err and "1.2.826.0.1.3680043.8.498.2 (10 files)" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.nii.gz"))


def test_without_the_dicom_extra_one_line_and_the_nifti(
    series_root, oracle_ckpt, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom -> ImportError
    assert _infer("-c", str(oracle_ckpt), "-i", str(series_root / "pat_a"), "-o", str(tmp_path / "o")) == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("pat_a*")) == ["pat_a.nii.gz"]
    err = capsys.readouterr().err
    need = 'writing DICOM SEG needs highdicom: pip install "medfocal[dicom]"'
    assert err.strip() == f"medfocal infer: warning: no DICOM SEG: {need}"
    (row,) = read_rows(tmp_path / "o" / "report.csv")
    assert row["status"] == "ok" and row["warnings"].startswith(
        "no DICOM SEG: writing DICOM SEG needs highdicom"
    )


def test_reference_geometry_of_a_series_and_its_header_shape(series_root):
    from medfocal.inference.cases import Case, check_case
    from medfocal.inference.writer import reference_geometry

    shape, affine, header = reference_geometry(series_root / "pat_a")  # no affine given: the series is read
    assert shape == SHAPE and header is None
    np.testing.assert_allclose(affine, ras_affine(decimals=8), atol=1e-5)
    check_case(Case("pat_a", [series_root / "pat_a"]), in_channels=1, spatial_dims=3)
    with pytest.raises(ValueError, match=r"pat_a: expected 2 channel\(s\), got 1"):
        check_case(Case("pat_a", [series_root / "pat_a"]), in_channels=2, spatial_dims=3)
