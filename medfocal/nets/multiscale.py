"""Multi-scale ResNet classifier: one image seen at several resolutions, features fused before the head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck, get_inplanes
from torch import nn

from medfocal.nets.factory import record_init_args, register_model
from medfocal.nets.heads import FocalHead, _check_activation

__all__ = ["MultiScaleResNet"]

_DEPTHS: dict[int, tuple[type[ResNetBlock | ResNetBottleneck], list[int]]] = {
    10: (ResNetBlock, [1, 1, 1, 1]),
    18: (ResNetBlock, [2, 2, 2, 2]),
    34: (ResNetBlock, [3, 4, 6, 3]),
    50: (ResNetBottleneck, [3, 4, 6, 3]),
}


def _trunk(
    depth: int, spatial_dims: int, in_channels: int, widen_factor: float, conv1_t_stride: int
) -> ResNet:
    block, layers = _DEPTHS[depth]
    return ResNet(
        block=block,
        layers=layers,
        block_inplanes=get_inplanes(),
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_stride=conv1_t_stride,
        widen_factor=widen_factor,
        feed_forward=False,
    )


@register_model("multiscale_resnet")
class MultiScaleResNet(nn.Module):
    """ResNet features from several input resolutions, concatenated and fused before a focal head (2D/3D).

    For each scale ``s`` the input is resized by ``s`` (bilinear/trilinear, antialiased when shrinking in
    2D), passed through a MONAI ResNet trunk (shared by all scales, or one per scale) and global-average
    pooled; the ``len(scales)`` feature vectors are concatenated, fused by ``Linear -> ReLU -> Dropout``
    (skipped when ``fusion_features=0``) and classified by a :class:`FocalHead` (or a plain linear head).

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels)``. The smallest scaled input should be at
    least 16 per axis (trunk with ``conv1_t_stride=1``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (3 for RGB histology).
        out_channels: number of classes ``C``.
        depth: ResNet depth of the trunk: 10, 18, 34 or 50.
        scales: resize factors, e.g. ``(1.0, 0.5)`` (full resolution and a half-resolution context view).
        shared_trunk: one trunk for every scale (scale-invariant features, fewer parameters) or one each.
        widen_factor: multiplies the trunk's channels (64, 128, 256, 512); 0.125 gives a tiny trunk.
        conv1_t_stride: stride of the trunk's first convolution.
        fusion_features: width of the fusion layer (0: no fusion layer).
        dropout: dropout after the fusion layer.
        head: ``"focal"`` (bias at the prior) or ``"linear"`` (bias 0).
        prior: scalar or per-class prior for the focal head (see :func:`prior_bias`).
        activation: ``"softmax"`` or ``"sigmoid"``.
        init_std: Gaussian std of the head's weights (0: zeros, exact prior at start).

    Raises:
        ValueError: for an unsupported depth, empty or non-positive scales, an unknown head.

    Example::

        >>> net = MultiScaleResNet(spatial_dims=2, in_channels=3, out_channels=2, widen_factor=0.125)
        >>> net(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 2])

    He et al., ResNet, CVPR 2016; multi-scale CNN features for breast histology (BreakHis), e.g.
    Bardou et al. 2018 and Kausar et al. 2019.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 2,
        depth: int = 18,
        scales: Sequence[float] = (1.0, 0.5),
        shared_trunk: bool = True,
        widen_factor: float = 1.0,
        conv1_t_stride: int = 1,
        fusion_features: int = 256,
        dropout: float = 0.0,
        head: Literal["focal", "linear"] = "focal",
        prior: float | Sequence[float] = 0.01,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        init_std: float = 0.0,
    ) -> None:
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if len(scales) == 0 or any(s <= 0 for s in scales):
            raise ValueError(f"scales must be non-empty and positive, got {tuple(scales)}")
        if head not in ("focal", "linear"):
            raise ValueError(f"head must be 'focal' or 'linear', got {head!r}")
        _check_activation(activation)
        self.spatial_dims = spatial_dims
        self.scales = tuple(float(s) for s in scales)
        n_trunks = 1 if shared_trunk else len(self.scales)
        self.trunks = nn.ModuleList(
            _trunk(depth, spatial_dims, in_channels, widen_factor, conv1_t_stride) for _ in range(n_trunks)
        )
        block = _DEPTHS[depth][0]
        features = int(get_inplanes()[3] * widen_factor) * block.expansion * len(self.scales)
        if fusion_features > 0:
            self.fusion: nn.Module = nn.Sequential(
                nn.Linear(features, fusion_features), nn.ReLU(inplace=True), nn.Dropout(dropout)
            )
            features = fusion_features
        else:
            self.fusion = nn.Identity()
        if head == "focal":
            self.head: nn.Linear = FocalHead(
                features, out_channels, prior=prior, activation=activation, init_std=init_std
            )
        else:
            self.head = nn.Linear(features, out_channels)
        record_init_args(self, MultiScaleResNet, locals())

    def _resize(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        if scale == 1.0:
            return x
        size = [max(1, round(s * scale)) for s in x.shape[2:]]
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        antialias = self.spatial_dims == 2 and scale < 1.0
        return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [
            self.trunks[i % len(self.trunks)](self._resize(x, scale)) for i, scale in enumerate(self.scales)
        ]
        return self.head(self.fusion(torch.cat(feats, dim=1)))
