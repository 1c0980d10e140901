"""Detection as a LightningModule: MONAI's RetinaNet detector with medfocal's sigmoid focal loss.

The network (``medfocal.nets.DetectionRetinaNet`` or any MONAI ``RetinaNet``) is ``self.model``; MONAI's
``RetinaNetDetector`` wraps it with the anchor generator (``AnchorGeneratorWithAnchorShape``), the ATSS
matcher, the hard-negative sampler, the box coder, the box selector (score threshold, NMS) and an
optional sliding-window inferer. The classification loss is any loss taking ``(N, C)`` logits and
``(N, C)`` one-hot targets of the sampled anchors (default ``FocalLoss(activation="sigmoid", gamma=2)``);
the box loss is MONAI's choice (``SmoothL1Loss(beta=1/9)`` on encoded boxes, or ``BoxGIoULoss`` on
decoded ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from monai.losses.giou_loss import BoxGIoULoss
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from medfocal.card import CARD_KEY
from medfocal.losses import FocalLoss
from medfocal.metrics.detection import detection_metrics, froc_metrics
from medfocal.tasks._base import MedfocalModule, metric_key, plain_tensor
from medfocal.tasks.detection_builder import MonaiRetinaNetDetector, build_detector

__all__ = ["DetectionModule", "MonaiRetinaNetDetector", "build_detector"]


class DetectionModule(MedfocalModule):
    """Train, validate and predict a RetinaNet detector (2D or 3D) with a focal classification loss.

    Batches are :func:`medfocal.data.boxes.detection_collate` dicts: ``image`` ``(B, C, *spatial)``,
    ``boxes`` (list of ``(N_i, 2 * dims)`` corner boxes in voxels of ``image``), ``labels`` (list of
    ``(N_i,)`` class indices), optionally ``affine``, ``id``, ``spatial_size``.

    Logged: ``train/loss`` (= ``cls_weight * train/loss_cls + train/loss_box``); per validation/test epoch
    ``val/loss``, ``val/loss_cls``, ``val/loss_box`` (the training losses on the validation images, from the
    same network pass as the detections; the sampler's random draws do not disturb training's),
    ``val/map50`` (AP at IoU 0.5, mean over classes with ground truth; the default monitor), ``val/map``
    (COCO mAP@[.5:.95]), ``val/ap50_<class>``, ``val/ap_<class>`` and, when ``compute_froc`` (default for 3D),
    ``val/froc_<fp>`` (sensitivity at 1/8 ... 8 false positives per image, IoU >= ``froc_iou``) and
    ``val/cpm`` (their mean, LUNA16's score).

    Args:
        model: a RetinaNet network (``medfocal.nets.DetectionRetinaNet``).
        loss: classification loss on ``(N, C)`` logits and one-hot targets; default
            ``FocalLoss(activation="sigmoid", gamma=2.0)``.
        box_loss: box regression loss; default ``SmoothL1Loss(beta=1/9)`` on encoded boxes; a MONAI
            ``BoxGIoULoss`` is applied to decoded boxes.
        anchor_shapes: base anchor sizes (voxels) at the finest pyramid level, one row per anchor, e.g.
            ``[[6, 8, 4], [8, 6, 5], [10, 10, 6]]``; their number must equal ``model.num_anchors``.
        feature_map_scales: anchor scale per pyramid level; default ``2 ** level`` for the model's levels.
        class_balanced: multiply the classification loss of class ``c`` by its class-balanced weight from
            the training boxes (Cui et al. 2019, ``beta=0.999``; the loss's ``weight``).
        cls_weight: weight of the classification loss in the total.
        atss_candidates: ATSS candidates per level (MONAI default 4).
        sampler_batch_size, sampler_positive_fraction, sampler_min_neg, sampler_pool_size: the hard-negative
            sampler (anchors per image, their positive share, minimum negatives, pool size).
        score_thresh, topk_candidates_per_level, nms_thresh, detections_per_img: the box selector.
        val_roi_size: sliding-window size for validation/prediction (None: whole images).
        sw_batch_size, sw_overlap: sliding-window settings.
        compute_froc: log FROC and CPM (default: for 3D models).
        froc_iou: IoU that makes a detection a hit for FROC (0.1 as MONAI's LUNA16 tutorial).
        count_threshold: score from which a detection counts as an object (``medfocal infer``'s counts per
            class in ``report.csv``; stored in the model card).
        optimizer, lr_scheduler, class_names, monitor, monitor_mode: as the other medfocal modules.

    ``predict_step`` returns one dict per image: ``boxes`` (float ``(N, 2 * dims)``, corner mode, voxels of
    the preprocessed image), ``labels`` (long ``(N,)``), ``scores`` (float ``(N,)``, sigmoid
    probabilities), ``boxes_world`` (the boxes through the batch ``affine``: pixels of the original 2D image,
    world mm (RAS) for 3D volumes; corner mode), ``affine``, ``id``, ``spatial_size``.
    """

    task = "detection"
    default_monitor = "val/map50"

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module | None = None,
        box_loss: nn.Module | None = None,
        anchor_shapes: Sequence[Sequence[float]] = ((8, 8), (12, 12), (16, 16)),
        feature_map_scales: Sequence[float] | None = None,
        class_balanced: bool = False,
        cls_weight: float = 1.0,
        atss_candidates: int = 4,
        sampler_batch_size: int = 64,
        sampler_positive_fraction: float = 0.3,
        sampler_min_neg: int = 16,
        sampler_pool_size: float = 20.0,
        score_thresh: float = 0.02,
        topk_candidates_per_level: int = 1000,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        val_roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 1,
        sw_overlap: float = 0.25,
        compute_froc: bool | None = None,
        froc_iou: float = 0.1,
        count_threshold: float = 0.5,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        class_names: Sequence[str] | None = None,
        monitor: str | None = None,
        monitor_mode: Literal["max", "min"] = "max",
    ) -> None:
        super().__init__(
            model=model,
            loss=loss if loss is not None else FocalLoss(activation="sigmoid", gamma=2.0),
            activation="sigmoid",
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            class_names=class_names,
            monitor=monitor,
            monitor_mode=monitor_mode,
        )
        dims = int(getattr(model, "spatial_dims", len(anchor_shapes[0])))
        shapes = [[float(v) for v in row] for row in anchor_shapes]
        if any(len(row) != dims for row in shapes):
            raise ValueError(f"anchor_shapes rows need {dims} values (one per axis), got {shapes}")
        levels = int(getattr(model, "num_levels", 0)) or None
        if feature_map_scales is None:
            if levels is None:
                raise ValueError("feature_map_scales is needed when the model has no num_levels attribute")
            feature_map_scales = [2**i for i in range(levels)]
        self.box_loss = box_loss if box_loss is not None else nn.SmoothL1Loss(beta=1.0 / 9, reduction="mean")
        self.class_balanced = class_balanced
        self.cls_weight = float(cls_weight)
        self.compute_froc = (dims == 3) if compute_froc is None else bool(compute_froc)
        self.froc_iou = float(froc_iou)
        if not 0.0 <= count_threshold <= 1.0:
            raise ValueError(f"count_threshold must be a score in [0, 1], not {count_threshold}")
        self.count_threshold = float(count_threshold)
        self.spatial_dims = dims
        self.val_roi_size = list(val_roi_size) if val_roi_size is not None else None
        self.inference_settings = {
            "anchor_shapes": shapes,
            "feature_map_scales": [float(s) for s in feature_map_scales],
            "score_thresh": float(score_thresh),
            "topk_candidates_per_level": int(topk_candidates_per_level),
            "nms_thresh": float(nms_thresh),
            "detections_per_img": int(detections_per_img),
            "roi_size": self.val_roi_size,
            "sw_batch_size": int(sw_batch_size),
            "sw_overlap": float(sw_overlap),
        }
        detector = build_detector(model, **self.inference_settings)
        detector.set_atss_matcher(num_candidates=atss_candidates, center_in_gt=False)
        detector.set_hard_negative_sampler(
            batch_size_per_image=sampler_batch_size,
            positive_fraction=sampler_positive_fraction,
            min_neg=sampler_min_neg,
            pool_size=sampler_pool_size,
        )
        detector.set_cls_loss(self.loss)
        decode = isinstance(self.box_loss, BoxGIoULoss)
        detector.set_box_regression_loss(self.box_loss, encode_gt=not decode, decode_pred=decode)
        # not a registered submodule: its parameters are self.model's and self.loss's (no duplicate keys)
        object.__setattr__(self, "detector", detector)
        self._outputs: dict[str, list[tuple[np.ndarray, ...]]] = {}
        self._save_plain_hyperparameters()

    # ----------------------------------------------------------------- plumbing
    def _resolve_auto_alpha(self, stage: str) -> None:
        raise ValueError(
            "alpha='auto' is not defined for detection (sigmoid over several classes): keep a scalar alpha "
            "(0.25 as RetinaNet) and set DetectionModule(class_balanced=true) for per-class weights"
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.class_balanced and stage == "fit":
            from medfocal.losses.weights import class_balanced_alpha

            dm = self._datamodule()
            if dm is None or not hasattr(dm, "class_counts"):
                raise ValueError(
                    "class_balanced=True needs a datamodule with class_counts() (boxes per class)"
                )
            weights = class_balanced_alpha(dm.class_counts(), 0.999)
            if not hasattr(self.loss, "weight"):
                raise ValueError(
                    "class_balanced=True needs a loss with a per-class weight, "
                    f"got {type(self.loss).__name__}"
                )
            self.loss.weight = weights.to(self.device)
            rank_zero_info(f"medfocal: class-balanced detection weights {weights.tolist()}")

    @property
    def num_classes(self) -> int | None:
        n = getattr(self.model, "num_classes", None)
        return int(n) if n is not None else super().num_classes

    @staticmethod
    def _targets(batch: dict[str, Any]) -> list[dict[str, Tensor]]:
        return [
            {"boxes": plain_tensor(b).float(), "labels": plain_tensor(lab).long()}
            for b, lab in zip(batch["boxes"], batch["labels"])
        ]

    def forward(self, image: Tensor) -> list[dict[str, Tensor]]:
        """Detections of a batch of images (eval mode): ``[{"boxes", "labels", "labels_scores"}]``."""
        # the detector's own flag selects losses vs detections; Lightning sets the network's modes itself
        self.detector.training = False
        return self.detector(plain_tensor(image), use_inferer=self.val_roi_size is not None)

    # ----------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        image = plain_tensor(batch["image"])
        self.detector.training = True
        losses = self.detector(image, self._targets(batch))
        cls_loss, box_loss = losses[self.detector.cls_key], losses[self.detector.box_reg_key]
        loss = self.cls_weight * cls_loss + box_loss.to(cls_loss.device)
        n = len(image)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/loss_cls", cls_loss, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/loss_box", box_loss, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def _evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, Tensor]:
        image = plain_tensor(batch["image"])
        # the hard-negative sampler draws from torch's generator: validation must not shift the random
        # sequence of training (a run with validation every epoch trains as one validating every 5)
        devices = [image.device] if image.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            losses, detections = self.detector.losses_and_detections(
                image, self._targets(batch), use_inferer=self.val_roi_size is not None
            )
        cls_loss, box_loss = losses[self.detector.cls_key], losses[self.detector.box_reg_key]
        loss = self.cls_weight * cls_loss + box_loss.to(cls_loss.device)
        n = len(image)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log(f"{stage}/loss_cls", cls_loss, on_step=False, on_epoch=True, batch_size=n)
        self.log(f"{stage}/loss_box", box_loss, on_step=False, on_epoch=True, batch_size=n)
        store = self._outputs.setdefault(stage, [])
        for det, gt_boxes, gt_labels in zip(detections, batch["boxes"], batch["labels"]):
            store.append(
                (
                    det["boxes"].detach().float().cpu().numpy(),
                    det["labels"].detach().cpu().numpy(),
                    det[self.detector.pred_score_key].detach().float().cpu().numpy(),
                    plain_tensor(gt_boxes).detach().float().cpu().numpy(),
                    plain_tensor(gt_labels).detach().cpu().numpy(),
                )
            )
        return {"loss": loss}

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """The metrics of the detections gathered in ``stage`` so far (see the class docstring)."""
        rows = self._outputs.get(stage) or []
        if not rows:
            return {}
        pb, pl, ps, gb, gl = (list(col) for col in zip(*rows))
        names = self.class_names or [f"class_{k}" for k in range(self.num_classes or 1)]
        raw = detection_metrics(pb, pl, ps, gb, gl, names)
        if self.compute_froc:
            raw.update(froc_metrics(pb, pl, ps, gb, gl, iou_threshold=self.froc_iou))
        values: dict[str, float] = {}
        for key, value in raw.items():
            head, _, tail = key.partition("/")
            name = f"{head}_{metric_key(tail)}" if tail and head in ("ap50", "ap") else key.replace("/", "_")
            if head == "froc":
                name = f"froc_{tail.replace('.', '_')}"
            values[f"{stage}/{name}"] = value
        return values

    def _gather_outputs(self, stage: str) -> None:
        """Under DDP, give every rank the detections of all ranks (AP and FROC are not means of parts)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self._outputs.get(stage, []))
        self._outputs[stage] = [row for part in parts for row in part]

    def _log_epoch_metrics(self, stage: str) -> None:
        self._gather_outputs(stage)
        values = self.epoch_metrics(stage)
        self._outputs.pop(stage, None)
        if values:
            # per-class values are NaN for classes without ground truth in this split; the means skip them
            self.log_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()})

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Per image: boxes (voxels of the preprocessed image), labels, scores, boxes_world (class doc)."""
        from medfocal.data.boxes.geometry import image_boxes_to_world

        image = batch["image"] if isinstance(batch, dict) else batch
        detections = self(image)
        out = []
        for i, det in enumerate(detections):
            boxes = det["boxes"].detach().float().cpu()
            affine = batch.get("affine", [None] * len(detections))[i] if isinstance(batch, dict) else None
            item: dict[str, Any] = {
                "boxes": boxes,
                "labels": det["labels"].detach().cpu().long(),
                "scores": det[self.detector.pred_score_key].detach().float().cpu(),
                "affine": affine,
                "id": batch.get("id", [str(i)] * len(detections))[i] if isinstance(batch, dict) else str(i),
                "spatial_size": batch.get("spatial_size", [None] * len(detections))[i]
                if isinstance(batch, dict)
                else None,
            }
            if affine is not None:
                item["boxes_world"] = torch.as_tensor(
                    image_boxes_to_world(boxes, affine), dtype=torch.float64
                )
            out.append(item)
        return out

    # ----------------------------------------------------------------- model card
    def card_roi_size(self) -> Sequence[int] | None:
        """The sliding window of validation (None: whole images), the default of ``medfocal infer``."""
        return self.val_roi_size

    def task_card_options(self) -> dict[str, Any]:
        """``ModelCard.task_options`` of a detector (what ``DetectionHead`` needs beyond the common fields).

        - ``detector``: the keyword arguments of :func:`build_detector` (anchors, box selector, window);
        - ``boxes``: the datamodule's box preprocessing (``BoxPreprocessing.to_dict()``: 2D ``zoom``, box
          mode, world/LPS coordinates) when a datamodule is attached;
        - ``count_threshold``: the score from which a detection counts as an object (report counts);
        - ``class_weights``: the class-balanced weights of the classification loss (``class_balanced``),
          restored on load so that ``validate``/``test`` without the training data compute the same loss.
        """
        options: dict[str, Any] = {
            "detector": dict(self.inference_settings),
            "count_threshold": self.count_threshold,
        }
        dm = self._datamodule()
        boxes = getattr(dm, "box_preprocessing", None) if dm is not None else None
        if boxes is not None:
            options["boxes"] = boxes.to_dict()
        weight = getattr(self.loss, "weight", None)
        if self.class_balanced and isinstance(weight, Tensor):
            options["class_weights"] = weight.detach().float().cpu().tolist()
        return options

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The base restores names and temperature; the class-balanced weights come back from the card."""
        super().on_load_checkpoint(checkpoint)
        card = checkpoint.get(CARD_KEY) or {}
        weights = (card.get("task_options") or {}).get("class_weights")
        if weights is not None and hasattr(self.loss, "weight"):
            self.loss.weight = torch.as_tensor(weights, dtype=torch.float32)
