"""The segmentation prediction head: probabilities -> input geometry -> label map, masks and volumes.

Per case: sliding-window logits on the preprocessed grid (the same function validation uses,
:func:`medfocal.tasks.windows.whole_image_logits`), ``activation(logits / T)`` with the card's
temperature, ``Invertd`` back to the input grid (probabilities resampled bilinearly, then argmax),
optional largest-component / small-component clean-up, a uint8 mask with the input's exact affine and
header (NIfTI) or a PNG, optional probabilities (``.npz`` or NIfTI), and a report row with the
components, volume and maximum probability of each foreground class.

Inputs read by :class:`~medfocal.data.readers.SimpleITKReader` get their NIfTI mask in the input's
geometry (the loaded image's ``original_affine``) and the mask in their own format too (NRRD: ``.nrrd``,
MetaImage: ``.mha``); a DICOM series folder gets a DICOM Segmentation ``<case>_seg.dcm`` over the
source series (``medfocal[dicom]``; without it the report row's ``warnings`` says so).
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from medfocal.card import ModelCard
from medfocal.data.readers import LABEL_WRITE_SUFFIXES, save_label_like
from medfocal.inference.cases import Case
from medfocal.inference.cleanup import clean_labels
from medfocal.inference.heads.base import HeadOptions, Network, Prediction, PredictionHead
from medfocal.inference.report import case_statistics
from medfocal.inference.writer import reference_geometry, save_label_image, save_probabilities
from medfocal.io import NIFTI_SUFFIXES
from medfocal.metrics.temperature import calibrated_probabilities
from medfocal.tasks.windows import whole_image_logits

__all__ = ["PROBABILITIES_STEM", "SEG_SUFFIX", "SegmentationHead", "dicom_extra_missing", "input_affine"]

_log = logging.getLogger(__name__)
_INVERT_LOCK = threading.Lock()

#: ``<case>_seg.dcm``: the DICOM Segmentation written next to the NIfTI mask of a DICOM series case
SEG_SUFFIX = "_seg.dcm"
PROBABILITIES_STEM = "_probabilities"


def _channel_argmax(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``probs.max(0)`` as C elementwise passes: torch's reduction over a leading dim of a big volume is
    ~50x slower on CPU (0.44 s vs 9 ms for 2 x 128 x 128 x 80). Ties go to the lower index, as argmax."""
    best = probs[0].clone()
    label = torch.zeros(probs.shape[1:], dtype=torch.uint8, device=probs.device)
    for c in range(1, probs.shape[0]):
        better = probs[c] > best
        label[better] = c
        best = torch.maximum(best, probs[c])
    return best, label


