"""Datamodules: contract attributes, batches, class counts, seeded/stratified splits, sampler, caching."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medfocal.data import (
    Augmentation,
    ClassificationDataModule,
    PreprocessingSpec,
    SegmentationDataModule,
    class_balanced_sampler,
    split_indices,
)


def _seg(lesion_dataset, **kwargs):
    kwargs.setdefault("num_workers", 0)
    return SegmentationDataModule(str(lesion_dataset), **kwargs)


def test_segmentation_contract_attributes_and_batches(lesion_dataset):
    dm = _seg(
        lesion_dataset,
        preprocessing=PreprocessingSpec(modality="mri", spacing=(1.5, 1.5, 2.5)),
        roi_size=[16, 16, 8],
        num_samples=2,
        batch_size=2,
    )
    dm.setup("fit")
    assert dm.class_names == ["background", "lesion"] and dm.num_classes == 2
    assert dm.in_channels == 1 and dm.spatial_dims == 3 and dm.roi_size == (16, 16, 8)
    assert dm.preprocessing.orientation == "RAS"
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 16, 16, 8) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 1, 16, 16, 8)
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[:2] == (1, 1) and val["label"].shape[1] == 1
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 6
    assert len(dm.splits["test"]) == 2


def test_segmentation_label_classes_crop(lesion_dataset):
    dm = _seg(lesion_dataset, roi_size=[8, 8, 8], crop="label_classes", class_ratios=[1, 3], num_samples=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].shape == (8, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="crop: expected"):
        _seg(lesion_dataset, crop="center")


def test_segmentation_class_counts_match_label_files(lesion_dataset, tmp_path):
    dm = _seg(lesion_dataset, cache_dir=str(tmp_path / "cache"))
    counts = dm.class_counts()
    expected = np.zeros(2)
    for record in dm.splits["train"]:
        data = np.asarray(nib.load(record["label"]).dataobj).astype(np.int64)
        expected += np.bincount(data.reshape(-1), minlength=2)
    assert counts.dtype == torch.float32 and counts.tolist() == expected.tolist()
    cached = list((tmp_path / "cache").glob("class_counts_*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == expected.tolist()
    again = _seg(lesion_dataset, cache_dir=str(tmp_path / "cache"))
    assert again.class_counts().tolist() == expected.tolist()


def test_class_counts_reject_undeclared_labels(lesion_dataset):
    dm = _seg(lesion_dataset, class_names=["background"])
    with pytest.raises(ValueError, match=r"label values \[1\] outside the classes \['background'\]"):
        dm.class_counts()


def test_split_is_seeded_and_deterministic(lesion_dataset):
    cases = lambda dm: [r["case"] for r in dm.splits["val"]]  # noqa: E731
    assert cases(_seg(lesion_dataset, seed=3)) == cases(_seg(lesion_dataset, seed=3))
    seeds = {tuple(cases(_seg(lesion_dataset, seed=s))) for s in range(6)}
    assert len(seeds) > 1


def test_kfold_partitions_all_cases(lesion_dataset):
    folds = [_seg(lesion_dataset, fold=k, num_folds=3) for k in range(3)]
    val_cases = [r["case"] for dm in folds for r in dm.splits["val"]]
    assert sorted(val_cases) == [f"case_{i:03d}" for i in range(6)]
    for dm in folds:
        assert not {r["case"] for r in dm.splits["val"]} & {r["case"] for r in dm.splits["train"]}


def test_split_indices_stratified():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    train, val = split_indices(100, val_fraction=0.2, seed=1, stratify=labels)
    assert len(val) == 20 and not set(train) & set(val)
    assert np.bincount(labels[val]).tolist() == [16, 3, 1]
    again = split_indices(100, val_fraction=0.2, seed=1, stratify=labels)
    assert np.array_equal(val, again[1])


def test_split_indices_stratified_kfold():
    labels = np.array([0] * 20 + [1] * 5)
    for fold in range(5):
        _, val = split_indices(25, seed=0, fold=fold, num_folds=5, stratify=labels)
        assert np.bincount(labels[val]).tolist() == [4, 1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"fold": 5, "num_folds": 5}, "fold"),
    ],
)
def test_split_indices_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_indices(10, **kwargs)


def test_classification_split_is_stratified(tmp_path):
    from medfocal.synthetic import make_classification_npz

    path = make_classification_npz(tmp_path / "c.npz", n=(100, 1, 1), imbalance=(0.7, 0.2, 0.1))
    arrays = np.load(path)
    np.savez(tmp_path / "noval.npz", train_images=arrays["train_images"], train_labels=arrays["train_labels"])
    dm = ClassificationDataModule(str(tmp_path / "noval.npz"), num_workers=0, val_fraction=0.2, seed=0)
    labels = arrays["train_labels"].reshape(-1)
    val = np.array([r["label"] for r in dm.splits["val"]])
    expected = np.bincount(labels, minlength=3) * 0.2
    assert np.all(np.abs(np.bincount(val, minlength=3) - expected) <= 1.0)
    assert dm.class_counts().sum() == 80


def test_balanced_sampler_draws_classes_evenly(classification_npz):
    dm = ClassificationDataModule(
        str(classification_npz),
        num_workers=0,
        balanced_sampler=True,
        batch_size=60,
        augmentation=Augmentation(flip_prob=0, rot90_prob=0, affine_prob=0, noise_prob=0),
    )
    dm.setup("fit")
    labels = torch.cat([b["label"] for b in dm.train_dataloader()])
    share = torch.bincount(labels, minlength=3).float() / len(labels)
    assert torch.all((share - 1 / 3).abs() < 0.15), share
    plain = class_balanced_sampler([0, 0, 0, 1], num_samples=4000)
    drawn = np.bincount(np.array([0, 0, 0, 1])[list(plain)], minlength=2) / 4000
    assert abs(drawn[1] - 0.5) < 0.05


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_caching_modes(lesion_dataset, tmp_path, cache):
    """A cached split no longer reads its files: after one pass they can be deleted (not so uncached)."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(lesion_dataset, root)
    dm = _seg(root, cache=cache, cache_dir=str(tmp_path / "p"), roi_size=[8, 8, 8], batch_size=1)
    dm.setup("fit")
    first = [b["image"] for b in dm.val_dataloader()]
    for path in (root / "imagesTr").glob("*.nii.gz"):
        path.unlink()
    if cache == "none":
        with pytest.raises(RuntimeError, match="LoadImaged"):
            next(iter(dm.val_dataloader()))
        return
    again = [b["image"] for b in dm.val_dataloader()]
    assert len(again) == len(first) >= 1
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    if cache == "disk":
        assert len(list((tmp_path / "p").glob("*.pt"))) == len(first)


