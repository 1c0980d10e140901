"""Command-line options read from Python signatures: one way to build every medfocal subcommand parser.

:func:`add_signature_options` turns the parameters of a function (``Predictor.predict_folder``,
``evaluate_folders``, ...) into ``argparse`` options: the default, the help text (the docstring's
``Args:`` entry, read with ``docstring_parser``, which jsonargparse uses too) and the type come from the
function, so the command line never repeats them. Conventions (those of the README's commands):

========================================  =============================================================
parameter                                 option
========================================  =============================================================
``keep_largest: bool = False``            ``--keep-largest`` (a flag)
``progress: bool = True``                 ``--no-progress``
``amp: bool | None = None``               ``--amp`` / ``--no-amp`` (default: the function's)
``roi_size: Sequence[int] | None``        ``--roi-size 96 96 64``
``overlap: float = 0.5``                  ``--overlap 0.25``
``Literal["a", "b"]`` or a ``StrEnum``    ``--x {a,b}``
========================================  =============================================================

``flags`` renames an option (``{"source": ("-i", "--input")}``), ``overrides`` adds or replaces argparse
keywords (``{"save_probabilities": {"nargs": "?", "const": "npz", "choices": ("npz", "nifti")}}``).
"""

from __future__ import annotations

import argparse
import enum
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_signature_options", "exit_code", "new_parser", "option_names"]


def new_parser(name: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``medfocal <name>``: raw help layout (epilogs keep their lines), defaults shown."""

    return argparse.ArgumentParser(
        prog=f"medfocal {name}",
        description=textwrap.fill(description, 100),
        epilog=epilog,
        formatter_class=_Formatter,
    )


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs keep their lines; an option's default is shown unless it is None, False or required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if action.required or default in (None, False, argparse.SUPPRESS) or "%(default)" in text:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return text
        return f"{text} (default: %(default)s)"


def _docstring_args(func: Callable) -> dict[str, str]:
    import docstring_parser

    docs = [inspect.getdoc(func) or ""]
    owner = getattr(func, "__qualname__", "").split(".")
    if func.__name__ == "__init__" and len(owner) > 1:  # a class documents its __init__ arguments
        module = inspect.getmodule(func)
        docs.append(inspect.getdoc(getattr(module, owner[-2], None)) or "")
    found: dict[str, str] = {}
    for doc in docs:
        for param in docstring_parser.parse(doc).params:
            text = " ".join((param.description or "").split())
            found.setdefault(param.arg_name, text.replace("%", "%%").replace("``", ""))
    return found


def _strip_optional(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _option_kwargs(name: str, param: inspect.Parameter, hint: Any) -> dict[str, Any]:
    """argparse keywords for one parameter, from its (resolved) type hint and default."""
    default = None if param.default is inspect.Parameter.empty else param.default
    required = param.default is inspect.Parameter.empty
    base = _strip_optional(hint)
    origin = typing.get_origin(base)
    if base is bool and default is None and not required:
        return {"action": argparse.BooleanOptionalAction, "default": None}
    if base is bool:
        return {"action": "store_false" if default else "store_true", "default": bool(default)}
    kwargs: dict[str, Any] = {"default": default, "required": required}
    if origin is typing.Literal:
        kwargs["choices"] = typing.get_args(base)
    elif isinstance(base, type) and issubclass(base, enum.Enum):
        kwargs["choices"] = [m.value for m in base]
    elif origin in (list, tuple, Sequence):
        item = (typing.get_args(base) or (str,))[0]
        kwargs.update(nargs="+", type=item if item in (int, float, str) else str)
    elif base in (int, float):
        kwargs["type"] = base
    return kwargs


def option_names(name: str, kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """``--keep-largest`` for a flag or value, ``--no-progress`` for a bool defaulting to True."""
    dashed = name.replace("_", "-")
    return (f"--no-{dashed}",) if kwargs.get("action") == "store_false" else (f"--{dashed}",)


def add_signature_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    func: Callable,
    skip: Sequence[str] = (),
    flags: Mapping[str, Sequence[str]] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Add one option per parameter of ``func`` (except ``self``, ``*args``, ``**kwargs`` and ``skip``).

    Args:
        parser: the parser (or argument group) to add to.
        func: a function or method; its type hints, defaults and docstring ``Args:`` are read.
        skip: parameters the command line does not set.
        flags: option strings for a parameter instead of ``--its-name`` (``{"source": ("-i", "--input")}``).
        overrides: extra or replacing argparse keywords per parameter.

    Returns:
        The parameter names added; ``argparse`` stores each under its own name (``dest``).
    """
    flags, overrides = dict(flags or {}), dict(overrides or {})
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: fall back to untyped string options
        hints = {}
    docs = _docstring_args(func)
    added: list[str] = []
    for name, param in inspect.signature(func).parameters.items():
        if name in ("self", "cls", *skip) or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        kwargs = _option_kwargs(name, param, hints.get(name, Any))
        kwargs.update(overrides.get(name, {}))
        if kwargs.get("type") is None and "action" not in kwargs and hints.get(name) in (Path, str | Path):
            kwargs["type"] = str
        if "action" in kwargs:
            kwargs.pop("required", None)
        text = docs.get(name, "")
        if kwargs.get("action") == "store_false":
            text = f"turn off: {text}"
        kwargs["help"] = kwargs.get("help", text)
        parser.add_argument(*flags.get(name, option_names(name, kwargs)), dest=name, **kwargs)
        added.append(name)
    return added


def exit_code(exit_: SystemExit) -> int:
    """The integer exit status of a ``SystemExit`` (``--help``: 0, argument errors: 2)."""
    code = exit_.code
    return code if isinstance(code, int) else (0 if code is None else 1)
