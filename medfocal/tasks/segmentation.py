"""Segmentation as a LightningModule: any network + any medfocal loss, MONAI metrics per class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from monai.data import MetaTensor
from monai.metrics import ConfusionMatrixMetric, DiceMetric, HausdorffDistanceMetric, MeanIoU
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from medfocal.metrics.lesion import (
    DEFAULT_BINS,
    LesionCounts,
    lesion_counts,
    normalised_surface_dice,
    size_bin_names,
    summarise_lesions,
)
from medfocal.tasks._base import MedfocalModule, image_and_label, metric_key, plain_tensor
from medfocal.tasks.windows import whole_image_logits

__all__ = ["SegmentationModule"]


def voxel_spacing(image: torch.Tensor | None) -> list[list[float]] | None:
    """Per-sample voxel spacing ``[[sx, sy(, sz)], ...]`` from a batched MONAI ``MetaTensor``'s affine.

    ``None`` for plain tensors (MONAI then measures distances in voxels).
    """
    affine = getattr(image, "affine", None)
    if not isinstance(image, MetaTensor) or affine is None:
        return None
    dims = image.ndim - 2
    affine = torch.as_tensor(affine, dtype=torch.float64).cpu()
    if affine.ndim == 2:
        affine = affine.expand(image.shape[0], *affine.shape)
    if affine.shape[0] != image.shape[0] or affine.shape[-1] < dims + 1:
        return None
    spacing = affine[:, :dims, :dims].pow(2).sum(dim=1).sqrt()
    return [[float(v) for v in row] for row in spacing]


class SegmentationModule(MedfocalModule):
    """Train and validate a segmentation network with a (focal-family) loss.

    Logits are ``(B, C, *spatial)`` (2D or 3D), labels ``(B, 1, *spatial)`` class indices (or ``(B, C, ...)``
    multi-label masks with ``activation="sigmoid"``). Validation, test and ``medfocal infer`` run the
    network the same way (:func:`medfocal.tasks.windows.whole_image_logits`): a Gaussian-blended
    sliding window of ``roi_size`` (given here, else the datamodule's patch size, 2D or 3D; stored in
    the model card), or the whole image padded to a multiple of 16 when there is none. Logged per
    epoch, averaged over the foreground classes and per class name: ``val/dice`` (the main metric),
    ``val/iou``, ``val/hd95`` (MONAI
    ``HausdorffDistanceMetric(percentile=95)``, in mm when the batch images carry their affine as MONAI
    ``MetaTensor`` (the datamodules' default), else in voxels), ``val/sensitivity``, ``val/specificity``
    (MONAI ``ConfusionMatrixMetric``), ``val/dice_<class>``, ... MONAI's cumulative metrics gather their
    buffers across DDP ranks before aggregation.

    Args:
        model: the network (``self.model``), e.g. ``monai.networks.nets.UNet``.
        loss: a medfocal loss, e.g. ``medfocal.losses.DiceFocalLoss``, or any ``loss(logits, target)``
            module such as MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True)``
            (``configs/baselines/unet_dicece.yaml``).
        activation: ``"softmax"`` or ``"sigmoid"``; a single sigmoid channel is a binary foreground map.
        optimizer: ``params -> Optimizer`` (LightningCLI ``OptimizerCallable``); default AdamW(lr=1e-3).
        lr_scheduler: ``optimizer -> scheduler`` or None.
        roi_size: sliding-window size; None takes the datamodule's patch size (2D or 3D), else whole images.
        sw_batch_size: windows per forward pass in sliding-window inference.
        sw_overlap: overlap of neighbouring windows (0-1).
        class_names: class names including the background (index 0); from the datamodule when None.
        include_background: also score channel 0 (False: foreground classes only, the usual report).
        compute_hd95: log ``hd95`` (costs distance transforms on CPU each validation epoch).
        lesion_metrics: log lesion-wise detection (:mod:`medfocal.metrics.lesion`) of each validation
            and test case: ``val/lesion_sensitivity``, ``val/lesion_precision``, ``val/lesion_f1``,
            ``val/lesion_fp_per_case`` over all lesions, and ``val/lesion_sensitivity_<bin>``,
            ``val/lesion_f1_<bin>``, ``val/lesion_fp_per_case_<bin>`` per lesion size (bins ``lt10``,
            ``10_100``, ``ge100`` for the default edges; NaN where a bin is empty). Lesions are the
            connected components of each foreground class of a case (26-/8-connected), matched by
            any overlap; counts are pooled over cases and classes (false positives per case divide by
            the number of cases). On by default, 2D and 3D: one connected-component labelling per case
            and class on the CPU (about 0.09 s for a 128³ case with ~900 lesions, against 0.24 s for
            ``hd95``), small beside the sliding-window forward pass.
        lesion_size_bins: increasing size-bin edges, in mm³ (mm² in 2D) when the images carry their
            affine (``MetaTensor``), else voxels.
        nsd_tolerance_mm: also log ``val/nsd``, the normalised surface Dice at this tolerance (MONAI
            ``compute_surface_dice``; mm, or voxels without an affine), mean over cases and foreground
            classes; None (default): not computed (it costs distance transforms like ``hd95``).
        metric_mask_key: score validation and test only inside the region mask the batches carry
            under this key (``"fov"``: DRIVE's field of view, as the published retinal-vessel figures
            are computed; ``"brainmask"``): Dice, IoU, sensitivity and specificity over the voxels
            inside, HD95, NSD and lesions with both masks set to background outside. The loss and the
            training are unchanged. Batches without the key are scored whole, with one warning.
            None (default): whole images.
        monitor: metric followed by the checkpoint callback (default ``"val/dice"``, mode max).
        monitor_mode: ``"max"`` or ``"min"``.

    Example:
        >>> from monai.networks.nets import BasicUNet
        >>> from medfocal.losses import DiceFocalLoss  # doctest: +SKIP
        >>> module = SegmentationModule(BasicUNet(2, 1, 2), DiceFocalLoss())  # doctest: +SKIP
    """

    task = "segmentation"
    default_monitor = "val/dice"

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 4,
        sw_overlap: float = 0.25,
        class_names: Sequence[str] | None = None,
        include_background: bool = False,
        compute_hd95: bool = True,
        lesion_metrics: bool = True,
        lesion_size_bins: Sequence[float] = DEFAULT_BINS,
        nsd_tolerance_mm: float | None = None,
        metric_mask_key: str | None = None,
        monitor: str | None = None,
        monitor_mode: Literal["max", "min"] = "max",
    ) -> None:
        super().__init__(
            model=model,
            loss=loss,
            activation=activation,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            class_names=class_names,
            monitor=monitor,
            monitor_mode=monitor_mode,
        )
        if not 0.0 <= sw_overlap < 1.0:
            raise ValueError(f"sw_overlap must be in [0, 1), not {sw_overlap}")
        self.roi_size = tuple(int(s) for s in roi_size) if roi_size is not None else None
        self.sw_batch_size = int(sw_batch_size)
        self.sw_overlap = float(sw_overlap)
        self.include_background = include_background
        self.compute_hd95 = compute_hd95
        self.lesion_metrics = bool(lesion_metrics)
        self.lesion_size_bins = tuple(float(e) for e in lesion_size_bins)
        size_bin_names(self.lesion_size_bins)  # ValueError for bad edges, now rather than at validation
        if nsd_tolerance_mm is not None and nsd_tolerance_mm < 0:
            raise ValueError(f"nsd_tolerance_mm must be >= 0 or None, not {nsd_tolerance_mm}")
        self.nsd_tolerance_mm = None if nsd_tolerance_mm is None else float(nsd_tolerance_mm)
        self.metric_mask_key = None if metric_mask_key in (None, "None", "") else str(metric_mask_key)
        self._metrics: dict[str, dict[str, Any]] = {}
        self._lesions: dict[str, list[LesionCounts]] = {}
        self._nsd: dict[str, list[float]] = {}
        self._save_plain_hyperparameters()

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.roi_size is None:
            # the training patch size is the validation window, as it will be in inference (the card)
            roi = self._from_data("roi_size")
            self.roi_size = tuple(int(s) for s in roi) if roi is not None else None

    def card_roi_size(self) -> tuple[int, ...] | None:
        """The sliding window of validation, which inference uses too."""
        return self.roi_size

    def _stage_metrics(self, stage: str, multilabel: bool = False) -> dict[str, Any]:
        """The stage's MONAI metrics; a multi-label sigmoid output has no background channel, so every
        channel is scored (``include_background`` is about softmax's class 0)."""
        if stage not in self._metrics:
            kw = {"include_background": self.include_background or multilabel, "reduction": "mean_batch"}
            metrics: dict[str, Any] = {
                "dice": DiceMetric(**kw),
                "iou": MeanIoU(**kw),
                "confusion": ConfusionMatrixMetric(metric_name=("sensitivity", "specificity"), **kw),
            }
            if self.compute_hd95:
                metrics["hd95"] = HausdorffDistanceMetric(percentile=95.0, **kw)
            self._metrics[stage] = metrics
        return self._metrics[stage]

    # ----------------------------------------------------------------- forward
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Float32 logits of the whole image (sliding window when ``roi_size`` is set)."""
        return whole_image_logits(self.model, image, self.roi_size, self.sw_batch_size, self.sw_overlap)

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        image, label = image_and_label(batch)
        raw_image = batch["image"] if isinstance(batch, dict) else None
        logits = self(image)
        loss = self.loss(logits, label)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(image))
        pred, target = self.discretise(logits, label)
        multilabel = self.activation == "sigmoid" and logits.shape[1] > 1
        region = self._region(batch, pred)
        if region is not None:  # outside the region: background in both, for the spatial metrics
            first = 0 if multilabel else 1
            pred[:, first:] *= region
            target[:, first:] *= region
        for name, metric in self._stage_metrics(stage, multilabel).items():
            if name == "hd95":
                metric(y_pred=pred, y=target, spacing=voxel_spacing(raw_image))
            elif region is None:
                metric(y_pred=pred, y=target)
            else:  # voxel counts over the region only: each case's voxels inside, as a 1D image
                for b in range(len(pred)):
                    inside = region[b, 0] > 0
                    metric(y_pred=pred[b][:, inside][None], y=target[b][:, inside][None])
        if self.lesion_metrics or self.nsd_tolerance_mm is not None:
            self._case_metrics(pred, target, voxel_spacing(raw_image), stage, multilabel)
        return {"loss": loss.detach(), "logits": logits.detach()}

    def _region(self, batch: Any, pred: torch.Tensor) -> torch.Tensor | None:
        """The ``metric_mask_key`` mask of the batch as ``(B, 1, *spatial)`` 0/1 (None: score whole images).

        Raises:
            ValueError: the mask's grid differs from the prediction's.
        """
        if self.metric_mask_key is None:
            return None
        if not isinstance(batch, dict) or self.metric_mask_key not in batch:
            if not getattr(self, "_warned_no_region", False):
                self._warned_no_region = True
                rank_zero_warn(
                    f"metric_mask_key {self.metric_mask_key!r}: the evaluation batches carry no "
                    f"{self.metric_mask_key!r} masks, so whole images are scored; give the layout its region "
                    "masks (e.g. PairedFoldersLayout fov_dir) or set metric_mask_key: null"
                )
            return None
        region = (plain_tensor(batch[self.metric_mask_key]) > 0).to(pred.dtype).to(pred.device)
        if region.shape[0] != pred.shape[0] or region.shape[2:] != pred.shape[2:]:
            raise ValueError(
                f"metric_mask_key {self.metric_mask_key!r}: mask of shape {tuple(region.shape)} does not "
                f"match the prediction {tuple(pred.shape)}"
            )
        return region[:, :1]

    def _case_metrics(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        spacing: list[list[float]] | None,
        stage: str,
        multilabel: bool = False,
    ) -> None:
        """Lesion counts (foreground classes pooled) and NSD of each case of a discretised batch, on the
        CPU. Channel 0 is the background (skipped, whatever ``include_background``) unless the output is
        multi-label sigmoid, where every channel is a label."""
        first = 0 if multilabel else 1
        pred_np = pred[:, first:].detach().cpu().numpy() > 0.5
        target_np = target[:, first:].detach().cpu().numpy() > 0.5
        for b in range(pred_np.shape[0]):
            case_spacing = spacing[b] if spacing is not None else None
            if self.lesion_metrics:
                per_class = [
                    lesion_counts(p, t, spacing=case_spacing, size_bins=self.lesion_size_bins)
                    for p, t in zip(pred_np[b], target_np[b])
                ]
                self._lesions.setdefault(stage, []).append(_pool_counts(per_class))
            if self.nsd_tolerance_mm is not None:
                self._nsd.setdefault(stage, []).extend(
                    normalised_surface_dice(p, t, self.nsd_tolerance_mm, spacing=case_spacing)
                    for p, t in zip(pred_np[b], target_np[b])
                )

    def _case_metric_values(self, stage: str) -> dict[str, torch.Tensor]:
        """``<stage>/lesion_*`` and ``<stage>/nsd`` of the epoch, summed over the DDP ranks."""
        values: dict[str, torch.Tensor] = {}
        if self.lesion_metrics:
            cases = self._lesions.pop(stage, [])
            names = size_bin_names(self.lesion_size_bins)
            # (bins, 4) counts + the number of cases: summed across ranks before the ratios
            counts = torch.tensor(
                [
                    [
                        sum(getattr(c, f)[n] for c in cases)
                        for f in ("gt_total", "gt_detected", "pred_total", "pred_tp")
                    ]
                    for n in names
                ],
                dtype=torch.float64,
            ).reshape(len(names), 4)
            n_cases = torch.tensor([float(len(cases))], dtype=torch.float64)
            counts, n_cases = self._sum_over_ranks(counts), self._sum_over_ranks(n_cases)
            if n_cases.item() > 0:
                total = LesionCounts(bins=names)
                for i, n in enumerate(names):
                    row = [int(v) for v in counts[i].tolist()]
                    total.gt_total[n], total.gt_detected[n], total.pred_total[n], total.pred_tp[n] = row
                summary = summarise_lesions([total], n_cases=int(n_cases.item()))
                for key in ("sensitivity", "precision", "f1", "fp_per_case"):
                    values[f"{stage}/lesion_{key}"] = torch.tensor(summary["all"][key])
                for n in names:
                    for key in ("sensitivity", "f1", "fp_per_case"):
                        values[f"{stage}/lesion_{key}_{_bin_key(n)}"] = torch.tensor(summary[n][key])
        if self.nsd_tolerance_mm is not None:
            nsd = self._nsd.pop(stage, [])
            sums = self._sum_over_ranks(torch.tensor([sum(nsd), float(len(nsd))], dtype=torch.float64))
            if sums[1].item() > 0:
                values[f"{stage}/nsd"] = sums[0] / sums[1]
        return values

    def _sum_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1:
            return value
        reduced = trainer.strategy.reduce(value.to(self.device), reduce_op="sum")
        return reduced.cpu().to(torch.float64)

    def discretise(self, logits: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-hot prediction and target ``(B, K, *spatial)`` for MONAI metrics.

        softmax: argmax over C channels (K = C); one sigmoid channel: foreground > 0.5 (K = 2, with a
        background channel); C sigmoid channels: each thresholded at 0.5 (K = C), the target one-hot
        from class indices unless it already has C channels.
        """
        n = logits.shape[1]
        if self.activation == "softmax":
            pred_idx = logits.argmax(dim=1, keepdim=True)
            return _one_hot(pred_idx, n), _one_hot(label, n)
        if n == 1:
            return _one_hot((logits > 0).long(), 2), _one_hot((label > 0).long(), 2)
        pred = (logits > 0).float()
        target = label.float() if label.shape[1] == n else _one_hot(label, n)
        return pred, target

    # ----------------------------------------------------------------- epoch end
    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = self._metrics.get(stage)
        if not metrics:
            return
        values: dict[str, torch.Tensor] = {}
        # aggregate() gathers the buffers of all DDP ranks, so every rank holds the same values
        per_class = {"dice": metrics["dice"].aggregate(), "iou": metrics["iou"].aggregate()}
        sens, spec = metrics["confusion"].aggregate()
        per_class.update(sensitivity=sens, specificity=spec)
        if "hd95" in metrics:
            hd = metrics["hd95"].aggregate()
            per_class["hd95"] = torch.where(torch.isfinite(hd), hd, torch.full_like(hd, float("nan")))
        names = self._scored_class_names(len(per_class["dice"]))
        for key, vec in per_class.items():
            vec = vec.float().reshape(-1)
            values[f"{stage}/{key}"] = _nanmean(vec)
            if key in ("dice", "iou"):
                for name, v in zip(names, vec):
                    values[f"{stage}/{key}_{metric_key(name)}"] = v
        for metric in metrics.values():
            metric.reset()
        values.update({k: v.float() for k, v in self._case_metric_values(stage).items()})
        device = self.device
        self.log_dict({k: v.to(device) for k, v in values.items()}, sync_dist=True)

    def _scored_class_names(self, k: int) -> list[str]:
        names = list(self.class_names) if self.class_names else []
        if not self.include_background and len(names) == k + 1:
            names = names[1:]
        if len(names) != k:
            names = [f"class_{i + (0 if self.include_background else 1)}" for i in range(k)]
        return names


def _pool_counts(per_class: Sequence[LesionCounts]) -> LesionCounts:
    """One case's lesion counts summed over its foreground classes."""
    names = per_class[0].bins
    out = LesionCounts(bins=list(names))
    for field_name in ("gt_total", "gt_detected", "pred_total", "pred_tp"):
        getattr(out, field_name).update({n: sum(getattr(c, field_name)[n] for c in per_class) for n in names})
    return out


def _bin_key(name: str) -> str:
    """A size-bin name as a metric suffix: ``"<10"`` -> ``lt10``, ``"10-100"`` -> ``10_100``,
    ``">=100"`` -> ``ge100``, ``"0.5-2"`` -> ``0p5_2``."""
    return name.replace(">=", "ge").replace("<", "lt").replace("-", "_").replace(".", "p")


def _one_hot(index: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, 1, *spatial)`` class indices -> ``(B, n, *spatial)`` float one-hot."""
    index = index.long()
    if index.ndim >= 2 and index.shape[1] == 1:
        index = index[:, 0]
    out = torch.nn.functional.one_hot(index.clamp(0, n - 1), n)
    return out.movedim(-1, 1).float()


def _nanmean(vec: torch.Tensor) -> torch.Tensor:
    finite = vec[~torch.isnan(vec)]
    return finite.mean() if finite.numel() else torch.tensor(float("nan"))
