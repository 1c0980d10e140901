"""Batch inference from a medfocal checkpoint: preprocess as in training, predict, invert, write.

:class:`Predictor` is the Python face of ``medfocal infer``. It is the same for every task kind: the
model card (``checkpoint["medfocal"]``) names the task, and the task's prediction head
(``medfocal.inference.heads``, found through ``medfocal.tasks.registry``) says how the network output
becomes predictions, files and report rows. The folder runner (load ahead, write behind, resume) is
:mod:`medfocal.inference.folder`.

Pipeline per case: ``medfocal.data.inference_transforms`` of the card's preprocessing (load,
channel-first, orientation, spacing, intensity) -> the head's network pass (segmentation: the
sliding window of validation; logits divided by the card's temperature before softmax/sigmoid),
optional mirroring TTA -> the head's ``finish`` (segmentation: ``Invertd`` back to the input grid,
argmax, optional clean-up) -> the head's files, written atomically.

Example::

    predictor = Predictor.from_checkpoint("best.ckpt", tta=True)
    result = predictor.predict_folder("imagesTs/", "predictions/")
    pred = predictor.predict_volume("imagesTs/case_008.nii.gz")   # .label, .probabilities, .affine
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfocal.card import ModelCard
from medfocal.inference.cases import Case, discover_cases
from medfocal.inference.folder import (
    NONFINITE_MODES,
    PROBABILITY_FORMATS,
    InferenceResult,
    check_finite,
    load_case,
    predict_folder,
)
from medfocal.inference.heads import HeadOptions, Prediction, head_for
from medfocal.inference.writer import check_output_writable

__all__ = [
    "DEVICE_OUTPUT_BYTES",
    "NONFINITE_MODES",
    "PROBABILITY_FORMATS",
    "InferenceResult",
    "Prediction",
    "Predictor",
    "check_output_writable",
    "select_device",
    "stays_on_device",
]


#: outputs up to this size stay on the GPU for the head's ``finish`` (``keep_device``); a larger one (a
#: many-class model over a big volume) is copied to the CPU at once, as the writer pool may hold several
DEVICE_OUTPUT_BYTES = 1 << 29


def stays_on_device(output: torch.Tensor, keep_device: bool) -> bool:
    """Whether :meth:`Predictor.predict_checked` leaves ``output`` on its (non-CPU) device."""
    return keep_device and output.device.type != "cpu" and output.nbytes <= DEVICE_OUTPUT_BYTES


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """Run a medfocal network over cases and write its task's outputs in the input geometry.

    Args:
        model: the network (``(B, C_in, *spatial) -> (B, C, *spatial)`` or ``(B, C)``).
        card: the checkpoint's :class:`~medfocal.card.ModelCard` (task, activation, classes,
            preprocessing, roi size, temperature).
        device: ``"auto"``/``None`` (CUDA if present), ``"cpu"``, ``"cuda:0"``...
        overlap: sliding-window overlap fraction in [0, 1).
        tta: average the outputs over all mirrorings of the spatial axes (2^dims passes).
        amp: mixed precision (default: on for CUDA, off on CPU).
        sw_batch_size: windows per forward pass.
        roi_size: window size; default the card's ``roi_size`` (``None``: whole image, padded to a
            multiple of 16), the one validation used.
        keep_largest: keep only the largest connected component of each foreground class.
        min_size: remove connected components smaller than this many voxels (input grid), per class.
        nonfinite: a NaN/Inf in a case's image (as loaded, or after preprocessing: intensities that
            overflow float32) or in the network's probabilities: ``"error"`` fails the case with one
            line naming the file; ``"replace"`` sets them to the image's minimum (loaded image) or 0
            and flags the case in the report's ``warnings`` column. One ``isfinite`` pass per stage.
        overlays: also write an overlay PNG per case where the task's head can (detection boxes on 2D
            images).

    Raises:
        ValueError: an option out of range, a ``roi_size`` of the wrong length, an unregistered task.

    Example::

        predictor = Predictor.from_checkpoint("best.ckpt", device="cpu", overlap=0.5)
        predictor.predict_folder("imagesTs", "out", save_probabilities="npz")
    """

    def __init__(
        self,
        model: nn.Module,
        card: ModelCard,
        device: str | torch.device | None = None,
        overlap: float = 0.5,
        tta: bool = False,
        amp: bool | None = None,
        sw_batch_size: int = 2,
        roi_size: Sequence[int] | None = None,
        keep_largest: bool = False,
        min_size: int = 0,
        nonfinite: str = "error",
        overlays: bool = False,
    ) -> None:
        from medfocal.data.transforms import PreprocessingSpec, inference_transforms

        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap: expected a value in [0, 1), got {overlap}")
        if min_size < 0:
            raise ValueError(f"min_size: expected >= 0 voxels, got {min_size}")
        if nonfinite not in NONFINITE_MODES:
            raise ValueError(f"nonfinite: expected one of {NONFINITE_MODES}, got {nonfinite!r}")
        self.nonfinite = nonfinite
        #: the checkpoint file (its SHA-256 identifies the run in ``OUT/.medfocal/run.json``)
        self.checkpoint_path: Path | None = card.path
        self.card = card
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.amp = self.device.type == "cuda" if amp is None else bool(amp)
        self.tta = bool(tta)
        self.spec = PreprocessingSpec.from_dict(card.preprocessing)
        self.transforms = inference_transforms(self.spec, keys=("image",))
        options = HeadOptions(
            roi_size=tuple(int(r) for r in roi_size) if roi_size else card.roi_size,
            overlap=float(overlap),
            sw_batch_size=int(sw_batch_size),
            keep_largest=bool(keep_largest),
            min_size=int(min_size),
            overlays=bool(overlays),
        )
        self.head = head_for(card, options, self.transforms)

    @property
    def info(self) -> ModelCard:
        """The model card (the name used before :mod:`medfocal.card`)."""
        return self.card

    @property
    def roi_size(self) -> tuple[int, ...] | None:
        """The sliding-window size in use."""
        return self.head.options.roi_size

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | Sequence[str | Path],
        device: str | torch.device | None = None,
        trust: bool = False,
        **kwargs: Any,
    ) -> Predictor:
        """Rebuild the network from a self-describing checkpoint (``weights_only=True``) and wrap it.

        ``path`` may also be a model exported by ``medfocal export`` (``.onnx``, run by onnxruntime, or
        TorchScript ``.pt``): the model card stored in the file gives the same preprocessing. Several
        checkpoints, a folder of them or a ``medfocal cv`` folder make an ensemble: the mean of the members'
        temperature-scaled probabilities, after checking that their cards agree (classes, preprocessing,
        patch size). ``trust=True`` allows a full unpickle when the safe load fails (own checkpoints only).
        Other keyword arguments go to :class:`Predictor`.
        """
        from medfocal.export import load_model
        from medfocal.inference.ensemble import load_ensemble

        paths = [path] if isinstance(path, (str, Path)) else list(path)
        if len(paths) == 1 and not Path(paths[0]).is_dir():
            card, model = load_model(paths[0], trust=trust)
        else:
            card, model = load_ensemble(paths, trust=trust)
        return cls(model, card, device=device, **kwargs)

    # ---- model passes -------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def predict_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """The head's output for one preprocessed image ``(C_in, *spatial)``.

        Returns:
            float32 on CPU: segmentation ``(C, *spatial)`` probabilities on the preprocessed grid,
            classification ``(C,)``. With ``tta``, merged over all mirrorings of the spatial axes.

        Raises:
            ValueError: an image the model cannot take (the head's ``check_input``, e.g. an axis far
                smaller than the patch), non-finite probabilities with ``nonfinite="error"``.
        """
        return self.predict_checked(image)[0]

    def predict_checked(
        self, image: torch.Tensor, keep_device: bool = False
    ) -> tuple[torch.Tensor, list[str]]:
        """:meth:`predict_tensor` and the warnings of ``nonfinite="replace"`` for the report row.

        ``keep_device``: leave the output on the model's device (for a head whose ``finish`` runs there,
        :attr:`PredictionHead.finish_on_device`) instead of copying it to the CPU, when it is at most
        :data:`DEVICE_OUTPUT_BYTES`."""
        original = None
        meta = getattr(image, "meta", None)
        if isinstance(meta, dict) and meta.get("spatial_shape") is not None:
            original = tuple(int(s) for s in torch.as_tensor(meta["spatial_shape"]).reshape(-1).tolist())
        if hasattr(image, "as_tensor"):  # MetaTensor: drop the metadata for the model passes
            image = image.as_tensor()
        image = torch.as_tensor(image)
        self.head.check_input(image.unsqueeze(0), original)
        output = self._passes(image, keep_device)
        return output, check_finite(output, "output", self.nonfinite, fill=0.0)

    def _passes(self, image: torch.Tensor, keep_device: bool = False) -> torch.Tensor:
        x = torch.as_tensor(image).float().unsqueeze(0).to(self.device)
        flips = self.head.tta_flips(x) if self.tta else [()]

        def passes() -> Iterator[torch.Tensor]:
            for axes in flips:
                xi = torch.flip(x, axes) if axes else x
                yield self.head.unflip(self.head.run(self.model, xi).float(), axes)

        with torch.inference_mode(), self._autocast():
            output = self.head.merge(passes())
        return output[0] if stays_on_device(output[0], keep_device) else output[0].cpu()

    def _load(self, case: Case, warnings: list[str] | None = None) -> Any:
        card = self.card
        return load_case(case, self.transforms, card.in_channels, card.spatial_dims, self.nonfinite, warnings)

    def _finish(self, case: Case, image: Any, output: torch.Tensor) -> Prediction:
        return self.head.finish(case, image, output)

    def predict_volume(self, source: str | Path | Sequence[str | Path] | Case) -> Prediction:
        """Predict one case (a file, its channel files, or a :class:`Case`) in its input geometry.

        Returns:
            :class:`Prediction`; segmentation: ``label`` (uint8, input shape), ``probabilities``
            (``(C, *spatial)`` in the input grid), ``affine`` and report ``statistics``;
            classification: ``probabilities`` ``(C,)``. With ``nonfinite="replace"``, what was
            replaced is in ``statistics["warnings"]``.

        Raises:
            ValueError: unreadable file, wrong channel count or dimensionality, a shape the model cannot
                take, non-finite values with ``nonfinite="error"`` (naming the file).
        """
        if isinstance(source, Case):
            case = source
        else:
            paths = [Path(source)] if isinstance(source, (str, Path)) else [Path(p) for p in source]
            case = Case(discover_cases(paths[0])[0].case_id, paths)
        warnings: list[str] = []
        image = self._load(case, warnings)
        try:
            output, more = self.predict_checked(image)
        except ValueError as err:
            raise ValueError(f"{case.source}: {err}") from None
        prediction = self._finish(case, image, output)
        if warnings or more:
            prediction.statistics["warnings"] = "; ".join(warnings + more)
        return prediction

    def predict_folder(
        self,
        source: str | Path,
        output_dir: str | Path,
        overwrite: bool = False,
        save_probabilities: str | None = None,
        num_workers: int = 1,
        progress: bool = True,
        report_name: str | None = None,
        html: bool = False,
        num_parts: int = 1,
        part_id: int = 0,
        num_writers: int | None = None,
    ) -> InferenceResult:
        """Predict every case of a folder, file or CSV list into ``output_dir``; never raises per case.

        Args:
            source: folder of images (NIfTI, NRRD, MetaImage; nnU-Net channel naming
                ``case_0000.nii.gz``, 4D NIfTI, PNG/JPG), a single file, a DICOM series folder or a folder
                of series folders (one case each), or a CSV with an ``image`` column.
            output_dir: created if needed; must not be (inside) an input folder.
            overwrite: redo every case (default: skip the cases an earlier run with the same checkpoint
                finished, resuming it; outputs of another checkpoint are an error).
            save_probabilities: ``None``, ``"nifti"`` (float32 ``(*spatial, C)``) or ``"npz"``
                (segmentation).
            num_workers: DataLoader worker processes for loading/preprocessing (0: a prefetch thread).
            progress: show a rich progress bar.
            report_name: CSV written in ``output_dir`` (default: the head's, ``report.csv`` for
                segmentation, ``predictions.csv`` for classification).
            html: also write ``output_dir/report.html``, a self-contained review page (sortable
                table, three-plane overlays of each case's image and predicted mask, lesion counts).
            num_parts: split the input into this many parts (machines, GPUs, SLURM array tasks), each
                run with its own ``part_id``; the sorted cases are dealt round-robin, each part writes
                ``report.part-K-of-N.csv`` and the last one to finish the merged report.
            part_id: which part this process runs, ``0 .. num_parts - 1``.
            num_writers: threads that invert, clean and write finished cases (default: 1 on the CPU, a
                quarter of the cores up to 4 with a GPU, where one thread cannot keep up with the model).

        Returns:
            :class:`InferenceResult` (rows, failures, summary, ``interrupted``, ``exit_code``). Failed
            cases are listed, the others go on. Each finished case is recorded at once in
            ``output_dir/.medfocal/cases/`` and the report rebuilt from the records (every few seconds
            and at the end), so a killed run loses nothing it finished; Ctrl-C returns after the case
            being written with ``interrupted=True`` (exit code 130).

        Raises:
            FileNotFoundError / ValueError: for the run as a whole (no input, output inside input, output
                not writable, outputs of another checkpoint there without ``overwrite``).
        """
        return predict_folder(
            self,
            source,
            output_dir,
            overwrite,
            save_probabilities,
            num_workers,
            progress,
            report_name,
            html,
            num_parts,
            part_id,
            num_writers,
        )
