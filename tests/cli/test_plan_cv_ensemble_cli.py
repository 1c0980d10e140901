"""`medfocal plan`, `medfocal cv` and `medfocal infer -c A B` (ensembles) through the command line."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medfocal.cli import main
from tests.inference.helpers import save_checkpoint

FAST = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.num_workers=0",
]


def test_plan_writes_a_config_that_fit_runs(lesion_images_2d, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(lesion_images_2d), "-o", "plan.yaml", "--budget", "5"]) == 0
    out = capsys.readouterr().out
    assert "next: medfocal fit --config plan.yaml" in out
    assert (tmp_path / "plan.fingerprint.json").is_file()
    text = (tmp_path / "plan.yaml").read_text()
    assert "medfocal.tasks.SegmentationModule" in text and "# " in text  # every choice has its reason
    assert main(["fit", "--config", "plan.yaml", "--trainer.fast_dev_run=true", *FAST[2:]]) == 0


def test_plan_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nowhere"), "-o", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medfocal plan: error:") and "nowhere" in err[0]
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.slow
def test_cv_runs_every_fold_and_infer_ensembles_them(classification_npz, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(classification_npz), "-o", "plan.yaml"]) == 0
    assert main(["cv", "--config", "plan.yaml", "--folds", "2", "-o", "cv", "--", *FAST]) == 0
    rows = list(csv.DictReader((tmp_path / "cv" / "cv_summary.csv").open()))
    assert [r["fold"] for r in rows[:2]] == ["0", "1"] and rows[2]["fold"] == "mean"
    folds = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())["folds"]
    # the cv folder is an ensemble of the folds' best checkpoints: infer on PNGs of the npz's size
    images = tmp_path / "images"
    images.mkdir()
    data = np.load(classification_npz)
    for i in range(3):
        Image.fromarray(data["test_images"][i]).save(images / f"img{i}.png")
    assert main(["infer", "-c", "cv", "-i", str(images), "-o", "pred"]) == 0
    assert len(list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))) == 3
    assert all(f["best_checkpoint"] for f in folds)


def _conv_ckpt(path, seed: int, class_names: list[str]) -> None:
    torch.manual_seed(seed)
    conv = nn.Conv3d(1, len(class_names), kernel_size=3, padding=1)
    spec = {
        "class_path": "torch.nn.Conv3d",
        "init_args": {"in_channels": 1, "out_channels": len(class_names), "kernel_size": 3, "padding": 1},
    }
    save_checkpoint(path, conv, spec, class_names=class_names)


def test_infer_with_two_checkpoints_averages_and_refuses_mismatched_cards(tmp_path, capsys):
    from medfocal.synthetic import make_lesion_dataset

    lesion_cases = make_lesion_dataset(tmp_path / "data", n_train=0, n_test=2, shape=(24, 20, 12))
    _conv_ckpt(tmp_path / "a.ckpt", 0, ["bg", "lesion"])
    _conv_ckpt(tmp_path / "b.ckpt", 1, ["bg", "lesion"])
    images = lesion_cases / "imagesTs"
    run = ["-i", str(images), "--save-probabilities", "npz", "--overlap", "0.25"]
    for name, ckpts in {"a": ["a.ckpt"], "b": ["b.ckpt"], "ab": ["a.ckpt", "b.ckpt"]}.items():
        assert (
            main(["infer", "-c", *[str(tmp_path / c) for c in ckpts], "-o", str(tmp_path / name), *run]) == 0
        )
    for npz in sorted((tmp_path / "ab").glob("*.npz")):
        mean = (np.load(tmp_path / "a" / npz.name)["probabilities"].astype(np.float32)
                + np.load(tmp_path / "b" / npz.name)["probabilities"].astype(np.float32)) / 2  # fmt: skip
        got = np.load(npz)["probabilities"].astype(np.float32)
        np.testing.assert_allclose(got, mean, atol=2e-3)  # float16 files
    masks = sorted((tmp_path / "ab").glob("*.nii.gz"))
    assert masks and nib.load(masks[0]).shape == nib.load(sorted(images.glob("*.nii.gz"))[0]).shape

    _conv_ckpt(tmp_path / "c.ckpt", 2, ["bg", "tumour"])
    capsys.readouterr()
    code = main(
        ["infer", "-c", str(tmp_path / "a.ckpt"), str(tmp_path / "c.ckpt"), "-o", str(tmp_path / "x"), *run]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "class_names differs" in err and "a.ckpt" in err and "c.ckpt" in err


def test_plan_help_names_the_baseline_config():
    from medfocal.cli.plan import parser
    from medfocal.presets import find_config

    assert "--config plan.yaml --config baselines/unet_dicece" in " ".join(parser().format_help().split())
    assert find_config("baselines/unet_dicece.yaml").is_file()
