"""`medfocal demo` end to end on a tiny budget: files written, input geometry kept, Dice reported."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from medfocal.demo import main, run_demo


@pytest.mark.slow
def test_demo_writes_masks_in_input_geometry_metrics_and_overlay(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["--out", "demo", "--epochs", "2", "--n-train", "4", "--n-test", "2"])
    assert code == 0
    out = tmp_path / "demo"
    images = sorted((out / "data" / "imagesTs").glob("*.nii.gz"))
    assert len(images) == 2
    for image in images:
        mask = nib.load(out / "predictions" / image.name)
        source = nib.load(image)
        assert mask.shape == source.shape
        np.testing.assert_allclose(mask.affine, source.affine, atol=1e-5)
        assert mask.get_data_dtype() == np.uint8
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["case"] for r in rows} == {"case_004", "case_005"}
    assert (out / "overlay.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "case_004" in printed and "Dice" in printed and "metrics.csv" in printed


def test_demo_refuses_a_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml: training config not found"):
        run_demo(tmp_path, epochs=1, n_train=2, n_test=1, config=tmp_path / "nope.yaml")


def test_find_config_reads_the_clone_first(tmp_path, monkeypatch):
    import medfocal.demo as demo

    installed = tmp_path / "site" / "medfocal" / "configs"
    installed.mkdir(parents=True)
    (installed / "demo.yaml").write_text("seed_everything: 1\n")
    monkeypatch.setattr(demo, "_installed_configs", lambda: installed)
    assert demo.find_config() == demo._REPO / "configs" / "demo.yaml"
    assert demo.find_config("common/amp.yaml") == demo._REPO / "configs" / "common" / "amp.yaml"


def test_find_config_falls_back_to_the_presets_in_the_wheel(tmp_path, monkeypatch):
    # an installed (non-editable) medfocal has no <repo>/configs, only the package medfocal.configs
    import medfocal.demo as demo

    installed = tmp_path / "site" / "medfocal" / "configs"
    (installed / "common").mkdir(parents=True)
    (installed / "demo.yaml").write_text("seed_everything: 1\n")
    (installed / "stroke_isles.yaml").write_text("seed_everything: 2\n")
    (installed / "common" / "amp.yaml").write_text("trainer: {precision: 16-mixed}\n")
    monkeypatch.setattr(demo, "_REPO", tmp_path / "no_clone")
    monkeypatch.setattr(demo, "_installed_configs", lambda: installed)
    assert demo.find_config() == installed / "demo.yaml"
    assert demo.find_config("common/amp.yaml") == installed / "common" / "amp.yaml"
    with pytest.raises(
        FileNotFoundError, match=r"nope\.yaml: preset not found.*demo\.yaml, stroke_isles\.yaml"
    ):
        demo.find_config("nope.yaml")


def test_the_wheel_ships_every_preset_and_every_subpackage():
    # pyproject lists the packages by hand (configs/ is mapped to medfocal.configs): keep it complete
    import medfocal.demo as demo

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

    root = demo._REPO
    setuptools_cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(root).parts) for p in (root / "medfocal").rglob("__init__.py")}
    assert set(setuptools_cfg["packages"]) == on_disk | {"medfocal.configs"}
    assert setuptools_cfg["package-dir"] == {"medfocal.configs": "configs"}
    patterns = setuptools_cfg["package-data"]["medfocal.configs"]
    shipped = {p for pattern in patterns for p in (root / "configs").glob(pattern)}
    assert shipped == set((root / "configs").rglob("*.yaml")), "a preset would be missing from the wheel"
