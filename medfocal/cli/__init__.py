"""The ``medfocal`` command: Lightning's subcommands plus medfocal's own, in one layer that only wires.

``medfocal fit|validate|test|predict`` go to :class:`~medfocal.cli.lightning.MedfocalCLI` (a
``LightningCLI``: model, data, trainer, optimizer from YAML presets). ``medfocal infer|evaluate|check-data|
demo`` are one module each in this package, all built the same way: a module with

- ``HELP``: the one line shown by ``medfocal --help``;
- ``parser() -> argparse.ArgumentParser``: made with :func:`medfocal.cli._options.new_parser` and
  :func:`~medfocal.cli._options.add_signature_options`, which reads the options (names, defaults, types,
  help) from the Python function the command calls (``Predictor.predict_folder``, ``evaluate_folders``,
  ...), so the command line never repeats a default;
- ``main(argv) -> int``: parse, call the Python API, print, return the exit status.

Adding a subcommand (``plan``, ``cv``, ``export``, ...) is one small file and one registration:

1. ``medfocal/cli/plan.py`` with ``HELP``, ``parser()`` and ``main(argv)`` as above (copy ``evaluate.py``);
2. one line in :data:`COMMANDS` below: ``"plan": Command("medfocal.cli.plan")`` (``presets=True`` when
   its ``--config`` takes a preset name such as ``stroke_isles``).

Subcommand modules are imported only when run (``medfocal --help`` stays fast), and are tested with
argv lists: ``main(["plan", "--help"]) == 0``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "COMMANDS",
    "EXTRA_COMMANDS",
    "LIGHTNING_COMMANDS",
    "Command",
    "expand_presets",
    "main",
    "unknown_config",
]


@dataclass(frozen=True)
class Command:
    """A registered subcommand: its module (with ``HELP``, ``parser()``, ``main(argv)``)."""

    module: str
    presets: bool = False  # --config/-c NAME means a preset (not e.g. infer's -c CHECKPOINT)

    @property
    def help(self) -> str:
        return str(importlib.import_module(self.module).HELP)

    def run(self, argv: Sequence[str]) -> int:
        if self.presets:
            args = expand_presets(list(argv))
            unknown = unknown_config(args)
            if unknown:
                print(f"medfocal: {unknown}", file=sys.stderr)
                return 2
        else:
            args = list(argv)
        return int(importlib.import_module(self.module).main(args) or 0)


# the registry of medfocal's own subcommands: one line per command
COMMANDS: dict[str, Command] = {
    "infer": Command("medfocal.cli.infer"),
    "evaluate": Command("medfocal.cli.evaluate"),
    "check-data": Command("medfocal.cli.check_data", presets=True),
    "demo": Command("medfocal.cli.demo", presets=True),
    "export": Command("medfocal.cli.export"),
    "plan": Command("medfocal.cli.plan"),
    "cv": Command("medfocal.cli.cv", presets=True),
}
EXTRA_COMMANDS = COMMANDS  # the former name
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "Train a model from a YAML config (configs/*.yaml).",
    "validate": "Run one validation epoch.",
    "test": "Run one test epoch.",
    "predict": "Run Lightning's predict loop.",
}


def _top_level_help() -> str:
    from medfocal import __version__
    from medfocal.presets import list_presets

    lines = [
        f"medfocal {__version__}: focal-family losses for class-imbalanced medical imaging",
        "",
        "usage: medfocal <command> [options]   (medfocal <command> --help for details)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<11} {text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += [f"  {name:<11} {command.help}" for name, command in COMMANDS.items()]
    lines += [
        "",
        f"presets (--config NAME): {', '.join(list_presets())}",
        "",
        "example: medfocal fit --config configs/stroke_isles.yaml --trainer.max_epochs=50",
        "         (a preset can be named without its folder: --config stroke_isles)",
    ]
    return "\n".join(lines)


def expand_presets(args: list[str]) -> list[str]:
    """Replace ``--config NAME`` / ``-c NAME`` / ``--config=NAME`` by the preset's path.

    Only when ``NAME`` is not an existing file and a preset ``configs/NAME`` or ``configs/NAME.yaml``
    exists (in the clone, or installed with the package): ``--config stroke_isles`` works from any
    folder. Anything else is left for the parser to accept or reject.
    """
    from medfocal.presets import find_config

    def preset(value: str) -> str:
        if Path(value).exists():
            return value
        for name in (value, f"{value}.yaml"):
            try:
                return str(find_config(name))
            except FileNotFoundError:
                continue
        return value

    out: list[str] = []
    take_next = False
    for arg in args:
        if take_next:
            out.append(preset(arg))
            take_next = False
        elif arg in ("--config", "-c"):
            out.append(arg)
            take_next = True
        elif arg.startswith("--config="):
            out.append("--config=" + preset(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


def _config_values(args: Sequence[str]) -> list[str]:
    values = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith("--config="):
            values.append(arg.split("=", 1)[1])
    return values


def unknown_config(args: Sequence[str]) -> str | None:
    """A one-line message when a ``--config`` value is neither a file nor a preset, else ``None``.

    The message lists the presets and the closest one (``difflib``). Values that look like inline YAML
    (``{...}``, ``key: value``) are left to the parser.
    """
    import difflib

    from medfocal.presets import list_presets

    for value in _config_values(args):
        if Path(value).exists() or any(c in value for c in "{}:\n"):
            continue
        presets = list_presets()
        name = Path(value).name.removesuffix(".yaml").removesuffix(".yml")
        close = difflib.get_close_matches(name, presets, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return (
            f"--config {value}: no such file and no preset of that name.{hint} "
            f"Presets: {', '.join(presets)} (or give the path of a YAML file)."
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medfocal`` console script (and ``python -m medfocal.cli``)."""
    from medfocal.cli._options import exit_code

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0
    if args[0] in ("-V", "--version"):
        from medfocal import __version__

        print(__version__)
        return 0
    try:
        if args[0] in COMMANDS:
            return COMMANDS[args[0]].run(args[1:])
        if args[0] in LIGHTNING_COMMANDS:
            return lightning_main(expand_presets(args))
    except SystemExit as exit_:  # argparse: --help and argument errors
        return exit_code(exit_)
    print(f"medfocal: unknown command {args[0]!r}\n\n{_top_level_help()}", file=sys.stderr)
    return 2


