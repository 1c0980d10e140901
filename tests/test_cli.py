"""Tests for medfocal.cli: the dispatcher and its Lightning subcommands (argv lists, no subprocess)."""

from __future__ import annotations

import pytest

from medfocal.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in (*LIGHTNING_COMMANDS, *EXTRA_COMMANDS):
        assert f"  {name} " in out


def test_unknown_command_exits_2(capsys):
    assert main(["fitt"]) == 2
    assert "unknown command 'fitt'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_lightning_subcommand_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for option in (
        "--config",
        "--model",
        "--data",
        "--trainer.strategy",
        "--optimizer",
        "--checkpoint.save_last",
    ):
        assert option in out, option


def test_missing_config_file_is_an_argument_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", "does_not_exist.yaml"]) == 2
    assert "does_not_exist.yaml" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_second_config_sets_a_nested_value_to_null(tmp_path, monkeypatch, capsys):
    # jsonargparse rejects `--data.init_args.preprocessing.spacing=null` (two classes deep); the README
    # documents this override file instead
    import yaml

    from medfocal.demo import find_config

    override = tmp_path / "native_grid.yaml"
    override.write_text("data:\n  init_args:\n    preprocessing:\n      spacing: null\n")
    monkeypatch.chdir(tmp_path)
    preset = str(find_config("stroke_isles.yaml"))
    assert main(["fit", "--config", preset, "--config", str(override), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    preprocessing = printed["data"]["init_args"]["preprocessing"]
    assert preprocessing["spacing"] is None
    assert preprocessing["modality"] == "mri"  # the rest of the preset is kept
