"""Focal classification head: a linear layer whose bias starts at the class prior (RetinaNet)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = ["FocalHead", "prior_bias", "replace_classifier", "set_prior"]

_ACTIVATIONS = ("softmax", "sigmoid")


def _check_activation(activation: str) -> str:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    return activation


def prior_bias(
    num_classes: int,
    prior: float | Sequence[float] = 0.01,
    activation: Literal["softmax", "sigmoid"] = "softmax",
) -> torch.Tensor:
    """Bias vector that makes the initial predicted probabilities equal the class priors.

    - ``"sigmoid"`` (binary / multi-label): ``b_k = -log((1 - pi_k) / pi_k)``, so ``sigmoid(b_k) = pi_k``
      (RetinaNet). A scalar ``prior`` applies to every class.
    - ``"softmax"`` (mutually exclusive classes): ``b_k = log(pi_k)``, so ``softmax(b)_k = pi_k`` when the
      priors sum to 1 (they are normalised to). A scalar ``prior`` ``pi`` is the prior of each of the rare
      classes ``1..C-1``; class 0 (background / majority) gets ``1 - (C - 1) * pi``.

    Args:
        num_classes: number of outputs ``C``.
        prior: scalar in (0, 1) or one value in (0, 1) per class (e.g. class frequencies of the training
            set).
        activation: ``"softmax"`` or ``"sigmoid"``.

    Returns:
        float32 tensor of shape ``(C,)``.

    Raises:
        ValueError: for priors outside (0, 1), a per-class prior of the wrong length, softmax with
            ``C < 2`` or a scalar prior with ``(C - 1) * pi >= 1``.

    Example::

        >>> torch.sigmoid(prior_bias(3, 0.01, "sigmoid"))
        tensor([0.0100, 0.0100, 0.0100])
        >>> torch.softmax(prior_bias(3, [0.7, 0.2, 0.1], "softmax"), 0)
        tensor([0.7000, 0.2000, 0.1000])

    Lin et al., Focal Loss for Dense Object Detection, ICCV 2017, section 4.1 ("Initialization").
    """
    _check_activation(activation)
    if activation == "softmax" and num_classes < 2:
        raise ValueError(f"softmax needs num_classes >= 2, got {num_classes}; use activation='sigmoid'")
    if isinstance(prior, (int, float)):
        pi = float(prior)
        if not 0.0 < pi < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {prior}")
        if activation == "sigmoid":
            priors = [pi] * num_classes
        else:
            rest = 1.0 - (num_classes - 1) * pi
            if rest <= 0.0:
                raise ValueError(
                    f"scalar softmax prior {pi} for {num_classes - 1} rare classes leaves {rest:.3g} <= 0 "
                    "for class 0; pass a per-class prior or a smaller value"
                )
            priors = [rest] + [pi] * (num_classes - 1)
    else:
        priors = [float(p) for p in prior]
        if len(priors) != num_classes:
            raise ValueError(f"per-class prior has {len(priors)} values, expected num_classes={num_classes}")
        if not all(0.0 < p < 1.0 for p in priors):
            raise ValueError(f"every prior must be in (0, 1), got {priors}")
        if activation == "softmax":
            total = sum(priors)
            priors = [p / total for p in priors]
    if activation == "sigmoid":
        values = [-math.log((1.0 - p) / p) for p in priors]
    else:
        values = [math.log(p) for p in priors]
    return torch.tensor(values, dtype=torch.float32)


class FocalHead(nn.Linear):
    """Linear classifier whose bias is initialised to the class prior, so training starts stable.

    With the weights at zero (``init_std=0``, the default) every input starts at exactly the prior
    probabilities (see :func:`prior_bias`); ``init_std=0.01`` is RetinaNet's Gaussian fill, which starts
    near them. Being an ``nn.Linear`` subclass, it swaps into MONAI networks without changing their
    ``state_dict`` keys.

    Shapes: ``(B, in_features) -> (B, num_classes)``; a feature map ``(B, in_features, *spatial)`` is
    classified per position (a 1x1 convolution) into ``(B, num_classes, *spatial)``.

    Args:
        in_features: number of input features (channels).
        num_classes: number of outputs ``C``.
        prior: scalar or per-class prior, see :func:`prior_bias`.
        activation: ``"softmax"`` or ``"sigmoid"``: the activation the task applies to the logits.
        init_std: standard deviation of the Gaussian weight init (0 gives zero weights).

    Example::

        >>> head = FocalHead(16, 1, prior=0.01, activation="sigmoid")
        >>> round(torch.sigmoid(head(torch.randn(4, 16))).mean().item(), 6)
        0.01

    Lin et al., Focal Loss for Dense Object Detection, ICCV 2017.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        prior: float | Sequence[float] = 0.01,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        init_std: float = 0.0,
    ) -> None:
        super().__init__(in_features, num_classes)
        self.activation = _check_activation(activation)
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        self.init_std = float(init_std)
        self.prior = prior if isinstance(prior, (int, float)) else [float(p) for p in prior]
        self.reset_prior()

    def reset_prior(self, prior: float | Sequence[float] | None = None) -> None:
        """Re-initialise weights and bias, optionally to a new ``prior`` (e.g. class frequencies)."""
        if prior is not None:
            self.prior = prior if isinstance(prior, (int, float)) else [float(p) for p in prior]
        with torch.no_grad():
            if self.init_std > 0:
                nn.init.normal_(self.weight, std=self.init_std)
            else:
                nn.init.zeros_(self.weight)
            self.bias.copy_(prior_bias(self.out_features, self.prior, self.activation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim <= 2:
            return super().forward(x)
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}, prior={self.prior}"


def replace_classifier(model: nn.Module, head: nn.Module, attribute: str | None = None) -> nn.Module:
    """Replace the final ``nn.Linear`` of ``model`` with ``head`` (in place) and return ``model``.

    MONAI's classifiers keep it at ``class_layers.out`` (``DenseNet``) and ``fc`` (``ResNet``); with
    ``attribute=None`` those are tried, then the last ``nn.Linear`` registered in the model.

    Args:
        model: the network.
        head: the new classifier, e.g. a :class:`FocalHead` with the same ``in_features``.
        attribute: dotted attribute path of the layer to replace.

    Raises:
        ValueError: when no such layer exists or its ``in_features`` differs from the head's.
    """
    if attribute is None:
        names = dict(model.named_modules())
        for candidate in ("class_layers.out", "fc"):
            if isinstance(names.get(candidate), nn.Linear):
                attribute = candidate
                break
        else:
            linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise ValueError(f"{type(model).__name__} has no nn.Linear layer to replace")
            attribute = linears[-1]
    parent_path, _, leaf = attribute.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, leaf, None)
    if not isinstance(old, nn.Module):
        raise ValueError(f"{type(model).__name__} has no layer {attribute!r}")
    old_in = getattr(old, "in_features", None)
    new_in = getattr(head, "in_features", None)
    if old_in is not None and new_in is not None and old_in != new_in:
        raise ValueError(f"head in_features={new_in} differs from {attribute!r} in_features={old_in}")
    setattr(parent, leaf, head)
    return model


def set_prior(model: nn.Module, prior: float | Sequence[float]) -> int:
    """Re-initialise every :class:`FocalHead` in ``model`` to ``prior`` (e.g. training-set class frequencies).

    Call it before training, e.g. with ``counts / counts.sum()`` from a datamodule's ``class_counts()``;
    the model's recorded spec is not changed (the weights saved in a checkpoint carry the new bias).

    Returns:
        the number of heads re-initialised (0 when the model has no focal head).

    Example::

        >>> net = FocalHead(8, 3)
        >>> set_prior(net, [0.9, 0.08, 0.02])
        1
    """
    if not isinstance(prior, (int, float)):
        prior = [float(p) for p in prior]
    heads = [m for m in model.modules() if isinstance(m, FocalHead)]
    for head in heads:
        head.reset_prior(prior)
    return len(heads)