class SegmentationHead(PredictionHead):
    """Masks in the input's geometry (see the module docstring); report ``report.csv``."""

    report_name = "report.csv"
    #: the output may stay on the GPU: inversion and the label map run there, only results come back
    finish_on_device: ClassVar[bool] = True
    #: set when a transform's inverse failed on the GPU: invert on the CPU from then on
    _cpu_inversion: bool = False
    #: an axis of the preprocessed image shorter than this fraction of the patch (or than 2 voxels)
    #: is refused: the window would be mostly padding, unlike anything the model was trained on
    min_patch_fraction: ClassVar[float] = 0.25

    def __init__(self, card: ModelCard, options: HeadOptions, transforms: Any = None) -> None:
        super().__init__(card, options, transforms)
        roi = options.roi_size
        if roi is not None and len(roi) != card.spatial_dims:
            raise ValueError(f"roi_size: expected {card.spatial_dims} values, got {list(roi)}")

    # ---- the network pass -----------------------------------------------------------------------
    def check_input(self, x: torch.Tensor, input_shape: tuple[int, ...] | None = None) -> None:
        """Refuse an image with an axis of size 1 or far smaller than the patch (e.g. one 2D slice
        saved as an ``(H, W, 1)`` NIfTI given to a 3D model), saying what the model expects."""
        dims = self.card.spatial_dims
        spatial = tuple(int(s) for s in x.shape[2:])
        roi = self.options.roi_size
        if roi is not None:
            minimum = [max(2, math.ceil(r * self.min_patch_fraction)) for r in roi]
        else:
            minimum = [2] * len(spatial)
        small = [i for i, (s, m) in enumerate(zip(spatial, minimum)) if s < m]
        if not small and len(spatial) == dims:
            return
        spacing = self.card.preprocessing.get("spacing")
        hint = "a single slice needs a 2D model" if dims == 3 else "or a model trained on smaller patches"
        patch = f"patch size {list(roi)}" if roi is not None else "whole images"
        spacing_text = f", spacing {list(spacing)} mm" if spacing else ""
        disk = f" (shape {list(input_shape)} on disk)" if input_shape is not None else ""
        raise ValueError(
            f"the model is {dims}D ({patch}{spacing_text}) and needs every axis of the preprocessed image "
            f"to have at least {minimum} voxels; this image is {list(spatial)} after preprocessing{disk}, "
            f"axis {small} too small: give a {dims}D image covering at least that much ({hint})"
        )

    def run(self, network: Network, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(1, C, *spatial)`` on the preprocessed grid."""
        o = self.options
        logits = whole_image_logits(network, x, o.roi_size, o.sw_batch_size, o.overlap)
        return calibrated_probabilities(logits, self.card.activation, self.card.temperature)

    def unflip(self, output: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        return torch.flip(output, axes) if axes else output

    # ---- back to the input geometry -----------------------------------------------------------
    def invert(self, image: Any, probs: torch.Tensor) -> torch.Tensor:
        """Resample ``(C, *spatial)`` probabilities back to the input grid (bilinear), undoing orientation.

        Two-class softmax: only the foreground channel is resampled (half the work); background = 1 - it.
        """
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        if not image.applied_operations:  # nothing spatial was done (e.g. a 2D photo at native size)
            return torch.as_tensor(probs).float()
        binary = self.card.activation == "softmax" and probs.shape[0] == 2
        pred = MetaTensor(probs[1:] if binary else probs, meta=dict(image.meta))
        pred.applied_operations = list(image.applied_operations)
        data = {"image": image, "pred": pred}
        # one inversion at a time: MONAI's Invertd flips the shared transforms' allow_missing_keys for
        # its duration (several writer threads would interleave that and could leave it on), and a copy
        # of the transforms cannot invert (MONAI checks the inverting object is the one that applied)
        with _INVERT_LOCK:
            inverted = Invertd("pred", self.transforms, orig_keys="image", nearest_interp=False)(data)["pred"]
        out = inverted.as_tensor() if isinstance(inverted, MetaTensor) else torch.as_tensor(inverted)
        out = out.float()
        return torch.cat([1.0 - out, out]) if binary else out

    def label_map(self, probs: torch.Tensor) -> np.ndarray:
        """uint8 labels: argmax (softmax), > 0.5 (one sigmoid channel), or the most probable channel
        above 0.5 (multi-label sigmoid); then :meth:`clean`."""
        if self.card.activation == "sigmoid" and probs.shape[0] == 1:
            label = (probs[0] > 0.5).to(torch.uint8)
        else:
            best, label = _channel_argmax(probs)
            if self.card.activation == "sigmoid":
                label = torch.where(best > 0.5, label + 1, torch.zeros_like(label))
        return self.clean(label.cpu().numpy().astype(np.uint8))

    def clean(self, label: np.ndarray) -> np.ndarray:
        """Per foreground class: keep the largest component and/or drop components < ``min_size`` voxels
        (:func:`medfocal.inference.cleanup.clean_labels`)."""
        n = len(self.card.foreground_names)
        return clean_labels(label, range(1, n + 1), self.options.keep_largest, self.options.min_size)

    def invert_on_device(self, image: Any, probs: torch.Tensor) -> torch.Tensor:
        """:meth:`invert` where ``probs`` lies (a GPU: the resampling runs there); should a transform
        of the preprocessing not run on that device, once a warning and the CPU from then on."""
        if probs.device.type == "cpu" or self._cpu_inversion:
            return self.invert(image, probs.cpu())
        try:
            return self.invert(image, probs)
        except (RuntimeError, TypeError, NotImplementedError) as err:
            self._cpu_inversion = True
            _log.warning("inverting on %s failed (%s); inverting on the CPU from now on", probs.device, err)
            return self.invert(image, probs.cpu())

    def finish(self, case: Case, image: Any, output: torch.Tensor) -> Prediction:
        """Invert, threshold and clean one case (on ``output``'s device); statistics for the report."""
        inverted = self.invert_on_device(image, output)
        label = self.label_map(inverted)
        probabilities = inverted.cpu().numpy()
        affine = None
        if case.is_2d_image:
            # MONAI's PILReader indexes (W, H); images on disk are (H, W)
            label, probabilities = label.T, np.swapaxes(probabilities, -1, -2)
        else:
            affine = input_affine(case, image)
        stats = case_statistics(
            label, affine, self.card.foreground_names, probabilities, self.card.activation
        )
        return Prediction(case.case_id, probabilities, label, affine, stats)

    # ---- files and report ---------------------------------------------------------------------
    def output_paths(self, case: Case, output_dir: Path, save_probabilities: str | None) -> list[Path]:
        """``<case>.nii.gz`` (``.png`` for 2D photos); for NRRD/MetaImage input also the mask in that
        format (``<case>.nrrd`` / ``<case>.mha``), for a DICOM series ``<case>_seg.dcm`` (when the
        ``dicom`` extra is installed); ``<case>_probabilities.npz|.nii.gz`` when asked."""
        ext = ".png" if case.is_2d_image else ".nii.gz"
        out = [output_dir / f"{case.case_id}{ext}"]
        native = native_mask_suffix(case.paths[0])
        if native:
            out.append(output_dir / f"{case.case_id}{native}")
        if case.paths[0].is_dir() and dicom_extra_missing() is None:
            out.append(output_dir / f"{case.case_id}{SEG_SUFFIX}")
        if save_probabilities:
            pext = ".npz" if save_probabilities == "npz" or case.is_2d_image else ".nii.gz"
            out.append(output_dir / f"{case.case_id}{PROBABILITIES_STEM}{pext}")
        return out

    def write(self, case: Case, prediction: Prediction, paths: list[Path]) -> None:
        reference = case.paths[0]
        for path in paths:
            name = path.name
            if name.startswith(f"{case.case_id}{PROBABILITIES_STEM}."):
                save_probabilities(
                    prediction.probabilities, reference, path, self.card.class_names, prediction.affine
                )
            elif name.endswith(SEG_SUFFIX):
                from medfocal.inference.dicom_seg import write_dicom_seg

                write_dicom_seg(reference, prediction.label, self.card.foreground_names, path)
            elif name.lower().endswith(LABEL_WRITE_SUFFIXES):
                save_label_like(prediction.label, reference, path)
            else:
                save_label_image(prediction.label, reference, path, prediction.affine)
        if reference.is_dir() and not any(p.name.endswith(SEG_SUFFIX) for p in paths):
            missing = dicom_extra_missing()
            if missing:  # the report row says why there is no DICOM SEG
                prediction.statistics["warnings"] = f"no DICOM SEG: {missing}"

    def report_row(self, prediction: Prediction) -> dict[str, Any]:
        """``<class>_components``, ``<class>_volume_ml`` (or ``_pixels``), ``<class>_max_prob``."""
        return dict(prediction.statistics)


def input_affine(case: Case, image: Any) -> np.ndarray:
    """The RAS affine of a volume case as on disk: NIfTI's own (nibabel), else the loaded image's
    ``original_affine`` (what :class:`~medfocal.data.readers.SimpleITKReader` read, before
    preprocessing), else the file's header."""
    path = case.paths[0]
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).affine, dtype=np.float64)
    meta = getattr(image, "meta", None) or {}
    original = meta.get("original_affine")
    if original is not None:
        return np.asarray(torch.as_tensor(original).double().cpu().numpy())
    return reference_geometry(path)[1]


def native_mask_suffix(path: Path) -> str | None:
    """The mask written besides the NIfTI one for an input in another format: ``.nrrd`` for NRRD,
    ``.mha`` for MetaImage (``.mha``; ``.mhd`` + ``.raw`` too, as one file); ``None`` otherwise."""
    name = path.name.lower()
    if name.endswith((".nrrd", ".nhdr")):
        return ".nrrd"
    if name.endswith((".mha", ".mhd")):
        return ".mha"
    return None


def dicom_extra_missing() -> str | None:
    """``None`` when pydicom and highdicom import, else the one-line install message of the extra."""
    from medfocal._optional import MissingExtraError, require

    try:
        require("pydicom", "dicom", "writing DICOM SEG")
        require("highdicom", "dicom", "writing DICOM SEG")
    except MissingExtraError as err:
        return str(err)
    return None
