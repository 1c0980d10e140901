"""Each layout read from small generated files, and loaded through a datamodule."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_files import lesion_case, write_nifti, write_png

from medfocal.data import (
    CaseFoldersLayout,
    ClassificationDataModule,
    CSVLayout,
    DecathlonLayout,
    ImageFolderLayout,
    MedMNISTLayout,
    PairedFoldersLayout,
    PreprocessingSpec,
    SegmentationDataModule,
    detect_layout,
)


def _first_val_batch(dm):
    dm.setup("fit")
    return next(iter(dm.val_dataloader()))


def test_decathlon_layout(lesion_dataset):
    layout = DecathlonLayout(str(lesion_dataset))
    records = layout.records()
    train = [r for r in records if r["split"] is None]
    test = [r for r in records if r["split"] == "test"]
    assert len(train) == 6 and len(test) == 2
    assert all(Path(r["image"]).is_file() and Path(r["label"]).is_file() for r in train)
    assert layout.class_names() == ["background", "lesion"]
    assert layout.in_channels() == 1
    assert isinstance(detect_layout(lesion_dataset), DecathlonLayout)
    assert isinstance(detect_layout(lesion_dataset / "dataset.json"), DecathlonLayout)


def test_decathlon_nnunet_style_labels(tmp_path, lesion_dataset):
    meta = json.loads((lesion_dataset / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "lesion": 1}
    meta["channel_names"] = meta.pop("modality")
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    layout = DecathlonLayout(str(tmp_path))
    assert layout.class_names() == ["background", "lesion"] and layout.in_channels() == 1


def test_decathlon_missing_json(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset\.json"):
        DecathlonLayout(str(tmp_path))


def test_csv_layout_multimodal_channels(tmp_path):
    rows = []
    for i in range(4):
        image, label = lesion_case(seed=i)
        write_nifti(tmp_path / f"c{i}_flair.nii.gz", image)
        write_nifti(tmp_path / f"c{i}_t1c.nii.gz", -image)
        write_nifti(tmp_path / f"c{i}_seg.nii.gz", label, dtype=np.uint8)
        split = "val" if i == 3 else "train"
        rows.append(
            {
                "flair": f"c{i}_flair.nii.gz",
                "t1c": f"c{i}_t1c.nii.gz",
                "seg": f"c{i}_seg.nii.gz",
                "split": split,
            }
        )
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    layout = CSVLayout(str(manifest), image=["flair", "t1c"], label="seg")
    records = layout.records()
    assert len(records) == 4 and isinstance(records[0]["image"], list) and records[3]["split"] == "val"
    dm = SegmentationDataModule(layout, num_workers=0, class_names=["bg", "a", "b"], check="full")
    batch = _first_val_batch(dm)
    assert dm.in_channels == 2 and tuple(batch["image"].shape) == (1, 2, 20, 18, 12)
    assert len(dm.splits["train"]) == 3 and len(dm.splits["val"]) == 1
    torch.testing.assert_close(batch["image"][0, 1], -batch["image"][0, 0])


def test_csv_layout_missing_column(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("img,label\na.png,0\n")
    with pytest.raises(ValueError, match=r"missing \['image'\]"):
        CSVLayout(str(manifest))


def test_csv_classification_with_class_names(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["image,label"]
    for i in range(12):
        write_png(tmp_path / f"{i}.png", rng.integers(0, 255, (12, 12)))
        lines.append(f"{i}.png,{'benign' if i % 3 else 'malignant'}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    dm = ClassificationDataModule(
        str(tmp_path / "m.csv"), preprocessing=PreprocessingSpec(modality="grey"), num_workers=0, batch_size=4
    )
    dm.setup("fit")
    assert dm.class_names == ["benign", "malignant"] and dm.in_channels == 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 12, 12) and batch["label"].dtype == torch.long
    assert dm.class_counts().sum() == len(dm.splits["train"])


def test_paired_folders_layout(lesion_images_2d):
    layout = detect_layout(lesion_images_2d)
    assert isinstance(layout, PairedFoldersLayout) and len(layout.records()) == 8
    dm = SegmentationDataModule(
        layout,
        preprocessing=PreprocessingSpec(modality="rgb", label_map={255: 1}),
        roi_size=[32, 32],
        num_workers=0,
        batch_size=2,
        class_names=["background", "lesion"],
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["label"].shape == (4, 1, 32, 32)
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0}
    assert dm.spatial_dims == 2 and dm.in_channels == 3


def test_paired_folders_with_different_names_and_fov(tmp_path):
    """DRIVE-like: 21_training.tif + 21_manual1.gif + 21_training_mask.gif."""
    from PIL import Image

    for case in ("21", "22"):
        write_png(tmp_path / "images" / f"{case}_training.png", np.zeros((10, 12, 3)))
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "images" / f"{case}_training.tif")
        (tmp_path / "images" / f"{case}_training.png").unlink()
        (tmp_path / "manual").mkdir(exist_ok=True)
        (tmp_path / "fov").mkdir(exist_ok=True)
        Image.fromarray(np.full((10, 12), 255, np.uint8)).save(tmp_path / "manual" / f"{case}_manual1.gif")
        Image.fromarray(np.full((10, 12), 255, np.uint8)).save(tmp_path / "fov" / f"{case}_training_mask.gif")
    layout = PairedFoldersLayout(
        str(tmp_path / "images"),
        str(tmp_path / "manual"),
        image_suffix="_training.tif",
        mask_suffix="_manual1.gif",
        fov_dir=str(tmp_path / "fov"),
        fov_suffix="_training_mask.gif",
    )
    records = layout.records()
    assert [r["case"] for r in records] == ["21", "22"]
    assert records[0]["label"].endswith("21_manual1.gif") and records[0]["fov"].endswith(
        "21_training_mask.gif"
    )
    without_suffix = PairedFoldersLayout(str(tmp_path / "images"), str(tmp_path / "manual"))
    with pytest.raises(
        FileNotFoundError, match=r"no mask named <case>\.<ext> for images \['21_training.tif'"
    ):
        without_suffix.records()


def test_case_folders_layout_stacks_modalities(case_folders):
    layout = CaseFoldersLayout(
        str(case_folders), channels=["Flair*.nii.gz", "T1c*.nii.gz"], label="seg.nii.gz"
    )
    records = layout.records()
    assert len(records) == 3 and len(records[0]["image"]) == 2
    dm = SegmentationDataModule(layout, num_workers=0, val_fraction=0.34, class_names=["bg", "a", "b"])
    batch = _first_val_batch(dm)
    assert batch["image"].shape[1] == 2 and dm.in_channels == 2
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0, 2.0}


def test_case_folders_brain_mask_is_loaded_as_a_region_mask(case_folders):
    """``mask=`` adds each case's mask file; evaluation batches carry it binarised on the image grid."""
    import nibabel as nib

    for case in sorted(case_folders.iterdir()):
        flair = nib.load(case / "Flair_x.nii.gz")
        brain = (np.abs(np.asarray(flair.dataobj)) > 0.5).astype(np.float32) * 7.0  # stored as 0/7
        nib.save(nib.Nifti1Image(brain, flair.affine), case / "brainmask.nii.gz")
    layout = CaseFoldersLayout(
        str(case_folders),
        channels=["Flair*.nii.gz", "T1c*.nii.gz"],
        label="seg.nii.gz",
        mask="brainmask.nii.gz",
    )
    records = layout.records()
    assert all(r["mask"].endswith("brainmask.nii.gz") for r in records)
    dm = SegmentationDataModule(layout, num_workers=0, val_fraction=0.34, class_names=["bg", "a", "b"])
    batch = _first_val_batch(dm)
    case = case_folders / str(batch["case"][0])
    expected = np.abs(np.asarray(nib.load(case / "Flair_x.nii.gz").dataobj)) > 0.5
    assert batch["mask"].shape == batch["label"].shape
    np.testing.assert_array_equal(batch["mask"][0, 0].numpy() > 0, expected)
    assert set(torch.unique(batch["mask"]).tolist()) == {0.0, 1.0}
    (case / "brainmask.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"no file matches 'brainmask\.nii\.gz'"):
        layout.records()


def test_case_folders_missing_pattern_names_case(case_folders):
    (case_folders / "pat1" / "T1c_x.nii.gz").unlink()
    layout = CaseFoldersLayout(
        str(case_folders), channels=["Flair*.nii.gz", "T1c*.nii.gz"], label="seg.nii.gz"
    )
    with pytest.raises(FileNotFoundError, match=r"pat1: no file matches 'T1c\*.nii.gz'"):
        layout.records()


def test_image_folder_layout(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("benign", 6), ("malignant", 3)):
        for i in range(count):
            write_png(tmp_path / name / f"{i}.png", rng.integers(0, 255, (8, 8, 3)))
    layout = detect_layout(tmp_path)
    assert isinstance(layout, ImageFolderLayout)
    assert layout.class_names() == ["benign", "malignant"]
    labels = sorted(r["label"] for r in layout.records())
    assert labels == [0] * 6 + [1] * 3
    dm = ClassificationDataModule(layout, num_workers=0, batch_size=3, val_fraction=0.34)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape == (3, 3, 8, 8)
    assert dm.class_counts().tolist() == [4.0, 2.0]


@pytest.mark.parametrize("label_shape", ["N", "N1"])
def test_medmnist_layout_accepts_both_label_shapes(tmp_path, label_shape):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 6), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)
        labels = rng.integers(0, 3, n).astype(np.uint8)
        arrays[f"{split}_labels"] = labels if label_shape == "N" else labels[:, None]
    np.savez(tmp_path / "m.npz", **arrays)
    layout = MedMNISTLayout(str(tmp_path / "m.npz"))
    assert layout.spatial_dims() == 2 and layout.in_channels() == 3
    dm = ClassificationDataModule(str(tmp_path / "m.npz"), num_workers=0, batch_size=5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (5, 3, 28, 28) and batch["label"].shape == (5,)
    val = next(iter(dm.val_dataloader()))["image"]  # no augmentation: exactly uint8 / 255
    assert type(val) is torch.Tensor  # plain tensors: no MetaTensor affines in classification batches
    assert float(val.min()) >= 0.0 and float(val.max()) <= 1.0
    expected = np.bincount(arrays["train_labels"].reshape(-1), minlength=3)
    assert dm.class_counts().tolist() == expected.tolist()
    assert len(dm.splits["val"]) == 6 and len(dm.splits["test"]) == 4


def test_medmnist_multi_label(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (20, 4)).astype(np.uint8)
    np.savez(
        tmp_path / "chest.npz",
        train_images=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
        train_labels=labels,
    )
    dm = ClassificationDataModule(str(tmp_path / "chest.npz"), num_workers=0, batch_size=4, val_fraction=0.25)
    dm.setup("fit")
    assert dm.multi_label and dm.num_classes == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].shape == (4, 4) and batch["label"].dtype == torch.float32
    train_rows = [int(r["case"].split("_")[1]) for r in dm.splits["train"]]
    assert dm.class_counts().tolist() == labels[train_rows].sum(0).tolist()
    with pytest.raises(ValueError, match="balanced_sampler: needs single-label"):
        ClassificationDataModule(
            str(tmp_path / "chest.npz"), num_workers=0, balanced_sampler=True
        ).train_dataloader()


def test_medmnist_3d(tmp_path):
    from medfocal.synthetic import make_classification_npz

    path = make_classification_npz(
        tmp_path / "v.npz", n=(12, 4, 4), shape=(8, 8, 8), n_classes=2, imbalance=(0.7, 0.3)
    )
    dm = ClassificationDataModule(str(path), num_workers=0, batch_size=4)
    dm.setup("fit")
    assert dm.spatial_dims == 3 and dm.in_channels == 1
    assert next(iter(dm.train_dataloader()))["image"].shape == (4, 1, 8, 8, 8)


def test_medmnist_missing_arrays(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"expected arrays \['train_images', 'train_labels'\]"):
        MedMNISTLayout(str(tmp_path / "bad.npz")).records()
