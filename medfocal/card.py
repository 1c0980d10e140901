"""The model card: everything a medfocal checkpoint tells inference, in one typed object.

A task module writes its card into ``checkpoint["medfocal"]`` (:meth:`ModelCard.to_dict`, JSON types
only, so checkpoints load with ``torch.load(weights_only=True)``); ``TemperatureScaling`` changes the
temperature through it (:func:`update_card_file`); ``medfocal infer`` reads nothing else
(:meth:`ModelCard.from_dict`). Network weights stay in ``checkpoint["state_dict"]`` under ``"model."``.

Format versions (:data:`FORMAT_VERSION` is the one this code writes):

- 1: the fields below up to ``temperature``; the temperature was also stored as
  ``state_dict["temperature"]``. Still read: ``loss_alpha``, ``training_data``, ``task_options`` and
  ``medfocal_version`` are then empty, and the task modules drop the duplicate temperature on load.
- 2: the temperature lives in the card only; adds ``loss_alpha`` (the resolved ``alpha: auto``),
  ``training_data`` (a cheap fingerprint of the training data), ``task_options`` (what one task kind's
  prediction head needs beyond the common fields) and ``medfocal_version``. Later fields with a default
  (no new version): ``operating_point`` (a classifier's decision rule chosen on validation).

Example:
    >>> card = ModelCard(task="segmentation", model={"class_path": "torch.nn.Conv3d", "init_args": {}},
    ...                  class_names=["background", "lesion"], num_classes=2, in_channels=1, spatial_dims=3)
    >>> ModelCard.from_dict(card.to_dict()) == card
    True
    >>> card.foreground_names
    ['lesion']
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "ACTIVATIONS",
    "CARD_KEY",
    "FORMAT_VERSION",
    "ModelCard",
    "card_of_checkpoint",
    "load_checkpoint_file",
    "update_card_file",
]

FORMAT_VERSION = 2
CARD_KEY = "medfocal"
ACTIVATIONS = ("softmax", "sigmoid")
# what inference cannot run without (a card written during training may still lack some of them)
_REQUIRED_FOR_INFERENCE = ("model", "num_classes", "in_channels", "spatial_dims")


def _where(path: str | os.PathLike[str] | None) -> str:
    return str(path) if path is not None else "<model card>"


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint says about its model (``checkpoint["medfocal"]``); see the module docstring.

    Args:
        task: the registered task kind (``medfocal.tasks.registry``), e.g. ``"segmentation"``.
        model: the network spec ``{"class_path", "init_args"}`` (or ``{"name", "kwargs"}``) that
            ``medfocal.nets.build_model`` rebuilds; None when the network had no spec.
        activation: ``"softmax"`` or ``"sigmoid"``.
        class_names: names of the output classes (segmentation: index 0 is the background).
        num_classes: output channels of the network.
        in_channels: input channels.
        spatial_dims: 2 or 3.
        roi_size: sliding-window (patch) size used in validation and inference; None: whole images.
        preprocessing: ``medfocal.data.PreprocessingSpec.to_dict()`` of the training data.
        temperature: ``T > 0``; probabilities are ``activation(logits / T)`` (1.0 unless calibrated).
        loss_alpha: the resolved ``alpha: auto`` of each loss module, keyed by its name inside the
            task's loss (``""`` for the loss itself, ``"focal"`` for a hybrid's focal term): a list
            (per class) or a float (binary sigmoid).
        training_data: a fingerprint of the training data (datamodule, layout, root, class counts...).
        task_options: what the task kind's prediction head needs beyond these fields.
        medfocal_version: the medfocal version that wrote the card.
        operating_point: classification: the decision rule chosen on validation
            (``medfocal.metrics.operating_point.OperatingPoint.to_dict()``: ``rule``, binary ``threshold``,
            the validation figures it was chosen on), set by ``medfocal.tasks.OperatingPoint``; None:
            argmax.
        path: the checkpoint file the card came from (for messages; not serialised).

    Raises:
        ValueError: a field of the wrong kind (:meth:`from_dict` names the checkpoint file).
    """

    task: str
    model: dict[str, Any] | None = None
    activation: str = "softmax"
    class_names: list[str] = field(default_factory=list)
    num_classes: int | None = None
    in_channels: int | None = None
    spatial_dims: int | None = None
    roi_size: tuple[int, ...] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
    loss_alpha: dict[str, list[float] | float] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    medfocal_version: str | None = None
    operating_point: dict[str, Any] | None = None
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = _where(self.path)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{where}: activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not (self.temperature > 0):
            raise ValueError(f"{where}: temperature must be > 0, got {self.temperature}")
        if self.spatial_dims is not None and self.spatial_dims not in (2, 3):
            raise ValueError(f"{where}: spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if (
            self.roi_size is not None
            and self.spatial_dims is not None
            and len(self.roi_size) != self.spatial_dims
        ):
            raise ValueError(
                f"{where}: roi_size {list(self.roi_size)} has {len(self.roi_size)} values, "
                f"expected spatial_dims={self.spatial_dims}"
            )
        if self.model is not None and not isinstance(self.model, Mapping):
            raise ValueError(f"{where}: model must be a dict spec, got {type(self.model).__name__}")
        if self.operating_point is not None and (
            not isinstance(self.operating_point, Mapping) or "rule" not in self.operating_point
        ):
            raise ValueError(
                f"{where}: operating_point must be a dict with a 'rule' (OperatingPoint.to_dict()) or "
                f"null, got {self.operating_point!r}"
            )

    # ------------------------------------------------------------------ derived
    @property
    def foreground_names(self) -> list[str]:
        """Names of the labels 1..K written into masks (softmax: classes 1.., sigmoid: every channel)."""
        if self.activation == "softmax":
            return list(self.class_names[1:])
        if self.num_classes is not None and len(self.class_names) == self.num_classes + 1:
            return list(self.class_names[1:])  # sigmoid with an explicit background name
        return list(self.class_names)

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def check_complete(self) -> ModelCard:
        """Raise ``ValueError`` naming the file and the missing fields if inference cannot run from it."""
        missing = [name for name in _REQUIRED_FOR_INFERENCE if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"{_where(self.path)}: checkpoint['{CARD_KEY}'] lacks (or has null) {missing}; "
                "inference needs them (train through medfocal.tasks, or give the network a spec: "
                "medfocal.nets.create_model / build_model)"
            )
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """``checkpoint["medfocal"]``: JSON types only, with ``format_version``."""
        out: dict[str, Any] = {"format_version": FORMAT_VERSION}
        for f in fields(self):
            if f.name == "path":
                continue
            out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], path: str | os.PathLike[str] | None = None, complete: bool = True
    ) -> ModelCard:
        """Read ``checkpoint["medfocal"]`` of format 1 or 2.

        Args:
            data: the dict.
            path: the checkpoint file, named in every error.
            complete: also require what inference needs (:meth:`check_complete`).

        Raises:
            ValueError: not a dict, a newer format, unknown keys, an unregistered task, bad values.
        """
        from medfocal.tasks.registry import get_task

        where = _where(path)
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: checkpoint['{CARD_KEY}'] must be a dict, got {type(data).__name__}")
        data = dict(data)
        version = int(data.pop("format_version", 1))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{where}: medfocal format_version {version}, this medfocal reads <= {FORMAT_VERSION}; "
                "update medfocal"
            )
        known = {f.name for f in fields(cls)} - {"path"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: checkpoint['{CARD_KEY}'] has unknown keys {unknown}")
        task = data.get("task")
        if task is None:
            raise ValueError(f"{where}: checkpoint['{CARD_KEY}'] lacks (or has null) ['task']")
        try:
            get_task(str(task))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        try:
            card = cls(
                task=str(task),
                model=dict(data["model"]) if data.get("model") is not None else None,
                activation=str(data.get("activation") or "softmax"),
                class_names=[str(n) for n in data.get("class_names") or []],
                num_classes=_int_or_none(data.get("num_classes")),
                in_channels=_int_or_none(data.get("in_channels")),
                spatial_dims=_int_or_none(data.get("spatial_dims")),
                roi_size=tuple(int(r) for r in data["roi_size"]) if data.get("roi_size") else None,
                preprocessing=dict(data.get("preprocessing") or {}),
                temperature=float(1.0 if data.get("temperature") is None else data["temperature"]),
                loss_alpha=_alpha_dict(data.get("loss_alpha")),
                training_data=dict(data.get("training_data") or {}),
                task_options=dict(data.get("task_options") or {}),
                medfocal_version=data.get("medfocal_version"),
                operating_point=(
                    dict(data["operating_point"])
                    if isinstance(data.get("operating_point"), Mapping)
                    else data.get("operating_point")
                ),
                path=Path(path) if path is not None else None,
            )
        except (TypeError, ValueError) as err:
            message = str(err)
            raise ValueError(message if message.startswith(where) else f"{where}: {message}") from None
        if not card.class_names and card.num_classes is not None:
            card = card.replace(class_names=[f"class_{i}" for i in range(card.num_classes)])
        return card.check_complete() if complete else card


def card_of_checkpoint(
    checkpoint: Mapping[str, Any], path: str | os.PathLike[str] | None = None, complete: bool = True
) -> ModelCard:
    """The :class:`ModelCard` of a loaded checkpoint dict; ``ValueError`` naming ``path`` if it has none."""
    if not isinstance(checkpoint, Mapping) or CARD_KEY not in checkpoint:
        keys = list(checkpoint)[:8] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(
            f"{_where(path)}: not a medfocal checkpoint (expected keys '{CARD_KEY}' and 'state_dict', "
            f"got {keys})"
        )
    return ModelCard.from_dict(checkpoint[CARD_KEY], path, complete=complete)


def update_card_file(path: str | os.PathLike[str], trust: bool = False, **changes: Any) -> ModelCard:
    """Change fields of the card of a saved checkpoint in place (atomically); returns the new card.

    The file is read with ``torch.load(weights_only=True)`` (``trust=True``: a full unpickle if that
    fails, for checkpoints the caller wrote itself) and written back in the current format: a format-1
    duplicate ``state_dict["temperature"]`` is dropped, so the card holds the only copy.

    Example::

        update_card_file("best.ckpt", temperature=1.7)
    """
    import torch

    path = Path(path)
    checkpoint = load_checkpoint_file(path, trust=trust)
    card = card_of_checkpoint(checkpoint, path, complete=False).replace(**changes)
    checkpoint[CARD_KEY] = card.to_dict()
    state = checkpoint.get("state_dict")
    if isinstance(state, dict):
        state.pop("temperature", None)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return card


def _zip_intact(path: Path) -> bool:
    """Whether ``path`` is a zip archive (``torch.save``'s format) whose members all pass their CRC check."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError):
        return False


def load_checkpoint_file(path: str | os.PathLike[str], trust: bool = False) -> Any:
    """``torch.load`` a checkpoint on the CPU, safely (``weights_only=True``), with one-line errors.

    A file that cannot be read at all (truncated, zero bytes, not a ``torch.save`` archive, a member
    failing its CRC) is reported as truncated or corrupt; an intact file that holds Python objects the
    safe loader refuses is reported with the advice to trust it, which ``trust=True`` does (a full
    unpickle: only for checkpoints you made yourself).

    Raises:
        FileNotFoundError: no such file.
        ValueError: truncated/corrupt, or (``trust=False``) extra Python objects; naming the file.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # the weights_only filter refused something; an intact archive holds extra Python objects
        if not _zip_intact(path):
            raise ValueError(_corrupt_message(path, err)) from None
        if not trust:
            raise ValueError(
                f"{path}: intact, but cannot be loaded with weights_only=True: it holds Python objects "
                f"beyond tensors and plain types ({_refused(err)}); re-save it with plain types, or pass "
                "--trust-checkpoint (trust=True) if you made it yourself"
            ) from None
    except Exception as err:  # zip/stream errors, EOFError, KeyError of a non-torch file...
        raise ValueError(_corrupt_message(path, err)) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # intact archive, but its objects need code that is not importable here
        raise ValueError(
            f"{path}: intact, but its Python objects cannot be rebuilt here ({type(err).__name__}: "
            f"{_first_sentence(err)}); install the code that wrote it, or re-save it with plain types"
        ) from None


def _first_sentence(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refused(err: BaseException) -> str:
    """What the weights_only filter refused (torch's message names it on a ``WeightsUnpickler`` line)."""
    for line in str(err).splitlines():
        if "WeightsUnpickler error" in line or "Unsupported global" in line:
            return _first_sentence(Exception(line.split("error:", 1)[-1]))
    return _first_sentence(err)


def _corrupt_message(path: Path, err: BaseException) -> str:
    size = path.stat().st_size if path.exists() else 0
    detail = _first_sentence(err)
    return (
        f"{path}: the checkpoint file is truncated or corrupt ({size} bytes; "
        f"{type(err).__name__}: {detail}); copy it again or use another checkpoint "
        "(--trust-checkpoint does not help)"
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _alpha_dict(value: Any) -> dict[str, list[float] | float]:
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"loss_alpha must be a dict {{loss module: alpha}}, got {type(value).__name__}")
    return {
        str(k): [float(a) for a in v] if isinstance(v, Sequence) and not isinstance(v, str) else float(v)
        for k, v in value.items()
    }


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise ValueError(f"model card: {type(value).__name__} is not a JSON type ({value!r})")
