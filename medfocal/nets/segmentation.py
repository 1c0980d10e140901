"""MONAI segmentation networks with small CPU-friendly defaults and a recorded spec.

Each class subclasses the MONAI network, so ``state_dict`` keys are MONAI's and the constructor is typed
(LightningCLI reads it as the config schema: ``class_path: medfocal.nets.UNet``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.networks import nets as monai_nets

from medfocal.nets.factory import record_init_args, register_model

__all__ = ["BasicUNet", "DynUNet", "UNet"]


@register_model("unet")
class UNet(monai_nets.UNet):
    """MONAI residual ``UNet`` (2D/3D), logits ``(B, out_channels, *spatial)``.

    Spatial sizes must be divisible by ``prod(strides)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (modalities).
        out_channels: number of classes.
        channels: feature channels per level, e.g. ``(16, 32, 64, 128)``.
        strides: downsampling per level transition, ``len(channels) - 1`` values.
        kernel_size, up_kernel_size, num_res_units, act, norm, dropout, bias: as in MONAI ``UNet``.

    Example::

        >>> net = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2))

    Kerfoot et al., Left-Ventricle Quantification Using Residual U-Net, STACOM 2018.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int | Sequence[int]] | None = None,
        kernel_size: int = 3,
        up_kernel_size: int = 3,
        num_res_units: int = 2,
        act: str | Sequence = "prelu",
        norm: str | Sequence = "instance",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        if strides is None:
            strides = (2,) * (len(channels) - 1)
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            strides=strides,
            kernel_size=kernel_size,
            up_kernel_size=up_kernel_size,
            num_res_units=num_res_units,
            act=_layer_arg(act),
            norm=_layer_arg(norm),
            dropout=dropout,
            bias=bias,
        )
        record_init_args(self, UNet, locals())
        # per axis: a stride is one int for every axis or one int per axis (anisotropic levels)
        per_axis = [np.broadcast_to(np.atleast_1d(s), (spatial_dims,)) for s in strides]
        self._divisor = tuple(int(d) for d in np.prod(per_axis, axis=0)) if per_axis else (1,) * spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(int(n) % d for n, d in zip(x.shape[2:], self._divisor)):
            div = self._divisor[0] if len(set(self._divisor)) == 1 else self._divisor
            raise ValueError(
                f"UNet: spatial size {tuple(x.shape[2:])} is not divisible by {div} (the product "
                f"of strides {self.strides}); set the patch (roi_size) to multiples of {div} or "
                "use fewer strides"
            )
        return super().forward(x)


@register_model("basic_unet")
class BasicUNet(monai_nets.BasicUNet):
    """MONAI ``BasicUNet`` (2D/3D, four poolings, spatial sizes divisible by 16).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: number of classes.
        features: six channel counts (five encoder levels + the last decoder level).
        act, norm, bias, dropout, upsample: as in MONAI ``BasicUNet``.

    Example::

        >>> net = BasicUNet(spatial_dims=3, in_channels=2, out_channels=2, features=(4, 4, 8, 16, 32, 4))
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (16, 16, 32, 64, 128, 16),
        act: str | Sequence = ("leakyrelu", {"negative_slope": 0.1, "inplace": True}),
        norm: str | Sequence = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            act=_layer_arg(act),
            norm=_layer_arg(norm),
            bias=bias,
            dropout=dropout,
            upsample=upsample,
        )
        record_init_args(self, BasicUNet, locals())


@register_model("dynunet")
class DynUNet(monai_nets.DynUNet):
    """MONAI ``DynUNet`` (nnU-Net style) with the level layout derived from ``num_levels``.

    Without explicit ``kernel_size``/``strides``, the network has ``num_levels`` levels of 3x3(x3) kernels,
    stride 1 at the top and 2 below (spatial sizes divisible by ``2 ** (num_levels - 1)``), and
    ``filters[i] = base_filters * 2 ** i`` capped at ``max_filters``.

    With ``deep_supervision=True``, in training mode the forward returns a stacked tensor
    ``(B, 1 + deep_supr_num, C, *spatial)`` (full resolution first, lower-level heads upsampled to it); wrap
    the loss in :class:`medfocal.nets.DeepSupervisionLoss`. In eval mode it returns ``(B, C, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: number of classes.
        num_levels: number of resolution levels (used when ``strides`` is None).
        base_filters: channels of the top level (used when ``filters`` is None).
        max_filters: cap on channels per level (used when ``filters`` is None).
        kernel_size, strides, upsample_kernel_size, filters: explicit MONAI layout (override the above).
        dropout, norm_name, act_name, res_block: as in MONAI ``DynUNet``.
        deep_supervision: return the deep supervision heads in training mode.
        deep_supr_num: number of extra supervised levels (``< num_levels - 1``).

    Example::

        >>> net = DynUNet(spatial_dims=3, in_channels=1, out_channels=2, num_levels=3, base_filters=4)

    Isensee et al., nnU-Net, Nature Methods 2021.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        num_levels: int = 4,
        base_filters: int = 16,
        max_filters: int = 320,
        kernel_size: Sequence[int | Sequence[int]] | None = None,
        strides: Sequence[int | Sequence[int]] | None = None,
        upsample_kernel_size: Sequence[int | Sequence[int]] | None = None,
        filters: Sequence[int] | None = None,
        dropout: float | None = None,
        norm_name: str | Sequence = ("instance", {"affine": True}),
        act_name: str | Sequence = ("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision: bool = False,
        deep_supr_num: int = 1,
        res_block: bool = False,
    ) -> None:
        if num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {num_levels}")
        levels = len(strides) if strides is not None else num_levels
        _strides = list(strides) if strides is not None else [1] + [2] * (levels - 1)
        _kernels = list(kernel_size) if kernel_size is not None else [3] * levels
        _up = list(upsample_kernel_size) if upsample_kernel_size is not None else _strides[1:]
        _filters = (
            list(filters)
            if filters is not None
            else [min(base_filters * 2**i, max_filters) for i in range(levels)]
        )
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=_kernels,
            strides=_strides,
            upsample_kernel_size=_up,
            filters=_filters,
            dropout=dropout,
            norm_name=_layer_arg(norm_name),
            act_name=_layer_arg(act_name),
            deep_supervision=deep_supervision,
            deep_supr_num=deep_supr_num,
            res_block=res_block,
        )
        record_init_args(self, DynUNet, locals())


def _layer_arg(arg: str | Sequence) -> str | tuple:
    """MONAI layer specifiers are a name or a ``(name, kwargs)`` pair; YAML/JSON gives a list."""
    if isinstance(arg, str):
        return arg
    return tuple(arg)
