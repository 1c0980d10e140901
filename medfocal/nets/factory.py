"""Model registry and factory: find a network by name or by ``class_path``, and rebuild it from a spec.

Two ways to name a model, both rebuilding the same thing:

- a registry name (timm style): ``create_model("dense_unet", spatial_dims=3, in_channels=2, out_channels=2)``;
- a LightningCLI ``class_path``:
  ``build_model({"class_path": "medfocal.nets.DenseUNet", "init_args": {...}})``.

Every model built here carries ``model._medfocal_spec = {"class_path": ..., "init_args": {...}}`` (JSON
types only), which a checkpoint stores so that :func:`build_model` rebuilds the network from it alone.
The medfocal model classes record that spec themselves in ``__init__``, so models that LightningCLI
instantiates straight from a ``class_path`` carry it as well (see :func:`model_spec`).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "build_model",
    "create_model",
    "is_model",
    "list_models",
    "model_spec",
    "record_init_args",
    "register_model",
]

_REGISTRY: dict[str, type[nn.Module] | Callable[..., nn.Module]] = {}
_PUBLIC_MODULE = "medfocal.nets"

T = TypeVar("T")


def register_model(name: str) -> Callable[[T], T]:
    """Register a model class (or a function returning an ``nn.Module``) under ``name``.

    Args:
        name: registry name, lower case, e.g. ``"dense_unet"``.

    Raises:
        ValueError: when ``name`` is already registered to another object.

    Example::

        @register_model("tiny_net")
        class TinyNet(nn.Module): ...
    """

    def decorator(obj: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not obj:
            raise ValueError(f"model name {name!r} is already registered to {_REGISTRY[name]!r}")
        _REGISTRY[name] = obj  # type: ignore[assignment]
        return obj

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registry names matching a shell wildcard ``pattern`` (``"resnet*"``, ``"*unet*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model name."""
    return name in _REGISTRY


def _unknown_name_error(name: str) -> ValueError:
    close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown model name {name!r}.{hint} Available: {', '.join(list_models())}.")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name; keyword arguments go to its constructor.

    ``None`` values are dropped so the constructor's default applies (a config may leave a key empty).
    The result carries ``_medfocal_spec`` (``{"class_path", "init_args"}``) for :func:`build_model`.

    Args:
        name: a name from :func:`list_models`, e.g. ``"unet"``, ``"resnet18"``.
        **kwargs: constructor arguments of that model.

    Raises:
        ValueError: for an unknown name (with the closest names suggested) or arguments the model does
            not accept.

    Example::

        >>> net = create_model("unet", spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16))
        >>> net._medfocal_spec["class_path"]
        'medfocal.nets.UNet'
    """
    if name not in _REGISTRY:
        raise _unknown_name_error(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    factory = _REGISTRY[name]
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"create_model({name!r}): {err}") from err
    model = factory(**kwargs)
    if not hasattr(model, "_medfocal_spec"):
        model._medfocal_spec = _spec_for(type(model), kwargs)
    return model


def _class_path(cls: type) -> str:
    """Importable dotted path of ``cls``, the short public one (``medfocal.nets.X``) when it exists."""
    public = importlib.import_module(_PUBLIC_MODULE)
    if getattr(public, cls.__name__, None) is cls:
        return f"{_PUBLIC_MODULE}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _to_json(value: Any, key: str) -> Any:
    """Tuples to lists, str enums to str; anything not JSON-representable raises ``ValueError``."""
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_to_json(v, key) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_json(v, key) for k, v in value.items()}
    raise ValueError(
        f"init argument {key!r} of type {type(value).__name__} cannot be stored in a model spec "
        "(expected JSON types: None, bool, int, float, str, list, dict)"
    )


def _spec_for(cls: type, init_args: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "class_path": _class_path(cls),
        "init_args": {k: _to_json(v, k) for k, v in init_args.items()},
    }


def record_init_args(module: nn.Module, cls: type, local_vars: Mapping[str, Any]) -> None:
    """Store ``module._medfocal_spec`` from the constructor's ``locals()``; call at the end of ``__init__``.

    Only records when ``type(module) is cls``, so a subclass with another signature is not described
    with its parent's arguments (it records its own, or has no spec).
    """
    if type(module) is not cls:
        return
    params = inspect.signature(cls.__init__).parameters
    args = {
        n: local_vars[n]
        for n, p in params.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n in local_vars
    }
    module._medfocal_spec = _spec_for(cls, args)


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The ``{"class_path", "init_args"}`` spec that :func:`build_model` rebuilds ``model`` from.

    Raises:
        ValueError: when the model was neither built by :func:`create_model`/:func:`build_model` nor is a
            medfocal model class (e.g. a MONAI network instantiated directly).
    """
    spec = getattr(model, "_medfocal_spec", None)
    if spec is None:
        raise ValueError(
            f"{type(model).__name__} has no _medfocal_spec: build it with medfocal.nets.create_model / "
            "build_model, or use a medfocal.nets class (e.g. class_path: medfocal.nets.UNet)"
        )
    return {"class_path": spec["class_path"], "init_args": dict(spec["init_args"])}


def _resolve_class(path: str) -> type:
    if "." not in path:
        public = importlib.import_module(_PUBLIC_MODULE)
        obj = getattr(public, path, None)
        if obj is None and path in _REGISTRY:
            obj = _REGISTRY[path]
        if obj is None:
            raise ValueError(
                f"class_path {path!r} is neither a dotted path (package.module.Class) nor a name in "
                f"{_PUBLIC_MODULE}"
            )
    else:
        module_name, _, attr = path.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"class_path {path!r}: cannot import module {module_name!r} ({err})") from err
        obj = getattr(module, attr, None)
        if obj is None:
            raise ValueError(f"class_path {path!r}: module {module_name!r} has no attribute {attr!r}")
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise ValueError(f"class_path {path!r} must name a torch.nn.Module subclass, got {obj!r}")
    return obj


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from a spec: ``{"class_path", "init_args"}`` or ``{"name", "kwargs"}``.

    ``class_path`` is a dotted import path (``monai.networks.nets.UNet``, ``medfocal.nets.DenseUNet``) or a
    bare class name from ``medfocal.nets``; it must be a ``torch.nn.Module`` subclass. ``name`` is a
    registry name for :func:`create_model`.

    Raises:
        ValueError: for a malformed spec, a path that does not import, a class that is not an
            ``nn.Module``, or arguments its constructor rejects.

    Example::

        >>> net = create_model("resnet18", spatial_dims=2, in_channels=1, out_channels=3, widen_factor=0.25)
        >>> clone = build_model(net._medfocal_spec)
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"model spec must be a dict, got {type(spec).__name__}")
    if "name" in spec:
        kwargs = spec.get("kwargs") or spec.get("init_args") or {}
        return create_model(spec["name"], **kwargs)
    if "class_path" not in spec:
        raise ValueError(
            "model spec needs 'class_path' (with 'init_args') or 'name' (with 'kwargs'); "
            f"got keys {sorted(spec)}"
        )
    cls = _resolve_class(str(spec["class_path"]))
    init_args = dict(spec.get("init_args") or {})
    try:
        inspect.signature(cls).bind(**init_args)
    except TypeError as err:
        raise ValueError(f"class_path {spec['class_path']!r}: {err}") from err
    model = cls(**init_args)
    if not hasattr(model, "_medfocal_spec"):
        spec_out = _spec_for(cls, init_args)
        if "." in str(spec["class_path"]):
            spec_out["class_path"] = str(spec["class_path"])  # keep the caller's (public) path
        model._medfocal_spec = spec_out
    return model
