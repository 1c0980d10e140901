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
