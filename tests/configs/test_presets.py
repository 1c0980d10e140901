"""Every preset in configs/ runs `medfocal fit --trainer.fast_dev_run=true` on generated data of its layout.

The presets are used as written; only the data path and the sizes (image size, patch size, batch size,
network width) are overridden on the command line, as a user would for a quick check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from medfocal.cli import main
from medfocal.synthetic import make_classification_npz, make_lesion_dataset, make_lesion_images_2d

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
FAST = ["--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", "--trainer.devices=1"]
SMALL_3D = ["--data.init_args.preprocessing.spacing=[1.5,1.5,2.0]", "--data.init_args.num_workers=0"]


def _decathlon(root: Path, n_channels: int = 1) -> list[str]:
    path = make_lesion_dataset(
        root / "lesions", n_train=4, n_test=1, shape=(32, 32, 24), n_channels=n_channels
    )
    return [f"--data.init_args.layout={path}", "--data.init_args.roi_size=[16,16,16]", *SMALL_3D]


def demo(root: Path) -> list[str]:
    return _decathlon(root)


def lesion_isic(root: Path) -> list[str]:
    path = make_lesion_images_2d(root / "isic", n=6, size=(64, 64))
    return [
        f"--data.init_args.layout.init_args.images_dir={path / 'images'}",
        f"--data.init_args.layout.init_args.masks_dir={path / 'masks'}",
        "--data.init_args.layout.init_args.mask_suffix=.png",
        "--data.init_args.preprocessing.resize=[32,32]",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
        "--model.init_args.model.init_args.channels=[4,8,16,32,64]",
    ]


def stroke_isles(root: Path) -> list[str]:
    return [
        *_decathlon(root, n_channels=3),
        "--data.init_args.roi_size=[32,32,16]",  # strided stem + 4 levels: sizes divisible by 16
        "--model.init_args.model.init_args.init_features=4",
        "--model.init_args.model.init_args.growth_rate=4",
        "--data.init_args.batch_size=1",
    ]


def nodule_seg_ct(root: Path) -> list[str]:
    return [
        *_decathlon(root),
        "--model.init_args.model.init_args.channels=[4,8,16,32]",
        "--data.init_args.batch_size=1",
    ]


def _npz(root: Path, **kwargs) -> Path:
    return make_classification_npz(root / "data.npz", n=(24, 8, 8), **kwargs)


def nodule_cls_ct(root: Path) -> list[str]:
    path = _npz(root, shape=(16, 16, 16), n_classes=2, imbalance=(0.8, 0.2))
    return [
        f"--data.init_args.layout={path}",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ]


def histology_breakhis(root: Path) -> list[str]:
    from PIL import Image

    arrays = np.load(_npz(root, shape=(32, 32), n_classes=2, imbalance=(0.3, 0.7), rgb=True))
    tree = root / "breakhis"
    for i, (image, label) in enumerate(zip(arrays["train_images"], arrays["train_labels"][:, 0])):
        folder = tree / ("benign", "malignant")[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"SOB_{i:03d}.png")
    return [
        f"--data.init_args.layout={tree}",
        "--data.init_args.preprocessing.resize=[32,32]",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        "--model.init_args.model.init_args.fusion_features=16",
    ]


def blood_cells(root: Path) -> list[str]:
    path = _npz(root, shape=(32, 32), n_classes=8, imbalance=(8, 4, 2, 2, 1, 1, 1, 1), rgb=True)
    return [
        f"--data.init_args.layout={path}",
        "--data.init_args.preprocessing.resize=[32,32]",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        "--model.init_args.model.init_args.init_features=8",
        "--model.init_args.model.init_args.growth_rate=4",
    ]


def retina_lesion(root: Path) -> list[str]:
    path = _npz(root, shape=(28, 28), n_classes=5, imbalance=(5, 2, 2, 1, 1), rgb=True)
    return [
        f"--data.init_args.layout={path}",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ]


def cells_bccd(root: Path) -> list[str]:
    from medfocal.synthetic import make_box_images_2d

    path = make_box_images_2d(root / "voc", n=(4, 2, 0), size=(96, 80), classes=("RBC", "WBC", "Platelets"))
    return [f"--data.init_args.layout={path}"]


def nodule_det_ct(root: Path) -> list[str]:
    from medfocal.synthetic import make_nodule_volumes

    path = make_nodule_volumes(root / "ct", n=(1, 1, 0), shape=(40, 40, 20))
    return [
        f"--data.init_args.layout={path}/dataset.json",
        "--data.init_args.affine_lps_to_ras=false",
        "--data.init_args.num_samples=1",
        "--data.init_args.patch_size=[48,48,24]",
        "--model.init_args.val_roi_size=null",
    ]


PRESETS: dict[str, Callable[[Path], list[str]]] = {
    "cells_bccd": cells_bccd,
    "nodule_det_ct": nodule_det_ct,
    "demo": demo,
    "lesion_isic": lesion_isic,
    "stroke_isles": stroke_isles,
    "nodule_seg_ct": nodule_seg_ct,
    "nodule_cls_ct": nodule_cls_ct,
    "histology_breakhis": histology_breakhis,
    "blood_cells": blood_cells,
    "retina_lesion": retina_lesion,
}


def test_every_preset_is_tested():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(PRESETS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_fast_dev_run(name, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    overrides = PRESETS[name](tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code = main(["fit", "--config", str(CONFIGS / f"{name}.yaml"), *overrides, *FAST])
    assert code == 0
    # fast_dev_run writes no logs, configs or checkpoints
    assert not [p for p in work.rglob("*") if p.is_file()]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_header_documents_layout_and_dataset(name):
    header = [line for line in (CONFIGS / f"{name}.yaml").read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header).lower()
    assert "layout" in text
    assert any(year in text for year in ("2011", "2016", "2017", "2018", "2019", "2020", "2022", "2023"))


CLASSIFICATION_PRESETS = ("nodule_cls_ct", "retina_lesion", "blood_cells", "histology_breakhis")


@pytest.mark.parametrize("name", CLASSIFICATION_PRESETS)
def test_classification_presets_select_on_validation_auc(name):
    """Issue 20 item 3: checkpoints chosen on val/auroc (threshold-free), not on balanced accuracy."""
    import yaml

    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert config["model"]["init_args"]["monitor"] == "val/auroc"
    callbacks = [c["class_path"] for c in config["trainer"].get("callbacks") or []]
    binary = config["model"]["init_args"]["model"]["init_args"]["out_channels"] == 2
    # the threshold rule on the binary preset only (histology_breakhis may be switched to 8 subtypes)
    assert ("medfocal.tasks.OperatingPoint" in callbacks) == (name == "nodule_cls_ct")
    if name == "nodule_cls_ct":
        assert binary


@pytest.mark.slow
def test_nodule_cls_ct_fit_stores_an_operating_point_and_logs_the_three_figures(tmp_path, monkeypatch):
    """One short epoch of the binary preset: the best checkpoint (on val/auroc) carries a Youden point
    in its card, and validation logged ACC, AUC and balanced ACC."""
    import csv

    torch.set_num_threads(1)
    overrides = nodule_cls_ct(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    shrink = [
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
    ]
    assert main(["fit", "--config", str(CONFIGS / "nodule_cls_ct.yaml"), *overrides, *shrink]) == 0
    best = [p for p in work.rglob("*.ckpt") if p.name != "last.ckpt"]
    assert best, sorted(str(p) for p in work.rglob("*"))
    card = torch.load(best[0], weights_only=True)["medfocal"]
    assert card["operating_point"]["rule"] == "youden" and 0.0 < card["operating_point"]["threshold"] <= 1.0
    assert card["operating_point"]["validation"]["n"] == 8
    metrics = next(work.rglob("metrics.csv"))
    header = next(csv.reader(metrics.open()))
    assert {"val/accuracy", "val/auroc", "val/balanced_accuracy"} <= set(header)
