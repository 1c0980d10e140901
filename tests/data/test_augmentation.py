"""Augmentation: elastic deformation and low-resolution simulation (image and label together, values kept)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose
from scipy.ndimage import gaussian_filter

from medfocal.data import Augmentation, PreprocessingSpec, train_transforms
from medfocal.data.augmentation import augmentation_transforms, elastic_2d_magnitude

OFF = Augmentation(
    flip_prob=0, rot90_prob=0, affine_prob=0, noise_prob=0, contrast_prob=0, intensity_prob=0, colour_prob=0
)


def _aug(**kw) -> Augmentation:
    return Augmentation(**{**vars(OFF), **kw})


def _smooth(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    field = gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma=3.0)
    return ((field - field.min()) / (field.max() - field.min())).astype(np.float32)


def _classes(image: np.ndarray) -> np.ndarray:
    """Three classes from the image: 0 below 0.4, 1 up to 0.6, 2 above (values 0, 1, 2)."""
    return np.digitize(image, [0.4, 0.6]).astype(np.float32)


def test_defaults_leave_elastic_and_lowres_off():
    aug = Augmentation()
    assert (aug.elastic_prob, aug.lowres_prob) == (0.0, 0.0)
    names = {
        type(t).__name__ for t in train_transforms(PreprocessingSpec(spatial_dims=3), load=False).transforms
    }
    assert not names & {"Rand3DElasticd", "Rand2DElasticd", "RandSimulateLowResolutiond"}


def test_elastic_magnitude_none_takes_nnunet_v1_defaults_per_dims():
    (el3,) = augmentation_transforms(_aug(elastic_prob=0.2), ["image"], spatial_dims=3)
    assert el3.rand_3d_elastic.magnitude_range == (0.0, 900.0)
    assert el3.rand_3d_elastic.sigma_range == (9.0, 13.0)
    (el2,) = augmentation_transforms(_aug(elastic_prob=0.2), ["image"], spatial_dims=2)
    grid = el2.rand_2d_elastic.deform_grid
    assert grid.spacing == (22.0, 22.0)
    assert grid.magnitude == pytest.approx((0.0, 200.0 / (11.0 * np.sqrt(12.0 * np.pi))))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_elastic_moves_image_and_label_together_and_keeps_label_values(spatial_dims):
    shape = (48, 48) if spatial_dims == 2 else (32, 32, 24)
    image = _smooth(shape)
    label = _classes(image)
    assert set(np.unique(label)) == {0.0, 1.0, 2.0}
    # strong deformation (sigma 4-5, alpha 400-500 in 3D; ~3-4 px in 2D) so that it shows on small arrays
    aug = _aug(elastic_prob=1.0, elastic_sigma=(4.0, 5.0), elastic_magnitude=(400.0, 500.0))
    tf = Compose(augmentation_transforms(aug, ["image"], ["label"], spatial_dims=spatial_dims))
    assert type(tf.transforms[0]).__name__ == f"Rand{spatial_dims}DElasticd"
    tf.set_random_state(seed=0)
    out = tf({"image": torch.as_tensor(image[None]), "label": torch.as_tensor(label[None])})
    img, lbl = np.asarray(out["image"][0]), np.asarray(out["label"][0])
    assert img.shape == lbl.shape == shape
    # nearest neighbour: only the stored label values, never a blend of them
    assert set(np.unique(lbl)) <= {0.0, 1.0, 2.0}
    moved = float((lbl != label).mean())
    assert moved > 0.05, moved
    # the label still matches the deformed image (only voxels near a class border may differ) ...
    with_deformed = float((_classes(img) == lbl).mean())
    assert with_deformed > 0.93, with_deformed
    # ... and clearly better than the undeformed label does
    assert with_deformed > float((_classes(img) == label).mean()) + 0.03


def test_elastic_2d_offsets_match_the_dense_field_of_nnunet():
    """2D: MONAI's control-point deformation has the displacement spread of nnU-Net's smoothed field."""
    sigma, alpha = 11.0, 200.0
    rng = np.random.default_rng(0)
    dense = [
        alpha * gaussian_filter(rng.uniform(-1, 1, (128, 128)), sigma)[20:-20, 20:-20].std() for _ in range(4)
    ]
    assert elastic_2d_magnitude(sigma, alpha) == pytest.approx(np.mean(dense), rel=0.1)
    yy, xx = np.meshgrid(np.arange(128.0), np.arange(128.0), indexing="ij")
    coords = np.stack([yy, xx]).astype(np.float32)  # two "image" channels holding their own coordinates
    aug = _aug(elastic_prob=1.0, elastic_sigma=(sigma, sigma), elastic_magnitude=(alpha, alpha))
    tf = Compose(augmentation_transforms(aug, ["image"], [], spatial_dims=2))
    tf.set_random_state(seed=0)
    spread = [
        float((np.asarray(tf({"image": torch.as_tensor(coords)})["image"]) - coords)[:, 20:-20, 20:-20].std())
        for _ in range(6)
    ]
    assert 0.7 < np.mean(spread) / np.mean(dense) < 1.3, (np.mean(spread), np.mean(dense))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_lowres_simulation_touches_the_image_only(spatial_dims):
    shape = (32, 24) if spatial_dims == 2 else (16, 12, 8)
    image = torch.as_tensor(np.random.default_rng(1).random((2, *shape), dtype=np.float32))
    label = torch.as_tensor(_classes(image[0].numpy())[None])
    tf = Compose(
        augmentation_transforms(
            _aug(lowres_prob=1.0, lowres_zoom=(0.5, 0.5)), ["image"], ["label"], spatial_dims=spatial_dims
        )
    )
    out = tf({"image": image.clone(), "label": label.clone()})
    # reference: nearest-neighbour downsampling by 0.5 on every axis, linear upsampling back
    small = torch.nn.functional.interpolate(image[None], size=[s // 2 for s in shape], mode="nearest")
    linear = "bilinear" if spatial_dims == 2 else "trilinear"
    expected = torch.nn.functional.interpolate(small, size=list(shape), mode=linear, align_corners=False)[0]
    torch.testing.assert_close(torch.as_tensor(out["image"]), expected)
    assert torch.equal(torch.as_tensor(out["label"]), label)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lowres_zoom": (0.0, 1.0)}, r"lowres_zoom: expected 0 < low <= high <= 1, got \[0.0, 1.0\]"),
        ({"elastic_sigma": (13.0, 9.0)}, r"elastic_sigma: expected \(low, high\) with 0 <= low <= high"),
    ],
)
def test_bad_ranges_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augmentation(**kwargs)
