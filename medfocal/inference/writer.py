"""Atomic output files in the input's geometry, and a background writer thread with a bounded queue.

Every file is written to a hidden temporary name in the output folder and moved into place with
``os.replace`` (atomic on one file system): an interrupted run leaves either the complete file or
nothing, and ``medfocal infer`` can skip finished cases on the next run.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.npz"
    >>> with atomic_path(out) as tmp:
    ...     np.savez_compressed(tmp, x=np.zeros(3))
    >>> out.exists()
    True
"""

from __future__ import annotations

import queue
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# atomic writes live in medfocal.io (shared with reports and evaluation); re-exported here
from medfocal.io import NIFTI_SUFFIXES, TMP_PREFIX, atomic_path, remove_stale_temporaries

__all__ = [
    "TMP_PREFIX",
    "BackgroundWriter",
    "atomic_path",
    "check_output_writable",
    "reference_geometry",
    "remove_stale_temporaries",
    "save_label_image",
    "save_probabilities",
]


def check_output_writable(output_dir: str | Path) -> Path:
    """Create ``output_dir`` if needed and check that a file can be written there (before any work).

    ``medfocal infer`` calls it before loading the checkpoint; :func:`predict_folder` before any case.

    Raises:
        ValueError: one line naming the folder and the problem.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: the output path is a file, not a folder; choose another output folder (-o)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=TMP_PREFIX):
            pass
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise ValueError(
            f"{out}: the output folder is not writable ({reason}); choose another output folder (-o) "
            "or fix its permissions"
        ) from None
    return out


def _as_4x4(affine: np.ndarray) -> np.ndarray:
    """A NIfTI ``4 x 4`` affine from a ``(d+1, d+1)`` one (``d`` = 2: the third axis of 1 mm at 0)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (4, 4):
        return affine
    d = affine.shape[0] - 1
    out = np.eye(4)
    out[:d, :d] = affine[:d, :d]
    out[:d, 3] = affine[:d, d]
    return out


def reference_geometry(
    reference: str | Path, affine: np.ndarray | None = None
) -> tuple[tuple[int, ...], np.ndarray, Any]:
    """``(spatial shape, 4x4 RAS affine, NIfTI header or None)`` of an input image, from its header only.

    NIfTI: nibabel (header kept, so masks carry its codes); NRRD/MetaImage: SimpleITK's
    ``ReadImageInformation`` (:func:`medfocal.data.readers.sitk_affine`); a DICOM series folder: the
    slice count and the first slice's size, with ``affine`` (the loaded image's ``original_affine``)
    or else the series read once. ``affine`` is used for every input that is not NIfTI.

    Raises:
        ValueError: an unreadable reference (naming it).
    """
    import nibabel as nib

    from medfocal.data.readers import _first_line, dicom_series_files, sitk_affine

    reference = Path(reference)
    if reference.name.lower().endswith(NIFTI_SUFFIXES):
        ref = nib.load(str(reference))
        return tuple(int(s) for s in ref.shape), np.asarray(ref.affine, dtype=np.float64), ref.header
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    files = dicom_series_files(reference) if reference.is_dir() else [reference]
    reader.SetFileName(str(files[0]))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ValueError(f"{reference}: unreadable image ({_first_line(err)})") from None
    shape = tuple(int(s) for s in reader.GetSize())
    if reference.is_dir():
        shape = (*shape[:2], len(files))
        if affine is None:
            from medfocal.data.readers import SimpleITKReader

            affine = sitk_affine(SimpleITKReader().read(reference))
    elif affine is None:
        affine = sitk_affine(reader)
    return shape, _as_4x4(affine), None


