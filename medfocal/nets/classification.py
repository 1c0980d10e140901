"""MONAI DenseNet / ResNet classifiers (2D/3D) with an optional focal (prior-initialised) head.

Each class subclasses the MONAI network, so ``state_dict`` keys are MONAI's (the focal head is an
``nn.Linear`` subclass put where MONAI's last linear layer was: ``class_layers.out`` for DenseNet, ``fc``
for ResNet). Logits ``(B, out_channels)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from monai.networks import nets as monai_nets
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck, get_inplanes

from medfocal.nets.factory import record_init_args, register_model
from medfocal.nets.heads import FocalHead, _check_activation, replace_classifier

__all__ = ["DenseNet121", "DenseNet169", "DenseNet201", "ResNet18", "ResNet34", "ResNet50"]

_HEADS = ("focal", "linear")


def _install_head(
    model: monai_nets.DenseNet | monai_nets.ResNet,
    attribute: str,
    head: str,
    prior: float | Sequence[float],
    activation: str,
    init_std: float,
) -> None:
    if head not in _HEADS:
        raise ValueError(f"head must be one of {_HEADS}, got {head!r}")
    _check_activation(activation)
    if head == "linear":
        return
    old = model.get_submodule(attribute)
    replace_classifier(
        model,
        FocalHead(old.in_features, old.out_features, prior=prior, activation=activation, init_std=init_std),
        attribute,
    )


class _DenseNet(monai_nets.DenseNet):
    block_config: tuple[int, ...] = ()

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        init_features: int = 64,
        growth_rate: int = 32,
        bn_size: int = 4,
        dropout_prob: float = 0.0,
        head: Literal["focal", "linear"] = "focal",
        prior: float | Sequence[float] = 0.01,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        init_std: float = 0.0,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            init_features=init_features,
            growth_rate=growth_rate,
            block_config=self.block_config,
            bn_size=bn_size,
            dropout_prob=dropout_prob,
        )
        _install_head(self, "class_layers.out", head, prior, activation, init_std)


_DENSENET_DOC = """MONAI DenseNet-{depth} classifier (2D/3D) with a focal head by default.

    Spatial sizes must be at least 32 (five halvings). Randomly initialised: no weights are downloaded.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: number of classes ``C``.
        init_features, growth_rate, bn_size, dropout_prob: as in MONAI ``DenseNet`` (smaller values give
            a smaller network with the same depth).
        head: ``"focal"`` (:class:`FocalHead`, bias at the prior) or ``"linear"`` (MONAI's, bias 0).
        prior: scalar or per-class prior for the focal head (see :func:`prior_bias`).
        activation: ``"softmax"`` or ``"sigmoid"``, the task's activation (sets the prior's bias form).
        init_std: Gaussian std of the focal head's weights (0: zeros, exact prior at start).

    Example::

        >>> import torch
        >>> net = DenseNet{depth}(spatial_dims=2, in_channels=3, out_channels=4, prior=[0.7, 0.1, 0.1, 0.1],
        ...                  init_features=16, growth_rate=8)
        >>> net(torch.zeros(2, 3, 32, 32)).softmax(1)[0]
        tensor([0.7000, 0.1000, 0.1000, 0.1000], grad_fn=<SelectBackward0>)

    Huang et al., Densely Connected Convolutional Networks, CVPR 2017.
    """


@register_model("densenet121")
class DenseNet121(_DenseNet):
    __doc__ = _DENSENET_DOC.format(depth=121)
    block_config = (6, 12, 24, 16)

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        init_features: int = 64,
        growth_rate: int = 32,
        bn_size: int = 4,
        dropout_prob: float = 0.0,
        head: Literal["focal", "linear"] = "focal",
        prior: float | Sequence[float] = 0.01,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        init_std: float = 0.0,
    ) -> None:
        super().__init__(
            spatial_dims, in_channels, out_channels, init_features, growth_rate, bn_size, dropout_prob,
            head, prior, activation, init_std,
        )  # fmt: skip
        record_init_args(self, DenseNet121, locals())


@register_model("densenet169")
class DenseNet169(_DenseNet):
    __doc__ = _DENSENET_DOC.format(depth=169)
    block_config = (6, 12, 32, 32)

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        init_features: int = 64,
        growth_rate: int = 32,
        bn_size: int = 4,
        dropout_prob: float = 0.0,
        head: Literal["focal", "linear"] = "focal",
        prior: float | Sequence[float] = 0.01,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        init_std: float = 0.0,
    ) -> None:
        super().__init__(
            spatial_dims, in_channels, out_channels, init_features, growth_rate, bn_size, dropout_prob,
            head, prior, activation, init_std,
        )  # fmt: skip
        record_init_args(self, DenseNet169, locals())


@register_model("densenet201")
class DenseNet201(_DenseNet):
    __doc__ = _DENSENET_DOC.format(depth=201)
    block_config = (6, 12, 48, 32)

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        init_features: int = 64,
        growth_rate: int = 32,
        bn_size: int = 4,
        dropout_prob: float = 0.0,
        head: Literal["focal", "linear"] = "focal",
        prior: float | Sequence[float] = 0.01,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        init_std: float = 0.0,
    ) -> None:
        super().__init__(
            spatial_dims, in_channels, out_channels, init_features, growth_rate, bn_size, dropout_prob,
            head, prior, activation, init_std,
        )  # fmt: skip
        record_init_args(self, DenseNet201, locals())


class _ResNet(monai_nets.ResNet):
    block: type[ResNetBlock | ResNetBottleneck] = ResNetBlock
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        widen_factor: float = 1.0,
        conv1_t_size: int = 7,
        conv1_t_stride: int = 1,
        no_max_pool: bool = False,
        shortcut_type: str = "B",
        head: Literal["focal", "linear"] = "focal",
        prior: float | Sequence[float] = 0.01,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        init_std: float = 0.0,
    ) -> None:
        super().__init__(
            block=self.block,
            layers=list(self.layers),
            block_inplanes=get_inplanes(),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=conv1_t_size,
            conv1_t_stride=conv1_t_stride,
            no_max_pool=no_max_pool,
            shortcut_type=shortcut_type,
            widen_factor=widen_factor,
            num_classes=out_channels,
        )
        _install_head(self, "fc", head, prior, activation, init_std)


_RESNET_DOC = """MONAI ResNet-{depth} classifier (2D/3D) with a focal head by default.

    Spatial sizes must be at least 16 with ``conv1_t_stride=1`` (four halvings; in training, batch norm
    also needs a batch of 2 or more at that size). Randomly initialised.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (MONAI's ``n_input_channels``).
        out_channels: number of classes ``C`` (MONAI's ``num_classes``).
        widen_factor: multiplies the channel counts (64, 128, 256, 512); 0.125 gives a tiny network.
        conv1_t_size, conv1_t_stride, no_max_pool, shortcut_type: as in MONAI ``ResNet``.
        head: ``"focal"`` (:class:`FocalHead`, bias at the prior) or ``"linear"`` (MONAI's, bias 0).
        prior: scalar or per-class prior for the focal head (see :func:`prior_bias`).
        activation: ``"softmax"`` or ``"sigmoid"``, the task's activation (sets the prior's bias form).
        init_std: Gaussian std of the focal head's weights (0: zeros, exact prior at start).

    Example::

        >>> import torch
        >>> net = ResNet{depth}(spatial_dims=3, in_channels=1, out_channels=2, activation="sigmoid",
        ...                widen_factor=0.125)
        >>> net(torch.zeros(2, 1, 16, 16, 16)).sigmoid()
        tensor([[0.0100, 0.0100],
                [0.0100, 0.0100]], grad_fn=<SigmoidBackward0>)

    He et al., Deep Residual Learning for Image Recognition, CVPR 2016.
    """


@register_model("resnet18")
class ResNet18(_ResNet):
    __doc__ = _RESNET_DOC.format(depth=18)
    layers = (2, 2, 2, 2)

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        widen_factor: float = 1.0,
        conv1_t_size: int = 7,
        conv1_t_stride: int = 1,
        no_max_pool: bool = False,
        shortcut_type: str = "B",
        head: Literal["focal", "linear"] = "focal",
        prior: float | Sequence[float] = 0.01,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        init_std: float = 0.0,
    ) -> None:
        super().__init__(
            spatial_dims, in_channels, out_channels, widen_factor, conv1_t_size, conv1_t_stride,
            no_max_pool, shortcut_type, head, prior, activation, init_std,
        )  # fmt: skip
        record_init_args(self, ResNet18, locals())


@register_model("resnet34")
class ResNet34(_ResNet):
    __doc__ = _RESNET_DOC.format(depth=34)
    layers = (3, 4, 6, 3)

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        widen_factor: float = 1.0,
        conv1_t_size: int = 7,
        conv1_t_stride: int = 1,
        no_max_pool: bool = False,
        shortcut_type: str = "B",
        head: Literal["focal", "linear"] = "focal",
        prior: float | Sequence[float] = 0.01,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        init_std: float = 0.0,
    ) -> None:
        super().__init__(
            spatial_dims, in_channels, out_channels, widen_factor, conv1_t_size, conv1_t_stride,
            no_max_pool, shortcut_type, head, prior, activation, init_std,
        )  # fmt: skip
        record_init_args(self, ResNet34, locals())


@register_model("resnet50")
class ResNet50(_ResNet):
    __doc__ = _RESNET_DOC.format(depth=50)
    block = ResNetBottleneck
    layers = (3, 4, 6, 3)

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        widen_factor: float = 1.0,
        conv1_t_size: int = 7,
        conv1_t_stride: int = 1,
        no_max_pool: bool = False,
        shortcut_type: str = "B",
        head: Literal["focal", "linear"] = "focal",
        prior: float | Sequence[float] = 0.01,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        init_std: float = 0.0,
    ) -> None:
        super().__init__(
            spatial_dims, in_channels, out_channels, widen_factor, conv1_t_size, conv1_t_stride,
            no_max_pool, shortcut_type, head, prior, activation, init_std,
        )  # fmt: skip
        record_init_args(self, ResNet50, locals())
