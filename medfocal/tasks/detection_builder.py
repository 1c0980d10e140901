"""MONAI's RetinaNet detector around a network, without torchvision and without Lightning.

Shared by training (:class:`medfocal.tasks.DetectionModule`) and inference
(``medfocal.inference.heads.detection.DetectionHead``), which rebuilds the detector from the model card
alone: ``build_detector(network, **card.task_options["detector"])``. Light on purpose (MONAI only), like
:mod:`medfocal.tasks.windows` for segmentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
from monai.apps.detection.utils.detector_utils import check_training_targets, preprocess_images
from monai.apps.detection.utils.predict_utils import ensure_dict_value_to_list_, predict_with_inferer
from torch import Tensor, nn

__all__ = ["MonaiRetinaNetDetector", "build_detector"]


class MonaiRetinaNetDetector(RetinaNetDetector):
    """MONAI's ``RetinaNetDetector`` with anchor matching that needs no torchvision (ATSS only).

    MONAI's ``compute_anchor_matched_idxs`` first tests ``isinstance(matcher, torchvision Matcher)``, which
    raises when torchvision is missing; this override goes straight to the ATSS matcher.
    """

    def compute_anchor_matched_idxs(
        self,
        anchors: list[Tensor],
        targets: list[dict[str, Tensor]],
        num_anchor_locs_per_level: Sequence[int],
    ) -> list[Tensor]:
        if not isinstance(self.proposal_matcher, ATSSMatcher):
            raise ValueError(
                f"only the ATSS matcher is supported here, got {type(self.proposal_matcher).__name__}"
            )
        matched = []
        for anchors_i, targets_i in zip(anchors, targets):
            boxes = targets_i[self.target_box_key]
            if boxes.numel() == 0:
                matched.append(
                    torch.full((anchors_i.size(0),), -1, dtype=torch.int64, device=anchors_i.device)
                )
                continue
            _, idxs = self.proposal_matcher(
                boxes.to(anchors_i.device), anchors_i, num_anchor_locs_per_level, self.num_anchors_per_loc
            )
            matched.append(idxs)
        return matched

    def losses_and_detections(
        self,
        images: Tensor,
        targets: list[dict[str, Tensor]],
        use_inferer: bool = False,
    ) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        """Losses and detections of one network pass (validation): MONAI's ``forward`` in both modes at once.

        ``forward`` returns the losses (training flag) or the detections (evaluation), each after its own
        network pass; validation wants both, so this runs MONAI's steps once: pad the images, run the
        network (or the sliding-window inferer), make the anchors, then :meth:`compute_loss` and
        :meth:`postprocess_detections` on the same head outputs. The values equal
        ``forward(images, targets)`` in training mode and ``forward(images)`` in evaluation mode with the
        same network state and random state (the hard-negative sampler draws from torch's generator).
        """
        targets = check_training_targets(
            images, targets, self.spatial_dims, self.target_label_key, self.target_box_key
        )
        self._check_detector_training_components()
        padded, image_sizes = preprocess_images(images, self.spatial_dims, self.size_divisible)
        if use_inferer:
            if self.inferer is None:
                raise ValueError("use_inferer=True needs set_sliding_window_inferer(...) first")
            head_outputs = predict_with_inferer(
                padded, self.network, keys=[self.cls_key, self.box_reg_key], inferer=self.inferer
            )
        else:
            head_outputs = self.network(padded)
            ensure_dict_value_to_list_(head_outputs)
        self.generate_anchors(padded, head_outputs)
        num_anchor_locs_per_level = [x.shape[2:].numel() for x in head_outputs[self.cls_key]]
        reshaped = {key: self._reshape_maps(head_outputs[key]) for key in (self.cls_key, self.box_reg_key)}
        losses = self.compute_loss(reshaped, targets, self.anchors, num_anchor_locs_per_level)
        detections = self.postprocess_detections(
            reshaped, self.anchors, image_sizes, num_anchor_locs_per_level
        )
        return losses, detections


def build_detector(
    network: nn.Module,
    anchor_shapes: Sequence[Sequence[float]],
    feature_map_scales: Sequence[float],
    score_thresh: float = 0.02,
    topk_candidates_per_level: int = 1000,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int = 1,
    sw_overlap: float = 0.25,
) -> MonaiRetinaNetDetector:
    """MONAI's RetinaNet detector around ``network``, set up for inference (anchors, box selector, window).

    ``ModelCard.task_options["detector"]`` holds these keyword arguments, so inference rebuilds the
    detector from the checkpoint alone: ``build_detector(build_model(card.model), **card.task_options[
    "detector"])``,
    then ``detector.eval()`` and ``detector(images, use_inferer=roi_size is not None)`` gives per image
    ``{"boxes", "labels", "labels_scores"}`` in voxels of ``images``.
    """
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=list(feature_map_scales), base_anchor_shapes=[list(s) for s in anchor_shapes]
    )
    detector = MonaiRetinaNetDetector(network=network, anchor_generator=anchors, debug=False)
    detector.set_box_selector_parameters(
        score_thresh=score_thresh,
        topk_candidates_per_level=topk_candidates_per_level,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    if roi_size is not None:
        detector.set_sliding_window_inferer(
            roi_size=list(roi_size), sw_batch_size=sw_batch_size, overlap=sw_overlap, mode="constant"
        )
    return detector
