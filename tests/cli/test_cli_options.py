"""Tests for medfocal.cli._options (options from signatures) and the subcommand parsers built with it."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Sequence
from typing import Literal

import pytest

from medfocal.cli import COMMANDS, main
from medfocal.cli._options import add_signature_options, new_parser


def _toy(
    source: str,
    keep_largest: bool = False,
    progress: bool = True,
    amp: bool | None = None,
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    mode: Literal["fast", "exact"] = "fast",
    report_name: str | None = None,
) -> None:
    """Toy.

    Args:
        source: where the images are.
        keep_largest: keep the largest component.
        progress: show a bar.
    """


def test_options_follow_the_signature():
    p = new_parser("toy", "toy")
    added = add_signature_options(p, _toy, skip=("report_name",), flags={"source": ("-i", "--input")})
    assert added == ["source", "keep_largest", "progress", "amp", "roi_size", "overlap", "mode"]
    defaults = vars(p.parse_args(["-i", "x"]))
    signature = inspect.signature(_toy).parameters
    assert defaults == {name: signature[name].default for name in added[1:]} | {"source": "x"}
    args = p.parse_args(
        ["--input", "x", "--keep-largest", "--no-progress", "--no-amp", "--roi-size", "3", "4",
         "--overlap", "0.25", "--mode", "exact"]
    )  # fmt: skip
    assert vars(args) == {
        "source": "x", "keep_largest": True, "progress": False, "amp": False, "roi_size": [3, 4],
        "overlap": 0.25, "mode": "exact",
    }  # fmt: skip
    assert p.parse_args(["-i", "x", "--amp"]).amp is True
    text = p.format_help()
    assert "where the images are" in text and "turn off: show a bar" in text and "{fast,exact}" in text
    assert "--report-name" not in text


def test_required_parameter_and_bad_choice_are_argument_errors(capsys):
    p = new_parser("toy", "toy")
    add_signature_options(p, _toy)
    with pytest.raises(SystemExit) as exit_:
        p.parse_args(["--mode", "fastest"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--source" in err or "invalid choice: 'fastest'" in err


def test_infer_defaults_are_the_predictors():
    from medfocal.cli.infer import parser
    from medfocal.inference.predictor import Predictor

    defaults = vars(parser().parse_args(["-c", "a.ckpt", "-i", "in", "-o", "out"]))
    for func in (Predictor.__init__, Predictor.predict_folder, Predictor.from_checkpoint):
        for name, param in inspect.signature(func).parameters.items():
            if name in defaults and param.default is not inspect.Parameter.empty:
                assert defaults[name] == param.default, name


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("infer", ["-c CKPT [CKPT ...], --checkpoint CKPT [CKPT ...]", "--keep-largest", "{nifti,npz}",
                   "--trust-checkpoint",
                   "--num-workers", "--overwrite", "--overlap", "--tta", "--no-amp", "--roi-size"]),
        ("evaluate", ["-p PRED, --pred PRED", "-g GT, --gt GT", "--labels", "--no-plot", "hd95_mm"]),
        ("check-data", ["--config", "--dataset-json", "--quick", "--max-rows", "stroke_isles"]),
        ("demo", ["--out", "--epochs", "--n-train", "--minutes", "stroke_isles"]),
    ],
)  # fmt: skip
def test_subcommand_help_lists_options_presets_and_choices(command, expected, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out, text


def test_top_level_help_lists_presets(capsys):
    from medfocal.presets import list_presets

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "stroke_isles" in list_presets() and "demo" in list_presets()
    assert f"presets (--config NAME): {', '.join(list_presets())}" in out


def test_argument_errors_exit_2(capsys):
    assert main(["evaluate", "-p", "x"]) == 2
    assert "the following arguments are required: -g/--gt" in capsys.readouterr().err
    assert main(["check-data", "somewhere", "--bogus", "1"]) == 2
    assert "unrecognized arguments: --bogus 1" in capsys.readouterr().err


def test_every_registered_command_has_help_and_a_parser():
    import importlib

    for name, command in COMMANDS.items():
        module = importlib.import_module(command.module)
        assert command.help == module.HELP and module.HELP.strip()
        assert module.parser().prog == f"medfocal {name}"


def test_old_import_places_still_work():
    from medfocal.cli.lightning import MedfocalCLI
    from medfocal.inference.commands import main_evaluate, main_infer
    from medfocal.tasks.lightning_cli import MedfocalCLI as old

    assert old is MedfocalCLI
    assert (
        main_infer.__module__ == "medfocal.cli.infer" and main_evaluate.__module__ == "medfocal.cli.evaluate"
    )


def test_python_m_medfocal_cli(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "medfocal.cli", "--help"], capture_output=True, text=True, cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "check-data" in out.stdout and "presets (--config NAME)" in out.stdout
