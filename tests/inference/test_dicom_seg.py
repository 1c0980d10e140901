"""DICOM SEG out: parses with pydicom/highdicom, frames reference the right slices, pixels equal the mask."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

# the dicom extra is part of the dev extra: a missing or broken install fails here, it never skips
import highdicom as hd
import pydicom
from dicom_helpers import volume, write_dicom_series
from monai.transforms import LoadImage

from medfocal._optional import MissingExtraError
from medfocal.data.readers import SimpleITKReader
from medfocal.inference.dicom_seg import write_dicom_seg

NAMES = ["organ", "lesion"]


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    return write_dicom_series(tmp_path_factory.mktemp("ct") / "case_01", volume())[0].parent


def _label_from_reader(series: Path) -> np.ndarray:
    """Two classes from thresholds of the array as the reader gives it (the grid infer predicts on)."""
    image = np.asarray(LoadImage(reader=SimpleITKReader(), image_only=True)(str(series)))
    label = np.zeros(image.shape, np.uint8)
    label[image > 800] = 1
    label[image > 1500] = 2
    label[:, :, 0] = 0  # one empty slice: its frames are omitted
    return label


def _frames(seg) -> list[tuple[str, int, np.ndarray]]:
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    out = []
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        out.append((uid, int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber), pixels[f]))
    return out


def test_seg_frames_map_to_source_slices(series, tmp_path):
    label = _label_from_reader(series)
    out = write_dicom_seg(series, label, NAMES, tmp_path / "seg" / "case_01_seg.dcm")
    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == NAMES
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2]
    sources = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in sorted(series.iterdir()))}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == next(iter(sources.values())).SeriesInstanceUID
    assert seg.StudyInstanceUID == next(iter(sources.values())).StudyInstanceUID
    seen = set()
    for uid, segment, pixels in _frames(seg):
        source = sources[uid].pixel_array  # independent of medfocal's axis conventions
        expected = source > 800 if segment == 1 else source > 1500
        if segment == 1:
            expected &= source <= 1500
        if sources[uid].InstanceNumber == 1:  # slice k = 0 was emptied
            expected[:] = False
        np.testing.assert_array_equal(pixels.astype(bool), expected)
        seen.add((uid, segment))
    nonempty = {
        (uid, s) for uid, ds in sources.items() for s in (1, 2) if ds.InstanceNumber > 1
    }  # every slice but the first has voxels of both classes in this random volume
    assert seen == nonempty


def test_seg_reads_back_with_highdicom(series, tmp_path):
    label = _label_from_reader(series)
    out = write_dicom_seg(series, label, NAMES, tmp_path / "seg.dcm")
    seg = hd.seg.segread(out)
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in _series_order(series)]
    back = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True
    )
    np.testing.assert_array_equal(np.transpose(back, (2, 1, 0)), label)


def _series_order(series: Path) -> list[Path]:
    from medfocal.data.readers import dicom_series_files

    return dicom_series_files(series)


def test_wrong_shape_and_values(series, tmp_path):
    with pytest.raises(
        ValueError, match=r"seg\.dcm: mask shape \(3, 3, 3\) differs from the series .*= \(12, 10, 6\)"
    ):
        write_dicom_seg(series, np.zeros((3, 3, 3), np.uint8), NAMES, tmp_path / "seg.dcm")
    with pytest.raises(
        ValueError, match=r"label values must lie in 0\.\.2 \(2 class names\), got range \[3, 3\]"
    ):
        write_dicom_seg(series, np.full((12, 10, 6), 3, np.uint8), NAMES, tmp_path / "seg.dcm")


def test_missing_extra_is_one_line(series, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(MissingExtraError) as err:
        write_dicom_seg(series, np.zeros((12, 10, 6), np.uint8), NAMES, tmp_path / "seg.dcm")
    assert str(err.value) == 'writing DICOM SEG needs highdicom: pip install "medfocal[dicom]"'
