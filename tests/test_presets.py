"""medfocal.presets: the configs/ presets found in a clone and, installed, in the wheel."""

from __future__ import annotations

import sys

import pytest


def test_find_config_reads_the_clone_first(tmp_path, monkeypatch):
    import medfocal.presets as presets

    installed = tmp_path / "site" / "medfocal" / "configs"
    installed.mkdir(parents=True)
    (installed / "demo.yaml").write_text("seed_everything: 1\n")
    monkeypatch.setattr(presets, "_installed_configs", lambda: installed)
    assert presets.find_config() == presets._REPO / "configs" / "demo.yaml"
    assert presets.find_config("common/amp.yaml") == presets._REPO / "configs" / "common" / "amp.yaml"


def test_find_config_falls_back_to_the_presets_in_the_wheel(tmp_path, monkeypatch):
    # an installed (non-editable) medfocal has no <repo>/configs, only the package medfocal.configs
    import medfocal.presets as presets

    installed = tmp_path / "site" / "medfocal" / "configs"
    (installed / "common").mkdir(parents=True)
    (installed / "demo.yaml").write_text("seed_everything: 1\n")
    (installed / "stroke_isles.yaml").write_text("seed_everything: 2\n")
    (installed / "common" / "amp.yaml").write_text("trainer: {precision: 16-mixed}\n")
    monkeypatch.setattr(presets, "_REPO", tmp_path / "no_clone")
    monkeypatch.setattr(presets, "_installed_configs", lambda: installed)
    assert presets.find_config() == installed / "demo.yaml"
    assert presets.find_config("common/amp.yaml") == installed / "common" / "amp.yaml"
    with pytest.raises(
        FileNotFoundError, match=r"nope\.yaml: preset not found.*demo\.yaml, stroke_isles\.yaml"
    ):
        presets.find_config("nope.yaml")


def test_the_wheel_ships_every_preset_and_every_subpackage():
    # pyproject lists the packages by hand (configs/ is mapped to medfocal.configs): keep it complete
    import medfocal.presets as presets

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the dev extra installs tomli (the same parser, before it joined the stdlib)
        import tomli as tomllib

    root = presets._REPO
    setuptools_cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(root).parts) for p in (root / "medfocal").rglob("__init__.py")}
    assert set(setuptools_cfg["packages"]) == on_disk | {"medfocal.configs"}
    assert setuptools_cfg["package-dir"] == {"medfocal.configs": "configs"}
    patterns = setuptools_cfg["package-data"]["medfocal.configs"]
    shipped = {p for pattern in patterns for p in (root / "configs").glob(pattern)}
    assert shipped == set((root / "configs").rglob("*.yaml")), "a preset would be missing from the wheel"
