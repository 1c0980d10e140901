"""RetinaNet for 2D and 3D images: MONAI ResNet + feature pyramid + RetinaNet heads, no torchvision.

MONAI's ``resnet_fpn_feature_extractor`` / ``BackboneWithFPN`` take their layer getter from torchvision;
:class:`ResNetFPN` does the same job with a few lines of its own (run the ResNet stem and layers, keep
the requested ones, feed them to MONAI's ``FeaturePyramidNetwork`` with a max-pooled extra level).

Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017; Baumgartner et al., "nnDetection", MICCAI
2021 (the 3D RetinaNet setting MONAI's LUNA16 tutorial follows).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from monai.networks.nets import resnet
from torch import Tensor, nn

from medfocal.nets.factory import record_init_args
from medfocal.nets.heads import prior_bias

__all__ = ["DetectionRetinaNet", "ResNetFPN", "detection_size_divisible"]

_BLOCKS = {"basic": resnet.ResNetBlock, "bottleneck": resnet.ResNetBottleneck}


def detection_size_divisible(
    conv1_t_stride: Sequence[int], returned_layers: Sequence[int]
) -> tuple[int, ...]:
    """Input size multiple the ResNet-FPN needs: ``2 * s * 2 ** max(returned_layers)`` per axis.

    ``s`` is the stride of the first convolution; the factor 2 of the max-pooling stem and 2 of the extra
    pooled pyramid level are included (as MONAI's RetinaNet example).
    """
    top = max(int(r) for r in returned_layers)
    return tuple(2 * int(s) * 2**top for s in conv1_t_stride)


class ResNetFPN(nn.Module):
    """Feature pyramid on a MONAI ResNet: ``len(returned_layers) + 1`` maps with ``out_channels`` each.

    Args:
        backbone: a ``monai.networks.nets.ResNet`` (its ``fc``/``avgpool`` are not used).
        returned_layers: ResNet stages (1-4) whose outputs enter the pyramid.
        in_channels_list: channels of those stages.
        out_channels: channels of every pyramid level.
        spatial_dims: 2 or 3.

    ``forward(x)`` returns an ``OrderedDict`` ``{"0": P_a, "1": ..., "pool": P_extra}`` from fine to coarse.
    """

    def __init__(
        self,
        backbone: resnet.ResNet,
        returned_layers: Sequence[int],
        in_channels_list: Sequence[int],
        out_channels: int,
        spatial_dims: int,
    ) -> None:
        super().__init__()
        layers = [int(r) for r in returned_layers]
        if not layers or sorted(layers) != layers or layers[0] < 1 or layers[-1] > 4:
            raise ValueError(
                f"returned_layers must be increasing values in 1..4, got {list(returned_layers)}"
            )
        self.stem = nn.Sequential(
            backbone.conv1,
            backbone.bn1,
            backbone.act,
            nn.Identity() if backbone.no_max_pool else backbone.maxpool,
        )
        # keep only the stages that are needed (the deeper ones would cost compute for nothing)
        self.body = nn.ModuleDict(
            {f"layer{i}": getattr(backbone, f"layer{i}") for i in range(1, layers[-1] + 1)}
        )
        self.returned = [f"layer{i}" for i in layers]
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=spatial_dims,
            in_channels_list=list(in_channels_list),
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool(spatial_dims),
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.stem(x)
        features: OrderedDict[str, Tensor] = OrderedDict()
        for name, stage in self.body.items():
            x = stage(x)
            if name in self.returned:
                features[str(len(features))] = x
        return self.fpn(features)


class DetectionRetinaNet(RetinaNet):
    """MONAI ``RetinaNet`` on a ResNet-FPN built without torchvision, with the focal prior in the head.

    Not in the name registry (its output is a dict of per-level maps, not one logits tensor, which the
    registry's shared tests expect); build it by ``class_path: medfocal.nets.DetectionRetinaNet``, which
    :func:`medfocal.nets.build_model` also rebuilds from the recorded spec.

    Output (``forward``): ``{"classification": [(B, A*C, *S_l)], "box_regression": [(B, A*2*dims, *S_l)]}``
    over ``num_levels = len(returned_layers) + 1`` pyramid levels (fine to coarse); MONAI's
    ``RetinaNetDetector`` turns them into boxes. The classification bias starts at the class prior
    ``b = -log((1 - pi) / pi)`` (sigmoid; RetinaNet section 4.1), one value per class repeated over anchors.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (3 for RGB, 1 for CT).
        num_classes: object classes (no background class).
        num_anchors: anchors per location (= number of base anchor shapes of the anchor generator).
        layers: blocks per ResNet stage, e.g. ``[2, 2, 2, 2]`` (ResNet-18), ``[3, 4, 6, 3]`` (ResNet-50).
        block: ``"basic"`` or ``"bottleneck"``.
        block_inplanes: stage widths before expansion (MONAI default ``[64, 128, 256, 512]``).
        conv1_t_size: kernel of the first convolution (per axis or one value).
        conv1_t_stride: stride of the first convolution (per axis or one value), e.g. ``[2, 2, 1]`` for CT.
        returned_layers: ResNet stages feeding the pyramid (1-4).
        fpn_channels: channels of the pyramid and of the heads (a multiple of 8: GroupNorm(8) in the heads).
        prior: initial foreground probability, one value or one per class.
        norm: ResNet normalisation (``"batch"``, ``"instance"``, ``("group", {"num_groups": 8})``...).

    Example::

        >>> net = DetectionRetinaNet(2, 3, num_classes=3, num_anchors=3, layers=[1, 1, 1, 1],
        ...                          block_inplanes=[8, 16, 32, 64], fpn_channels=16)
        >>> out = net(torch.zeros(1, 3, 64, 64))
        >>> [tuple(m.shape) for m in out["classification"]]
        [(1, 9, 16, 16), (1, 9, 8, 8), (1, 9, 4, 4), (1, 9, 2, 2)]
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 1,
        num_anchors: int = 3,
        layers: Sequence[int] = (2, 2, 2, 2),
        block: str = "basic",
        block_inplanes: Sequence[int] = (64, 128, 256, 512),
        conv1_t_size: int | Sequence[int] = 7,
        conv1_t_stride: int | Sequence[int] = 2,
        returned_layers: Sequence[int] = (1, 2, 3),
        fpn_channels: int = 256,
        prior: float | Sequence[float] = 0.01,
        norm: str | Sequence = "batch",
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {sorted(_BLOCKS)}, not {block!r}")
        if len(layers) != 4 or len(block_inplanes) != 4:
            raise ValueError(
                f"layers and block_inplanes need 4 values each, got {list(layers)}, {block_inplanes}"
            )
        if fpn_channels % 8:
            raise ValueError(
                f"fpn_channels must be a multiple of 8 (GroupNorm(8) in the heads), not {fpn_channels}"
            )
        stride = _per_axis(conv1_t_stride, spatial_dims, "conv1_t_stride")
        size = _per_axis(conv1_t_size, spatial_dims, "conv1_t_size")
        backbone = resnet.ResNet(
            block=_BLOCKS[block],
            layers=list(layers),
            block_inplanes=list(block_inplanes),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=size,
            conv1_t_stride=stride,
            feed_forward=False,
            norm=tuple(norm) if isinstance(norm, list) else norm,
        )
        expansion = _BLOCKS[block].expansion
        returned = [int(r) for r in returned_layers]
        extractor = ResNetFPN(
            backbone,
            returned_layers=returned,
            in_channels_list=[int(block_inplanes[r - 1]) * expansion for r in returned],
            out_channels=fpn_channels,
            spatial_dims=spatial_dims,
        )
        super().__init__(
            spatial_dims=spatial_dims,
            num_classes=num_classes,
            num_anchors=num_anchors,
            feature_extractor=extractor,
            size_divisible=detection_size_divisible(stride, returned),
        )
        self.num_levels = len(returned) + 1
        self.set_prior(prior)
        record_init_args(self, DetectionRetinaNet, locals())

    def set_prior(self, prior: float | Sequence[float]) -> None:
        """Set the classification bias to ``-log((1 - pi_c) / pi_c)`` for every anchor of class ``c``."""
        bias = prior_bias(self.num_classes, prior, "sigmoid")
        with torch.no_grad():
            # RetinaNetDetector reads channel a * C + c as anchor a, class c
            self.classification_head.cls_logits.bias.copy_(bias.repeat(self.num_anchors))


def _per_axis(value: int | Sequence[int], dims: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    values = tuple(int(v) for v in value)
    if len(values) != dims:
        raise ValueError(f"{name} needs {dims} values (one per axis), got {list(values)}")
    return values