def test_bad_datamodule_arguments(lesion_dataset):
    with pytest.raises(ValueError, match="cache: expected one of"):
        _seg(lesion_dataset, cache="ram")
    with pytest.raises(ValueError, match="needs cache_dir"):
        _seg(lesion_dataset, cache="disk")
    with pytest.raises(ValueError, match="roi_size: expected 3 values"):
        _seg(lesion_dataset, roi_size=[8, 8])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SegmentationDataModule("/no/such/folder")


def test_predict_uses_the_test_split_and_test_refuses_it_without_labels(lesion_dataset, tmp_path):
    import json
    import shutil

    from medfocal.data.errors import DataSplitError

    dm = _seg(lesion_dataset)
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert len(batches) == 2 and "label" not in batches[0]
    # the test split has no labels: `test` cannot score it (it crashed with KeyError 'label')
    with pytest.raises(DataSplitError, match=r"the test split's 2 case\(s\) have no labels.*medfocal infer"):
        _seg(lesion_dataset).setup("test")
    # with one labelled test case, only that case is scored
    root = tmp_path / "copy"
    shutil.copytree(lesion_dataset, root)
    meta = json.loads((root / "dataset.json").read_text())
    first = meta["test"][0]
    meta["test"][0] = {"image": first, "label": first.replace("imagesTs", "labelsTs")}
    (root / "dataset.json").write_text(json.dumps(meta))
    dm = _seg(root)
    with pytest.warns(UserWarning, match=r"scoring the 1 labelled test case\(s\); 1 test case\(s\) have no"):
        dm.setup("test")
    batches = list(dm.test_dataloader())
    assert len(batches) == 1 and batches[0]["label"].shape == batches[0]["image"].shape


