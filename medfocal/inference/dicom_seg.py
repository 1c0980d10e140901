"""Write a predicted label map as a DICOM Segmentation (highdicom) that references its source series.

The label map is on the grid :class:`medfocal.data.readers.SimpleITKReader` gives for the series
folder: axes ``(i, j, k)`` = (column, row, slice in :func:`~medfocal.data.readers.dicom_series_files`
order). Each foreground class ``1..K`` becomes one segment (``segment_number = k``, label = its class
name); each frame references its source slice (``DerivationImageSequence`` → ``ReferencedSOPInstanceUID``),
so the SEG opens on the images in a viewer (3D Slicer, OHIF). Empty frames are omitted.

Needs the ``dicom`` extra (``pip install "medfocal[dicom]"``: pydicom, highdicom).

Example::

    write_dicom_seg("series/case_01", label, ["liver", "tumour"], "out/case_01_seg.dcm")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfocal._optional import require

__all__ = ["write_dicom_seg"]

_PURPOSE = "writing DICOM SEG"


def _segment_descriptions(hd, codes, class_names: Sequence[str], version: str) -> list:
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medfocal", version=version, family=codes.cid7162.ArtificialIntelligence
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=str(name)[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k, name in enumerate(class_names, start=1)
    ]


def write_dicom_seg(
    series_folder: str | Path,
    label: np.ndarray,
    class_names: Sequence[str],
    final: str | Path,
    series_description: str = "medfocal segmentation",
    series_number: int = 900,
) -> Path:
    """Write ``label`` (classes ``1..K`` named ``class_names``) as a BINARY DICOM SEG over ``series_folder``.

    Args:
        series_folder: the source DICOM series (a folder holding exactly one series).
        label: integer map ``(columns, rows, slices)`` on the series' grid (the reader's array order).
        class_names: names of labels ``1..K`` (foreground only; ``CheckpointInfo.foreground_names``).
        final: output ``.dcm`` path, written atomically.
        series_description: the SEG series' description.
        series_number: the SEG series' number.

    Returns:
        ``final``.

    Raises:
        MissingExtraError: pydicom/highdicom not installed (one line with the install command).
        ValueError: the label's shape differs from the series grid, or it holds values above ``K``.
    """
    pydicom = require("pydicom", "dicom", _PURPOSE)
    hd = require("highdicom", "dicom", _PURPOSE)
    from pydicom.sr.codedict import codes

    import medfocal
    from medfocal.data.readers import dicom_series_files
    from medfocal.inference.writer import atomic_path

    series_folder, final = Path(series_folder), Path(final)
    files = dicom_series_files(series_folder)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    expected = (int(sources[0].Columns), int(sources[0].Rows), len(sources))
    label = np.asarray(label)
    if label.shape != expected:
        raise ValueError(
            f"{final}: mask shape {label.shape} differs from the series {series_folder} "
            f"(columns, rows, slices) = {expected}"
        )
    top = int(label.max(initial=0))
    if label.min(initial=0) < 0 or top > len(class_names):
        raise ValueError(
            f"{final}: label values must lie in 0..{len(class_names)} ({len(class_names)} class names), "
            f"got range [{label.min()}, {top}]"
        )
    frames = np.ascontiguousarray(np.transpose(label, (2, 1, 0)).astype(np.uint8))  # (slices, rows, cols)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(hd, codes, class_names, medfocal.__version__),
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medfocal",
        manufacturer_model_name="medfocal",
        software_versions=medfocal.__version__,
        device_serial_number="0",
        series_description=series_description,
    )
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        seg.save_as(tmp)
    return final
