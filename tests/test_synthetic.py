"""The generated datasets have the properties the tests and the demo rely on."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medfocal.synthetic import (
    make_classification_npz,
    make_lesion_dataset,
    make_lesion_images_2d,
    oblique_affine,
)


def test_oblique_affine_has_spacing_and_is_not_ras():
    aff = oblique_affine((1.2, 0.9, 2.5))
    np.testing.assert_allclose(np.linalg.norm(aff[:3, :3], axis=0), [1.2, 0.9, 2.5], rtol=1e-6)
    assert nib.aff2axcodes(aff) != ("R", "A", "S")
    assert np.linalg.det(aff[:3, :3]) < 0  # the x flip makes it a left-handed (LPS-like) frame


@pytest.mark.parametrize("n_channels,n_classes", [(1, 2), (2, 3)])
def test_lesion_dataset_layout_geometry_and_imbalance(tmp_path, n_channels, n_classes):
    root = make_lesion_dataset(
        tmp_path, n_train=3, n_test=1, shape=(32, 32, 20), n_channels=n_channels, n_classes=n_classes, seed=3
    )
    meta = json.loads((root / "dataset.json").read_text())
    assert len(meta["training"]) == 3 and len(meta["test"]) == 1
    assert len(meta["labels"]) == n_classes and len(meta["modality"]) == n_channels
    for item in meta["training"]:
        img, lbl = nib.load(root / item["image"]), nib.load(root / item["label"])
        expected = (32, 32, 20) if n_channels == 1 else (32, 32, 20, n_channels)
        assert img.shape == expected and lbl.shape == (32, 32, 20)
        np.testing.assert_allclose(img.affine, lbl.affine)
        np.testing.assert_allclose(img.header.get_zooms()[:3], (1.2, 0.9, 2.5), rtol=1e-5)
        labels = np.asarray(lbl.dataobj)
        assert lbl.get_data_dtype() == np.uint8
        assert 0 < (labels > 0).mean() < 0.02
        assert set(np.unique(labels)) <= set(range(n_classes))
        # lesions are brighter than the rest in channel 0: the task is learnable
        data = np.asarray(img.dataobj)
        ch0 = data if n_channels == 1 else data[..., 0]
        assert ch0[labels > 0].mean() > ch0[labels == 0].mean() + 100
    assert (root / "labelsTs" / "case_003.nii.gz").exists()


def test_lesion_dataset_is_reproducible(tmp_path):
    a = make_lesion_dataset(tmp_path / "a", n_train=1, n_test=0, shape=(24, 24, 16), seed=5)
    b = make_lesion_dataset(tmp_path / "b", n_train=1, n_test=0, shape=(24, 24, 16), seed=5)
    la = np.asarray(nib.load(a / "labelsTr/case_000.nii.gz").dataobj)
    lb = np.asarray(nib.load(b / "labelsTr/case_000.nii.gz").dataobj)
    np.testing.assert_array_equal(la, lb)


def test_nnunet_layout_writes_one_file_per_channel(tmp_path):
    root = make_lesion_dataset(
        tmp_path, n_train=1, n_test=1, shape=(24, 24, 16), n_channels=2, layout="nnunet"
    )
    assert (root / "imagesTs" / "case_001_0000.nii.gz").exists()
    assert (root / "imagesTs" / "case_001_0001.nii.gz").exists()
    with pytest.raises(ValueError, match="layout"):
        make_lesion_dataset(tmp_path, layout="bids")


def test_images_2d_and_npz(tmp_path):
    from PIL import Image

    root = make_lesion_images_2d(tmp_path / "d", n=2, size=(40, 48))
    img = np.asarray(Image.open(root / "images/case_000.png"))
    mask = np.asarray(Image.open(root / "masks/case_000.png"))
    assert img.shape == (40, 48, 3) and mask.shape == (40, 48)
    assert set(np.unique(mask)) == {0, 255}
    path = make_classification_npz(tmp_path / "t.npz", n=(50, 10, 10), n_classes=2, imbalance=(0.9, 0.1))
    data = np.load(path)
    assert data["train_images"].shape == (50, 28, 28) and data["train_labels"].shape == (50, 1)
    counts = np.bincount(data["train_labels"].ravel())
    assert counts[0] > counts[1] > 0
    with pytest.raises(ValueError, match="imbalance"):
        make_classification_npz(tmp_path / "u.npz", n_classes=3, imbalance=(0.5, 0.5))
