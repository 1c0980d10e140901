"""Densely connected U-Net: DenseNet blocks in the encoder, upsampling + skip connections in the decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UnetBasicBlock, UpSample
from monai.networks.nets.densenet import _DenseBlock, _Transition
from torch import nn

from medfocal.nets.factory import record_init_args, register_model
from medfocal.nets.segmentation import _layer_arg

__all__ = ["DenseUNet"]


@register_model("dense_unet")
class DenseUNet(nn.Module):
    """U-Net whose encoder levels are DenseNet dense blocks (2D/3D), for small lesions such as stroke.

    Encoder: a 3x3(x3) stem to ``init_features`` channels, then per level ``i`` a MONAI DenseNet
    ``_DenseBlock`` of ``block_config[i]`` layers (each adds ``growth_rate`` channels), whose output is the
    skip connection, followed (except at the bottom) by a ``_Transition`` (1x1 conv halving the channels,
    2x average pooling). Decoder: per level, a MONAI ``UpSample`` (transposed conv) to the skip's channels,
    concatenation with the skip and a ``UnetBasicBlock`` (two conv-norm-act); a 1x1 conv gives the logits.

    Shapes: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``; every spatial size must be
    divisible by ``2 ** (len(block_config) - 1)`` (8 with the defaults).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (e.g. MRI modalities: DWI, ADC, FLAIR).
        out_channels: number of classes.
        init_features: channels after the stem.
        growth_rate: channels added by each dense layer (``k`` in DenseNet).
        block_config: dense layers per level; its length is the number of levels.
        bn_size: bottleneck width factor of the dense layers (``bn_size * growth_rate``).
        dropout_prob: dropout after each dense layer.
        act: activation, a name or ``(name, kwargs)``.
        norm: normalisation, a name or ``(name, kwargs)``; instance norm suits small 3D batches.
        upsample: MONAI ``UpSample`` mode: ``"deconv"``, ``"nontrainable"`` or ``"pixelshuffle"``.
        stem_stride: 1 keeps the dense blocks' first level at the input resolution; 2 makes the stem
            a strided convolution and adds one upsampling before the logits, so no dense block or decoder
            block runs at full resolution (about 5x less compute on 3D patches, as a MONAI ``UNet``,
            whose first convolution is strided too). Spatial sizes must then be divisible by
            ``2 ** levels``.

    Raises:
        ValueError: at construction for an empty ``block_config``; in ``forward`` for spatial sizes not
            divisible by ``2 ** (levels - 1)``.

    Example::

        >>> net = DenseUNet(spatial_dims=3, in_channels=2, out_channels=2)
        >>> net(torch.zeros(1, 2, 16, 16, 16)).shape
        torch.Size([1, 2, 16, 16, 16])

    Huang et al., Densely Connected Convolutional Networks, CVPR 2017; Ronneberger et al., U-Net, MICCAI
    2015; dense U-Nets for ischemic stroke lesion segmentation, e.g. Liu et al. (ISLES).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        init_features: int = 16,
        growth_rate: int = 8,
        block_config: Sequence[int] = (2, 3, 4, 4),
        bn_size: int = 2,
        dropout_prob: float = 0.0,
        act: str | Sequence = ("relu", {"inplace": True}),
        norm: str | Sequence = ("instance", {"affine": True}),
        upsample: str = "deconv",
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if len(block_config) < 1:
            raise ValueError("block_config must have at least one level, got ()")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        act_, norm_ = _layer_arg(act), _layer_arg(norm)
        self.levels = len(block_config)
        self.stem_stride = stem_stride
        self.stem = Convolution(
            spatial_dims, in_channels, init_features, strides=stem_stride, kernel_size=3, act=act_, norm=norm_
        )

        self.encoder = nn.ModuleList()
        self.transitions = nn.ModuleList()
        skip_channels: list[int] = []
        channels = init_features
        for i, layers in enumerate(block_config):
            self.encoder.append(
                _DenseBlock(
                    spatial_dims=spatial_dims,
                    layers=layers,
                    in_channels=channels,
                    bn_size=bn_size,
                    growth_rate=growth_rate,
                    dropout_prob=dropout_prob,
                    act=act_,
                    norm=norm_,
                )
            )
            channels += layers * growth_rate
            skip_channels.append(channels)
            if i < self.levels - 1:
                self.transitions.append(
                    _Transition(
                        spatial_dims, in_channels=channels, out_channels=channels // 2, act=act_, norm=norm_
                    )
                )
                channels //= 2

        self.upsamples = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for skip in reversed(skip_channels[:-1]):
            self.upsamples.append(
                UpSample(spatial_dims, in_channels=channels, out_channels=skip, scale_factor=2, mode=upsample)
            )
            self.decoder.append(
                UnetBasicBlock(
                    spatial_dims, 2 * skip, skip, kernel_size=3, stride=1, norm_name=norm_, act_name=act_
                )
            )
            channels = skip
        self.head_upsample: nn.Module = nn.Identity()
        if stem_stride == 2:
            # back to the input resolution before the logits (the stem halved it)
            self.head_upsample = UpSample(
                spatial_dims, in_channels=channels, out_channels=init_features, scale_factor=2, mode=upsample
            )
            channels = init_features
        self.out = Convolution(spatial_dims, channels, out_channels, kernel_size=1, conv_only=True)
        record_init_args(self, DenseUNet, locals())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (self.levels - 1) * self.stem_stride
        if any(s % factor for s in x.shape[2:]):
            raise ValueError(
                f"DenseUNet with {self.levels} levels needs spatial sizes divisible by {factor}, "
                f"got {tuple(x.shape[2:])}"
            )
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < self.levels - 1:
                skips.append(x)
                x = self.transitions[i](x)
        for up, fuse, skip in zip(self.upsamples, self.decoder, reversed(skips)):
            x = fuse(torch.cat([up(x), skip], dim=1))
        return self.out(self.head_upsample(x))