def lightning_main(args: list[str]) -> int:
    """Run ``fit|validate|test|predict`` through :class:`medfocal.cli.lightning.MedfocalCLI`.

    ``args`` starts with the subcommand: ``["fit", "--config", "configs/demo.yaml"]``. Returns the exit
    code: 0; the parser's code for ``--help`` and argument errors; 2 for a ``--config`` that is neither a
    file nor a preset (the presets and the closest name listed); 1, with the message alone (no
    traceback), for data problems (:class:`~medfocal.data.errors.DataValidationError`, a malformed
    ``dataset.json`` included), a split that cannot serve the command
    (:class:`~medfocal.data.errors.DataSplitError`: ``test`` on a test split without labels) and a
    training loss that turned NaN/Inf (:class:`~medfocal.cli.lightning.NonFiniteLossError`).
    """
    import warnings

    from medfocal.cli.lightning import MedfocalCLI, NonFiniteLossError
    from medfocal.data.errors import DataSplitError, DataValidationError

    unknown = unknown_config(args)
    if unknown:
        print(f"medfocal {args[0]}: {unknown}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            # args come from sys.argv through main(): passing both is intended here
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
            MedfocalCLI(args=list(args))
    except Exception as err:
        # jsonargparse wraps errors raised while building the datamodule in its own ValueError
        known = _cause_of_type(err, (DataValidationError, DataSplitError, NonFiniteLossError))
        if known is None:
            raise
        print(f"medfocal {args[0]}: {known}", file=sys.stderr)
        if isinstance(known, DataValidationError) and "dataset.json" not in str(known):
            print("(`medfocal check-data` runs the same checks without training)", file=sys.stderr)
        return 1
    if args[0] == "predict":
        print(
            "medfocal predict: predictions were computed in memory and not written (add a "
            "BasePredictionWriter callback); `medfocal infer -c CHECKPOINT -i IMAGES -o OUT` writes masks "
            "in the input geometry.",
            file=sys.stderr,
        )
    return 0


def _cause_of_type(err: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """``err`` or the first exception of ``types`` in its ``__cause__``/``__context__`` chain."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
