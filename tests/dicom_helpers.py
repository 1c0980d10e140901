"""Test volumes in several formats: one oblique, anisotropic volume as NIfTI, NRRD, MHA and a CT series.

The geometry is given once in RAS (NIfTI's convention); the LPS values for SimpleITK and DICOM are
derived here by the formula (x, y flipped), independently of the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPE = (12, 10, 6)
SPACING = (0.8, 1.1, 2.5)
ORIGIN_RAS = (10.0, -20.0, 30.0)
_LPS = np.diag([-1.0, -1.0, 1.0])


def rotation(angle_deg: float = 20.0) -> np.ndarray:
    """A proper rotation (det +1, as DICOM's slice normal requires) about an oblique axis."""
    a = np.deg2rad(angle_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    return rz @ rx


def ras_affine(decimals: int | None = None) -> np.ndarray:
    """The volume's voxel-to-RAS affine (optionally with direction/origin rounded as DICOM text)."""
    direction = rotation()
    origin = np.asarray(ORIGIN_RAS)
    if decimals is not None:
        direction = np.round(direction, decimals)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(SPACING)
    affine[:3, 3] = origin
    return affine


def volume(seed: int = 0) -> np.ndarray:
    """``(i, j, k)`` int16 test volume (distinct values, so any axis flip or transpose shows)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 2000, size=SHAPE).astype(np.int16)


def write_nifti(path: Path, data: np.ndarray) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(data, ras_affine())
    img.set_qform(ras_affine(), 1)
    img.set_sform(ras_affine(), 1)
    nib.save(img, str(path))
    return path


def write_sitk(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """NRRD/MHA/MHD via SimpleITK with the LPS geometry of ``affine`` (default :func:`ras_affine`)."""
    import SimpleITK as sitk

    affine = ras_affine() if affine is None else np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.T))  # numpy (k, j, i) order
    img.SetSpacing(tuple(spacing))
    img.SetOrigin(tuple(_LPS @ affine[:3, 3]))
    img.SetDirection(tuple((_LPS @ (affine[:3, :3] / spacing)).ravel()))
    sitk.WriteImage(img, str(path))
    return path


def write_dicom_series(
    folder: Path, data: np.ndarray, series_uid: str | None = None, decimals: int = 8, prefix: str = "slice"
) -> list[Path]:
    """A CT Image Storage series, one file per k slice (written in reverse order to test sorting).

    Returns the list of written files in k order. Pixel rows are j, columns are i.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    direction = _LPS @ np.round(rotation(), decimals)
    origin = _LPS @ np.asarray(ORIGIN_RAS)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    files = []
    for k in reversed(range(data.shape[2])):
        position = origin + direction @ (np.array([0.0, 0.0, k]) * SPACING)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "P1", "", "O"
        ds.StudyInstanceUID, ds.StudyID, ds.StudyDate, ds.StudyTime = study_uid, "1", "20260101", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, 1, "CT"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.Manufacturer, ds.ImageType = "medfocal-test", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.{decimals}f}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.PixelSpacing = [f"{SPACING[1]:.6f}", f"{SPACING[0]:.6f}"]  # row spacing (j), column spacing (i)
        ds.SliceThickness = f"{SPACING[2]:.6f}"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T).astype("<i2").tobytes()
        path = folder / f"{prefix}_{data.shape[2] - 1 - k:03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    return files[::-1]