def test_lightning_cli_builds_datamodule_from_yaml(lesion_dataset):
    from jsonargparse import ArgumentParser
    from pytorch_lightning import LightningDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    config = {
        "class_path": "medfocal.data.SegmentationDataModule",
        "init_args": {
            "layout": {
                "class_path": "medfocal.data.DecathlonLayout",
                "init_args": {"root": str(lesion_dataset)},
            },
            "preprocessing": {"modality": "ct", "window": [-100, 200], "spacing": [2, 2, 2]},
            "augmentation": {"flip_prob": 0.1},
            "roi_size": [16, 16, 16],
            "num_workers": 0,
        },
    }
    cfg = parser.parse_args([f"--data={json.dumps(config)}"])
    dm = parser.instantiate(cfg).data
    assert dm.preprocessing.window == (-100.0, 200.0) and dm.augmentation.flip_prob == 0.1
    assert dm.roi_size == (16, 16, 16) and dm.num_classes == 2


def test_region_masks_are_loaded_on_evaluation_splits(tmp_path):
    """A DRIVE-like paired-folder set with field-of-view masks: validation batches carry ``fov`` as a
    binary tensor on the image grid (nearest, not normalised), training batches do not need it."""
    from PIL import Image

    from medfocal.data import PairedFoldersLayout

    rng = np.random.default_rng(0)
    for sub in ("images", "manual", "fov"):
        (tmp_path / sub).mkdir()
    fovs = {}
    for case in ("21", "22", "23", "24", "25"):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{case}_training.tif"
        )
        vessel = (rng.random((20, 24)) < 0.2).astype(np.uint8) * 255
        Image.fromarray(vessel).save(tmp_path / "manual" / f"{case}_manual1.gif")
        yy, xx = np.mgrid[:20, :24]
        fov = (((yy - 10) ** 2 + (xx - 12) ** 2) < (6 + int(case) % 4) ** 2).astype(np.uint8) * 255
        Image.fromarray(fov).save(tmp_path / "fov" / f"{case}_training_mask.gif")
        fovs[case] = fov
    layout = PairedFoldersLayout(
        str(tmp_path / "images"),
        str(tmp_path / "manual"),
        image_suffix="_training.tif",
        mask_suffix="_manual1.gif",
        fov_dir=str(tmp_path / "fov"),
        fov_suffix="_training_mask.gif",
    )
    dm = SegmentationDataModule(
        layout,
        # PIL writes these GIFs in palette mode (indices 0/1, DRIVE's own are 0/255): threshold 0.5 fits both
        preprocessing=PreprocessingSpec(modality="rgb", spatial_dims=2, label_threshold=0.5),
        class_names=["background", "vessel"],
        roi_size=[16, 16],
        val_fraction=0.4,
        batch_size=1,
        val_batch_size=1,
        num_workers=0,
    )
    dm.setup("fit")
    seen = 0
    for batch in dm.val_dataloader():
        case = str(batch["case"][0])
        fov = batch["fov"]
        assert fov.shape == batch["label"].shape == (1, 1, 24, 20)  # PIL reader: (W, H) grid
        assert set(torch.unique(fov).tolist()) == {0.0, 1.0}
        assert 0 < batch["label"].sum() < batch["label"].numel()
        np.testing.assert_array_equal(fov[0, 0].numpy().T, fovs[case] > 0)
        seen += 1
    assert seen == 2
    assert "image" in next(iter(dm.train_dataloader()))
    # splits.json names each case's field of view, for ``medfocal evaluate --roi``
    record = dm.splits_record()
    assert all(
        r["fov"] == str((tmp_path / "fov" / f"{r['case']}_training_mask.gif").resolve())
        for s in ("train", "val")
        for r in record[s]
    )


