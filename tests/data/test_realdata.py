"""The real datasets of ../shared/data load through the layouts and check-data describes them.

Skipped (saying so) when the folder is absent; each test reads one or two cases to stay fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medfocal.data import (
    CaseFoldersLayout,
    ClassificationDataModule,
    PairedFoldersLayout,
    PreprocessingSpec,
    SegmentationDataModule,
    validate_records,
)
from medfocal.data.checks import main_check_data

pytestmark = pytest.mark.realdata

BRATS_NAMES = ["background", "necrosis", "oedema", "non_enhancing", "enhancing"]


def _need(path: Path) -> Path:
    if not path.exists():
        # justified: real data is optional (../shared/data or $MEDFOCAL_DATA); skip and say so
        pytest.skip(f"{path} not present")
    return path


@pytest.mark.parametrize(
    ("name", "channels", "classes", "dims"),
    [("retinamnist.npz", 3, 5, 2), ("BreastMNIST.npz", 1, 2, 2), ("adrenalmnist3d.npz", 1, 2, 3)],
)
def test_medmnist(shared_data, name, channels, classes, dims):
    dm = ClassificationDataModule(str(_need(shared_data / "medmnist" / name)), num_workers=0, batch_size=4)
    dm.setup("fit")
    assert (dm.in_channels, dm.num_classes, dm.spatial_dims) == (channels, classes, dims)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[1] == channels and batch["label"].dtype == torch.long
    assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 1.0
    if name == "retinamnist.npz":
        assert dm.class_counts().tolist() == [486, 128, 206, 194, 66]


def test_medmnist_check_data(shared_data, capsys):
    assert main_check_data([str(_need(shared_data / "medmnist" / "BreastMNIST.npz"))]) == 0
    out = capsys.readouterr().out
    assert "class counts" in out and "no problems found" in out


def test_brats_case_folders(shared_data):
    root = _need(shared_data / "brats2013")
    layout = CaseFoldersLayout(
        str(root / "train"),
        channels=["Flair*.nii.gz", "T1c*.nii.gz"],
        label="OTMultiClass.nii.gz",
        val_root=str(root / "validation"),
    )
    # generic preset: the MRI z-score of 2 x 9M voxels alone takes seconds on a busy CI core
    dm = SegmentationDataModule(
        layout, preprocessing=PreprocessingSpec(orientation="RAS"), class_names=BRATS_NAMES, num_workers=0
    )
    assert len(dm.splits["train"]) == 2 and len(dm.splits["val"]) == 2
    records = dm.splits["val"][:1]
    (summary,), problems = validate_records(
        records, dm.preprocessing, num_classes=5, in_channels=2, full=False
    )
    assert problems == [] and summary.shape == (240, 240, 155) and summary.spacing == (1.0, 1.0, 1.0)
    item = dm.val_transform()(dict(records[0]))
    assert item["image"].shape == (2, 240, 240, 155) and item["label"].shape == (1, 240, 240, 155)
    fractions = torch.bincount(item["label"].flatten().long(), minlength=5) / item["label"].numel()
    assert 0.005 < 1 - float(fractions[0]) < 0.03  # foreground 0.7-2.4%
    assert set(torch.unique(item["label"]).tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def _drive(shared_data) -> PairedFoldersLayout:
    root = _need(shared_data / "drive" / "training")
    return PairedFoldersLayout(
        str(root / "images"),
        str(root / "1st_manual"),
        image_suffix="_training.tif",
        mask_suffix="_manual1.gif",
        fov_dir=str(root / "mask"),
        fov_suffix="_training_mask.gif",
    )


def test_drive_paired_folders(shared_data):
    layout = _drive(shared_data)
    records = layout.records()
    assert len(records) == 20 and all("fov" in r for r in records)
    spec = PreprocessingSpec(modality="rgb", label_map={255: 1})
    (summary,), problems = validate_records(records[:1], spec, num_classes=2, in_channels=3)
    assert problems == [] and summary.shape == (565, 584)
    assert 0.05 < summary.label_counts[1] / summary.label_counts.sum() < 0.2
    raw, _ = validate_records(
        records[:1], PreprocessingSpec(modality="rgb"), num_classes=2, raise_on_error=False
    )
    assert raw[0].label_counts.nonzero()[0].tolist() == [0, 255]  # why DRIVE needs label_map {255: 1}


def test_drive_check_data_from_yaml(shared_data, tmp_path, capsys):
    root = _need(shared_data / "drive" / "training")
    config = f"""
data:
  class_path: medfocal.data.SegmentationDataModule
  init_args:
    layout:
      class_path: medfocal.data.PairedFoldersLayout
      init_args:
        images_dir: {root}/images
        masks_dir: {root}/1st_manual
        image_suffix: _training.tif
        mask_suffix: _manual1.gif
        fov_dir: {root}/mask
        fov_suffix: _training_mask.gif
    preprocessing: {{modality: rgb, label_map: {{255: 1}}}}
    class_names: [background, vessel]
    roi_size: [96, 96]
"""
    (tmp_path / "drive.yaml").write_text(config)
    assert yaml.safe_load(config)["data"]["init_args"]["preprocessing"]["label_map"] == {255: 1}
    assert main_check_data(["--config", str(tmp_path / "drive.yaml"), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "21" in out and "(565, 584)" in out


def test_kvasir_jpeg_masks(shared_data, capsys):
    root = _need(shared_data / "kvasir_seg_sample")
    dm = SegmentationDataModule(
        str(root),
        preprocessing=PreprocessingSpec(modality="rgb", label_threshold=127, resize=(128, 128)),
        class_names=["background", "polyp"],
        num_workers=0,
        val_fraction=0.4,
    )
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (1, 3, 128, 128)
    assert set(torch.unique(batch["label"]).tolist()) == {0.0, 1.0}
    fraction = float(dm.class_counts()[1] / dm.class_counts().sum())
    assert 0.05 < fraction < 0.35  # README: foreground 7-32%


def test_totalseg_ct_through_csv(shared_data, tmp_path, capsys):
    root = _need(shared_data / "totalseg_example")
    manifest = tmp_path / "ct.csv"
    manifest.write_text(f"image,label\n{root}/example_ct_sm.nii.gz,{root}/example_seg.nii.gz\n")
    config = {
        "data": {
            "class_path": "medfocal.data.SegmentationDataModule",
            "init_args": {
                "layout": {"class_path": "medfocal.data.CSVLayout", "init_args": {"csv": str(manifest)}},
                "preprocessing": {"modality": "ct", "window": [-1000, 1000], "spacing": [3.0, 3.0, 3.0]},
                "class_names": [f"label_{i}" for i in range(118)],
                "val_fraction": 0.0,
            },
        }
    }
    (tmp_path / "ct.yaml").write_text(yaml.safe_dump(config))
    assert main_check_data(["--config", str(tmp_path / "ct.yaml")]) == 0
    out = capsys.readouterr().out
    assert "(122, 101, 30)" in out and "(3.0, 3.0, 3.0)" in out
    dm = SegmentationDataModule(
        str(manifest), preprocessing=PreprocessingSpec(modality="ct"), val_fraction=0.0, num_workers=0
    )
    counts = dm.class_counts()
    assert int((counts > 0).sum()) == 42  # background + 41 labels present
    item = dm.val_transform()(dict(dm.splits["train"][0]))
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert np.allclose(np.linalg.norm(item["image"].affine[:3, :3].numpy(), axis=0), 3.0, atol=1e-3)
