"""The ``medfocal`` command: Lightning's subcommands plus medfocal's own.

``medfocal fit|validate|test|predict`` go to :class:`MedfocalCLI` (a ``LightningCLI``);
``medfocal infer|evaluate|check-data|demo`` go to their own small parsers. This module only wires.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

# subcommand -> ("module:function", one-line help); each function takes argv and returns an exit code
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "infer": ("medfocal.inference.commands:main_infer", "Batch inference over a folder of NIfTI/images."),
    "evaluate": (
        "medfocal.inference.commands:main_evaluate",
        "Dice/IoU/HD95 of predictions vs ground truth.",
    ),
    "check-data": (
        "medfocal.data.checks:main_check_data",
        "Validate and describe a dataset before training.",
    ),
    "demo": ("medfocal.demo:main", "Train, infer and evaluate on a generated dataset (no download)."),
}
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "Train a model from a YAML config (configs/*.yaml).",
    "validate": "Run one validation epoch.",
    "test": "Run one test epoch.",
    "predict": "Run Lightning's predict loop.",
}


def _top_level_help() -> str:
    from medfocal import __version__

    lines = [
        f"medfocal {__version__}: focal-family losses for class-imbalanced medical imaging",
        "",
        "usage: medfocal <command> [options]   (medfocal <command> --help for details)",
        "",
        "commands:",
    ]
    for name, text in LIGHTNING_COMMANDS.items():
        lines.append(f"  {name:<11} {text}")
    for name, (_, text) in EXTRA_COMMANDS.items():
        lines.append(f"  {name:<11} {text}")
    lines += [
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


def _resolve(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medfocal`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0
    if args[0] in ("-V", "--version"):
        from medfocal import __version__

        print(__version__)
        return 0
    if args[0] == "check-data":
        args = expand_presets(args)
    if args[0] in EXTRA_COMMANDS:
        return int(_resolve(EXTRA_COMMANDS[args[0]][0])(args[1:]) or 0)
    if args[0] in LIGHTNING_COMMANDS:
        return lightning_main(expand_presets(args))
    print(f"medfocal: unknown command {args[0]!r}\n\n{_top_level_help()}", file=sys.stderr)
    return 2


def lightning_main(args: list[str]) -> int:
    """Run ``fit|validate|test|predict`` through :class:`medfocal.tasks.lightning_cli.MedfocalCLI`.

    ``args`` starts with the subcommand: ``["fit", "--config", "configs/demo.yaml"]``. Returns the exit
    code (0, or the parser's code for ``--help`` and argument errors).
    """
    import warnings

    from medfocal.tasks.lightning_cli import MedfocalCLI

    with warnings.catch_warnings():
        # args come from sys.argv through main(): passing both is intended here
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        try:
            MedfocalCLI(args=list(args))
        except SystemExit as exit_:  # --help, argument errors
            code = exit_.code
            return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
