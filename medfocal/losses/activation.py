"""The activation names every loss accepts, as a ``StrEnum`` with MONAI-style "did you mean" lookup."""

from __future__ import annotations

from monai.utils import StrEnum, look_up_option

__all__ = ["Activation", "look_up_activation"]


class Activation(StrEnum):
    """How logits become probabilities: ``softmax`` (mutually exclusive classes, C >= 2) or ``sigmoid``
    (binary / multi-label, one independent probability per channel).

    Members compare equal to their strings (``Activation.SOFTMAX == "softmax"``), so configs keep plain
    strings.
    """

    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"


def look_up_activation(value: str | Activation, name: str = "activation") -> Activation:
    """``value`` as an :class:`Activation`, or a ValueError naming the argument, with a "did you mean".

    Example:
        >>> look_up_activation("sigmoid") is Activation.SIGMOID
        True
        >>> look_up_activation("softmx")
        Traceback (most recent call last):
        ...
        ValueError: activation: expected one of ('softmax', 'sigmoid'), got 'softmx' (did you mean 'softmax'?)
    """
    try:
        return Activation(look_up_option(value, Activation, print_all_options=False))
    except ValueError as err:
        first = str(err).splitlines()[0]  # MONAI: "By 'softmx', did you mean 'softmax'?" when one is close
        hint = f" ({first.split(', ', 1)[1]})" if "did you mean" in first else ""
        choices = tuple(a.value for a in Activation)
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}{hint}") from None
