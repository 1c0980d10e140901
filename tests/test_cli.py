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

    from medfocal.presets import find_config

    override = tmp_path / "native_grid.yaml"
    override.write_text("data:\n  init_args:\n    preprocessing:\n      spacing: null\n")
    monkeypatch.chdir(tmp_path)
    preset = str(find_config("stroke_isles.yaml"))
    assert main(["fit", "--config", preset, "--config", str(override), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    preprocessing = printed["data"]["init_args"]["preprocessing"]
    assert preprocessing["spacing"] is None
    assert preprocessing["modality"] == "mri"  # the rest of the preset is kept


def test_presets_can_be_named_without_their_folder(tmp_path, monkeypatch):
    from medfocal.cli import expand_presets
    from medfocal.presets import find_config

    monkeypatch.chdir(tmp_path)  # no configs/ here: the names resolve to the package's presets
    stroke, amp = str(find_config("stroke_isles.yaml")), str(find_config("common/amp.yaml"))
    assert expand_presets(["fit", "--config", "stroke_isles", "-c", "common/amp.yaml"]) == [
        "fit", "--config", stroke, "-c", amp,
    ]  # fmt: skip
    assert expand_presets(["fit", "--config=stroke_isles.yaml"]) == ["fit", f"--config={stroke}"]
    # an existing file wins over a preset of the same name; unknown names are left to the parser
    (tmp_path / "stroke_isles").write_text("seed_everything: 3\n")
    assert expand_presets(["fit", "--config", "stroke_isles"]) == ["fit", "--config", "stroke_isles"]
    assert expand_presets(["fit", "--config", "nope", "--trainer.max_epochs=2"]) == [
        "fit", "--config", "nope", "--trainer.max_epochs=2",
    ]  # fmt: skip


def test_fit_accepts_a_preset_name(tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", "stroke_isles", "--trainer.max_epochs=7", "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["model"]["class_path"] == "medfocal.nets.DenseUNet"
    assert printed["trainer"]["max_epochs"] == 7


def test_lightning_subcommand_help_lists_presets_and_networks(capsys):
    from medfocal.nets import list_models
    from medfocal.presets import list_presets

    assert main(["fit", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: medfocal [options] fit")
    assert f"presets (--config NAME, several --config merge in order): {', '.join(list_presets())}." in out
    assert f"Networks by name (medfocal.nets.create_model): {', '.join(list_models())}." in out