def test_roi_size_is_checked_once_with_one_message(lesion_dataset):
    from medfocal.data.transforms import check_roi_size, train_transforms

    with pytest.raises(ValueError, match=r"^roi_size: expected 3 values, got \[32, 32\]$"):
        SegmentationDataModule(str(lesion_dataset), roi_size=[32, 32], num_workers=0)
    with pytest.raises(ValueError, match=r"^roi_size: expected 3 values, got \[32, 32\]$"):
        train_transforms(PreprocessingSpec(), ("image", "label"), roi_size=[32, 32])
    with pytest.raises(ValueError, match=r"^roi_size: expected positive sizes, got \[32, 0\]$"):
        check_roi_size([32, 0], 2)
    check_roi_size(None, 2)
    check_roi_size((16, 16), 2)


def test_loader_settings_are_one_checked_object(lesion_dataset):
    from medfocal.data import LoaderConfig

    dm = SegmentationDataModule(str(lesion_dataset), batch_size=3, val_batch_size=2, num_workers=0, seed=5)
    assert dm.loading == LoaderConfig(batch_size=3, val_batch_size=2, num_workers=0, seed=5,
                                      pin_memory=dm.loading.pin_memory)  # fmt: skip
    dm.batch_size = 6  # Lightning's batch-size finder sets this attribute
    assert dm.loading.batch_size == 6 and dm.train_dataloader().batch_size == 6
    with pytest.raises(ValueError, match=r"check: expected one of \('none', 'quick', 'full'\), got 'fast'"):
        LoaderConfig(check="fast")
    with pytest.raises(ValueError, match="cache='disk' needs cache_dir"):
        SegmentationDataModule(str(lesion_dataset), cache="disk")


def test_datamodules_pass_every_loader_argument_through(tmp_path):
    """LoaderConfig.from_arguments(locals()) keeps each datamodule's own value of every shared field."""
    from dataclasses import fields as dc_fields

    from medfocal.data import ClassificationDataModule, SegmentationDataModule
    from medfocal.data.loading import LoaderConfig

    given = {"val_fraction": 0.3, "fold": 1, "num_folds": 4, "seed": 7, "batch_size": 5,
             "val_batch_size": 3, "num_workers": 0, "pin_memory": False, "cache": "disk",
             "cache_rate": 0.5, "cache_dir": str(tmp_path), "check": "full"}  # fmt: skip
    assert set(given) == {f.name for f in dc_fields(LoaderConfig)}
    for cls in (ClassificationDataModule, SegmentationDataModule):
        loading = cls(str(tmp_path), **given).loading
        assert {k: getattr(loading, k) for k in given} == given, cls.__name__


def test_fit_writes_the_split_it_used(lesion_dataset, tmp_path):
    """``splits.json`` in the run folder names the cases of each split (fold 1 of 3 here), so a user can
    infer on exactly the validation cases of a fold."""
    import pytorch_lightning as pl

    dm = _seg(lesion_dataset, fold=1, num_folds=3, check="none")
    dm.trainer = pl.Trainer(default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False)
    dm.setup("fit")
    written = json.loads((tmp_path / "splits.json").read_text())
    assert [r["case"] for r in written["val"]] == [r["case"] for r in dm.splits["val"]]
    assert [r["image"] for r in written["train"]] == [str(r["image"]) for r in dm.splits["train"]]
    cases = sorted(r["case"] for s in ("train", "val") for r in written[s])
    assert cases == [f"case_{i:03d}" for i in range(6)]
    assert [r["case"] for r in written["test"]] == ["case_006", "case_007"]  # imagesTs, unlabelled
    assert not list(tmp_path.glob("*.tmp"))


def test_split_record_of_in_memory_images_names_cases_not_pixels(classification_npz):
    """MedMNIST images live in the npz: the record names each case and its label, never the pixels."""
    dm = ClassificationDataModule(str(classification_npz), num_workers=0, check="none")
    record = dm.splits_record()
    assert [r["case"] for r in record["val"]] == [r["case"] for r in dm.splits["val"]]
    assert all(
        set(r) == {"case", "label"} and isinstance(r["label"], int) for s in record.values() for r in s
    )
    assert len(json.dumps(record)) < 100 * sum(len(s) for s in record.values())