def _nifti_like(data: np.ndarray, affine: np.ndarray, header: Any, dtype: type) -> Any:
    """A NIfTI image of ``data`` with ``affine`` as qform and sform (the reference's codes, else 1)."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine, header.copy() if header is not None else None)
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    qcode = int(header["qform_code"]) if header is not None else 0
    scode = int(header["sform_code"]) if header is not None else 0
    img.set_qform(affine, qcode or 1)
    img.set_sform(affine, scode or 1)
    return img


def save_label_image(
    label: np.ndarray, reference: str | Path, final: str | Path, affine: np.ndarray | None = None
) -> Path:
    """Write a label map as uint8 in the reference image's geometry: NIfTI (or PNG for a 2D photo).

    Args:
        label: integer array with the reference's spatial shape (voxel order ``(i, j, k)``; PNG:
            ``(H, W)``).
        reference: the input image the mask belongs to (its first channel file): NIfTI (its affine and
            header are copied), NRRD/MetaImage, a DICOM series folder, or a photo.
        final: output path (``.nii.gz``/``.nii`` or ``.png``).
        affine: the input's RAS affine when the reference is not NIfTI (default: read from its header,
            see :func:`reference_geometry`).

    Raises:
        ValueError: the label's shape differs from the reference's spatial shape.
    """
    final = Path(final)
    reference = Path(reference)
    label = np.asarray(label)
    if label.min(initial=0) < 0 or label.max(initial=0) > 255:
        raise ValueError(f"{final}: label values must fit uint8, got range [{label.min()}, {label.max()}]")
    label = label.astype(np.uint8)
    if final.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(reference) as im:
            expected = (im.height, im.width)
        if label.shape != expected:
            raise ValueError(f"{final}: mask shape {label.shape} differs from {reference.name} {expected}")
        with atomic_path(final) as tmp:
            Image.fromarray(label).save(tmp, format="PNG")
        return final
    import nibabel as nib

    shape, ref_affine, header = reference_geometry(reference, affine)
    if label.shape != tuple(shape[: label.ndim]):
        raise ValueError(f"{final}: mask shape {label.shape} differs from {reference.name} {tuple(shape)}")
    img = _nifti_like(label, ref_affine, header, np.uint8)
    img.header["descrip"] = b"medfocal segmentation"
    with atomic_path(final) as tmp:
        nib.save(img, str(tmp))
    return final


def save_probabilities(
    probabilities: np.ndarray,
    reference: str | Path,
    final: str | Path,
    class_names: list[str],
    affine: np.ndarray | None = None,
) -> Path:
    """Write ``(C, *spatial)`` probabilities: ``.npz`` (``probabilities`` float16, ``class_names``) or NIfTI.

    NIfTI output is float32 ``(*spatial, C)`` in the reference's geometry (channels last, as NIfTI
    expects; ``reference`` and ``affine`` as for :func:`save_label_image`).
    """
    final = Path(final)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if final.suffix == ".npz":
        with atomic_path(final) as tmp:
            np.savez_compressed(
                tmp, probabilities=probabilities.astype(np.float16), class_names=np.asarray(class_names)
            )
        return final
    import nibabel as nib

    _, ref_affine, header = reference_geometry(reference, affine)
    data = np.moveaxis(probabilities, 0, -1)
    img = nib.Nifti1Image(data, ref_affine)
    img.set_data_dtype(np.float32)
    qcode = int(header["qform_code"]) if header is not None else 0
    scode = int(header["sform_code"]) if header is not None else 0
    img.set_qform(ref_affine, qcode or 1)
    img.set_sform(ref_affine, scode or 1)
    with atomic_path(final) as tmp:
        nib.save(img, str(tmp))
    return final


class BackgroundWriter:
    """Run ``handler(item)`` in ``threads`` worker threads fed by a bounded queue, so compute never waits
    on disk.

    ``submit`` blocks when ``max_pending`` items wait (back-pressure bounds memory); results (or the
    exception a handler raised) go to ``on_done(item, result, error)`` in the worker thread that ran the
    item. With several threads, items finish in any order and ``on_done`` may run concurrently (guard
    what it shares); gzip and NumPy release the GIL, so a pool overlaps the writes of several cases.
    Use as a context manager; leaving it waits for every submitted item.
    """

    _STOP = object()

    def __init__(
        self,
        handler: Callable[[Any], Any],
        on_done: Callable[[Any, Any, BaseException | None], None],
        max_pending: int = 2,
        threads: int = 1,
    ) -> None:
        if threads < 1:
            raise ValueError(f"BackgroundWriter: threads must be at least 1, got {threads}")
        self._handler = handler
        self._on_done = on_done
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_pending))
        self._threads = [
            threading.Thread(target=self._run, name=f"medfocal-writer-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            try:
                result = self._handler(item)
            except Exception as err:
                self._on_done(item, None, err)
            else:
                self._on_done(item, result, None)

    def submit(self, item: Any) -> None:
        """Queue one item (blocks while the queue is full)."""
        if not any(t.is_alive() for t in self._threads):
            raise RuntimeError("background writer threads have stopped")
        self._queue.put(item)

    def close(self) -> None:
        """Wait for every queued item, then stop the threads."""
        alive = [t for t in self._threads if t.is_alive()]
        for _ in alive:  # each thread takes one stop mark after the items queued before it
            self._queue.put(self._STOP)
        for thread in alive:
            thread.join()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
