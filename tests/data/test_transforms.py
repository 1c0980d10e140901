"""Transform presets: output shape, dtype, range, geometry; invertibility; patch sampling ratio."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from _data_files import OBLIQUE, lesion_case, write_nifti, write_png
from monai.transforms import Invertd

from medfocal.data import Augmentation, PreprocessingSpec, inference_transforms, train_transforms

NO_AUG = Augmentation(
    flip_prob=0, rot90_prob=0, affine_prob=0, noise_prob=0, contrast_prob=0, intensity_prob=0, colour_prob=0
)


def test_spec_round_trips_through_json():
    spec = PreprocessingSpec(modality="ct", spacing=[1.5, 1.5, 3], window=[-175, 250], label_map={255: 1})
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["label_map"] == {"255": 1}
    back = PreprocessingSpec.from_dict(data)
    assert back == spec
    assert back.spacing == (1.5, 1.5, 3.0) and back.label_map == {255: 1}


@pytest.mark.parametrize(
    ("modality", "expected"),
    [
        ("ct", {"spatial_dims": 3, "orientation": "RAS", "window": (-1000.0, 1000.0), "reader": None}),
        ("mri", {"spatial_dims": 3, "orientation": "RAS", "window": None}),
        (
            "rgb",
            {"spatial_dims": 2, "orientation": None, "intensity_range": (0.0, 255.0), "reader": "PILReader"},
        ),
        ("histology", {"spatial_dims": 2, "intensity_range": (0.0, 255.0)}),
        ("grey", {"spatial_dims": 2, "intensity_range": (0.0, 255.0)}),
        ("generic", {"spatial_dims": 3, "orientation": None, "intensity_range": None}),
    ],
)
def test_modality_defaults(modality, expected):
    spec = PreprocessingSpec(modality=modality)
    for key, value in expected.items():
        assert getattr(spec, key) == value, key


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"modality": "pet"}, "modality: expected one of"),
        ({"modality": "ct", "spacing": (1.0, 1.0)}, "spacing: expected 3 values"),
        ({"modality": "ct", "window": (100, -100)}, "low < high"),
        ({"spatial_dims": 4}, "expected 2 or 3"),
    ],
)
def test_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PreprocessingSpec(**kwargs)


def test_spec_from_dict_names_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys \\['spacingg'\\]"):
        PreprocessingSpec.from_dict({"spacingg": [1, 1, 1]})


def test_ct_preset_window_orientation_spacing(tmp_path):
    hu = np.linspace(-2000, 2000, 20 * 18 * 12).reshape(20, 18, 12).astype(np.int16)
    path = write_nifti(tmp_path / "ct.nii.gz", hu, dtype=np.int16)
    spec = PreprocessingSpec(modality="ct", spacing=(2.0, 2.0, 3.0), window=(-100, 300))
    out = inference_transforms(spec)({"image": str(path)})["image"]
    assert out.dtype == torch.float32 and out.shape[0] == 1
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    affine = out.affine.numpy()
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [2.0, 2.0, 3.0], atol=1e-4)


def test_mri_preset_zscore_on_nonzero_per_channel(tmp_path):
    image, _ = lesion_case()
    image = np.abs(image) + 1.0
    image[:4] = 0.0  # background outside the "brain"
    paths = [write_nifti(tmp_path / "flair.nii.gz", image), write_nifti(tmp_path / "t1c.nii.gz", 5 * image)]
    out = inference_transforms(PreprocessingSpec(modality="mri"))({"image": [str(p) for p in paths]})["image"]
    assert out.shape == (2, 20, 18, 12)
    for channel in out:
        nonzero = channel[channel != 0]
        assert abs(float(nonzero.mean())) < 1e-4 and abs(float(nonzero.std()) - 1.0) < 1e-2
    assert int((out == 0).sum()) == 2 * 4 * 18 * 12


@pytest.mark.parametrize(
    ("modality", "channels"), [("rgb", 3), ("dermoscopy", 3), ("histology", 3), ("grey", 1)]
)
def test_photo_presets_scale_and_resize(tmp_path, modality, channels):
    rng = np.random.default_rng(0)
    shape = (30, 40, 3) if channels == 3 else (30, 40)
    path = write_png(tmp_path / "x.png", rng.integers(0, 256, shape))
    spec = PreprocessingSpec(modality=modality, resize=(16, 24))
    out = inference_transforms(spec)({"image": str(path)})["image"]
    assert out.shape == (channels, 16, 24) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_label_threshold_binarises_rgb_jpeg_mask(tmp_path):
    from PIL import Image

    mask = np.zeros((24, 24, 3), np.uint8)
    mask[6:18, 6:18] = 255
    path = tmp_path / "mask.jpg"
    Image.fromarray(mask).save(path, quality=60)  # JPEG artefacts: values near 0 and 255
    spec = PreprocessingSpec(modality="rgb", label_threshold=127)
    label = inference_transforms(spec, keys=("label",))({"label": str(path)})["label"]
    assert label.shape == (1, 24, 24)
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}
    assert abs(int(label.sum()) - 144) <= 8


def test_label_map_turns_255_into_1(tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8] = 255
    path = write_png(tmp_path / "m.png", mask)
    label = inference_transforms(PreprocessingSpec(modality="grey", label_map={255: 1}), keys=("label",))(
        {"label": str(path)}
    )["label"]
    assert set(torch.unique(label).tolist()) == {0.0, 1.0} and int(label.sum()) == 64


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def test_inference_transforms_invert_to_input_geometry(tmp_path):
    """Reorient + resample, then invert: the label comes back on the input grid, voxel for voxel."""
    image, _ = lesion_case(shape=(24, 22, 12), n_classes=2)
    label = np.zeros(image.shape, np.uint8)
    label[2:8, 3:9, 1:5] = 1  # off-centre along every axis: any flip moves it off itself
    image += label
    img_path = write_nifti(tmp_path / "img.nii.gz", image)
    lbl_path = write_nifti(tmp_path / "lbl.nii.gz", label, dtype=np.uint8)
    spec = PreprocessingSpec(modality="mri", spacing=(1.5, 1.5, 1.5))
    transform = inference_transforms(spec, keys=("image", "label"))
    item = transform({"image": str(img_path), "label": str(lbl_path)})
    assert item["image"].shape[1:] != image.shape  # it was resampled
    item["pred"] = item["label"].clone()
    inverter = Invertd(keys="pred", transform=transform, orig_keys="label", nearest_interp=True)
    inverted = inverter(item)["pred"]
    assert tuple(inverted.shape[1:]) == image.shape
    np.testing.assert_allclose(inverted.affine.numpy(), OBLIQUE, atol=1e-4)
    back = inverted[0].numpy() > 0.5
    fg = label > 0
    # two nearest-neighbour resamplings move the box's border by a voxel at most; a flipped or
    # permuted inversion puts it elsewhere (or on a grid of another shape)
    assert _dice(back, fg) > 0.8, _dice(back, fg)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_train_transforms_patches_and_labels(tmp_path, spatial_dims):
    image, label = lesion_case(shape=(24, 20, 12))
    if spatial_dims == 2:
        image, label = image[..., 6], label[..., 6]
    img = write_nifti(tmp_path / "i.nii.gz", image)
    lbl = write_nifti(tmp_path / "l.nii.gz", label, dtype=np.uint8)
    roi = (8, 8, 8)[:spatial_dims]
    spec = PreprocessingSpec(spatial_dims=spatial_dims)
    out = train_transforms(spec, roi_size=roi, num_samples=3, augmentation=Augmentation())(
        {"image": str(img), "label": str(lbl)}
    )
    assert isinstance(out, list) and len(out) == 3
    for patch in out:
        assert tuple(patch["image"].shape) == (1, *roi) and tuple(patch["label"].shape) == (1, *roi)
        assert set(torch.unique(patch["label"]).tolist()) <= {0.0, 1.0, 2.0}


def test_train_transforms_pad_images_smaller_than_roi(tmp_path):
    image, label = lesion_case(shape=(10, 10, 7))
    img = write_nifti(tmp_path / "i.nii.gz", image)
    lbl = write_nifti(tmp_path / "l.nii.gz", label)
    out = train_transforms(PreprocessingSpec(), roi_size=(16, 16, 8), num_samples=1, augmentation=NO_AUG)(
        {"image": str(img), "label": str(lbl)}
    )
    assert tuple(out[0]["image"].shape) == (1, 16, 16, 8)


@pytest.mark.parametrize("pos_fraction", [0.2, 0.8])
def test_pos_neg_crop_ratio_matches_configuration(pos_fraction):
    """Share of patches that contain foreground ~= pos_fraction (foreground is 1.6% of the image)."""
    from monai.utils import set_determinism

    set_determinism(0)
    image = np.zeros((1, 80, 80), np.float32)
    label = np.zeros((1, 80, 80), np.float32)
    label[0, 36:46, 36:46] = 1.0
    n = 400
    transform = train_transforms(
        PreprocessingSpec(spatial_dims=2),
        roi_size=(4, 4),
        pos_fraction=pos_fraction,
        num_samples=n,
        augmentation=NO_AUG,
        load=False,
    )
    patches = transform({"image": image, "label": label})
    share = np.mean([float(p["label"].max()) > 0 for p in patches])
    set_determinism(None)
    # negative patches overlap the 10x10 lesion with probability ~ (13^2 - 10^2) / 80^2 ~ 1%
    assert abs(share - pos_fraction) < 0.07, share


def test_label_classes_crop_ratios():
    from monai.utils import set_determinism

    set_determinism(0)
    label = np.zeros((1, 60, 60), np.float32)
    label[0, 5:10, 5:10] = 1
    label[0, 40:50, 40:50] = 2
    transform = train_transforms(
        PreprocessingSpec(spatial_dims=2),
        roi_size=(3, 3),
        crop="label_classes",
        class_ratios=[0, 1, 1],
        num_classes=3,
        num_samples=200,
        augmentation=NO_AUG,
        load=False,
    )
    patches = transform({"image": label.copy(), "label": label})
    set_determinism(None)
    centres = [int(p["label"][0, 1, 1]) for p in patches]
    assert 0 not in centres
    assert 0.35 < np.mean(np.array(centres) == 1) < 0.65


def test_bad_crop_arguments():
    with pytest.raises(ValueError, match="crop: expected"):
        train_transforms(PreprocessingSpec(spatial_dims=2), roi_size=(4, 4), crop="centre")
    with pytest.raises(ValueError, match="roi_size: expected 2 values"):
        train_transforms(PreprocessingSpec(spatial_dims=2), roi_size=(4, 4, 4))
    with pytest.raises(ValueError, match="class_ratios: expected 3 values"):
        train_transforms(
            PreprocessingSpec(spatial_dims=2),
            roi_size=(4, 4),
            crop="label_classes",
            class_ratios=[1, 1],
            num_classes=3,
        )


def test_colour_jitter_only_for_rgb_like():
    names = lambda spec: [type(t).__name__ for t in train_transforms(spec, keys=("image",)).transforms]  # noqa: E731
    rgb = names(PreprocessingSpec(modality="rgb"))
    grey = names(PreprocessingSpec(modality="grey"))
    assert rgb.count("RandScaleIntensityd") == 2 and grey.count("RandScaleIntensityd") == 1


def test_crop_foreground_keeps_the_nonzero_box_of_any_channel_and_inverts(tmp_path):
    """``crop_foreground``: the box of voxels non-zero in any channel (+ margin), label cropped alike;
    ``Invertd`` pads back to the input grid with the values in place."""
    flair = np.zeros((30, 28, 20), np.float32)
    t1c = np.zeros_like(flair)
    flair[8:15, 6:12, 4:9] = -1.5  # z-scored tissue can be negative: "non-zero", not "positive"
    t1c[12:20, 10:18, 6:12] = 2.0
    label = np.zeros_like(flair)
    label[13:15, 10:12, 6:8] = 1
    eye = np.diag([1.0, 1.0, 2.0, 1.0])
    paths = [write_nifti(tmp_path / f"{n}.nii.gz", a, eye) for n, a in (("f", flair), ("t", t1c))]
    lab = write_nifti(tmp_path / "seg.nii.gz", label, eye)
    spec = PreprocessingSpec(crop_foreground=True, crop_margin=1)
    assert PreprocessingSpec.from_dict(spec.to_dict()) == spec
    transform = inference_transforms(spec, keys=("image", "label"))
    item = transform({"image": [str(p) for p in paths], "label": str(lab)})
    box = (slice(7, 21), slice(5, 19), slice(3, 13))  # union box [8:20, 6:18, 4:12] + 1 voxel
    assert tuple(item["image"].shape) == (2, 14, 14, 10)
    np.testing.assert_array_equal(item["image"][0].numpy(), flair[box])
    np.testing.assert_array_equal(item["label"][0].numpy(), label[box])
    # the affine follows the crop: the first voxel is now at (7, 5, 6 mm)
    np.testing.assert_allclose(item["image"].affine[:3, 3].numpy(), [7.0, 5.0, 6.0])
    item["pred"] = item["label"].clone()
    inverted = Invertd(keys="pred", transform=transform, orig_keys="image", nearest_interp=True)(item)["pred"]
    assert tuple(inverted.shape[1:]) == flair.shape
    np.testing.assert_array_equal(inverted[0].numpy(), label)


@pytest.mark.parametrize(
    ("spatial_dims", "roi"), [(2, (16, 8)), (3, (8, 16, 8)), (3, (16, 8, 8)), (2, (12, 12))]
)
def test_rot90_keeps_patch_shape(spatial_dims, roi):
    """rot90 happens only in a plane whose patch sides are equal: every patch keeps ``roi``'s shape."""
    rng = np.random.default_rng(0)
    shape = (24, 20, 18)[:spatial_dims]
    item = {"image": rng.random((1, *shape), dtype=np.float32), "label": np.zeros((1, *shape), np.float32)}
    aug = Augmentation(**{**vars(NO_AUG), "rot90_prob": 1.0})
    tf = train_transforms(
        PreprocessingSpec(spatial_dims=spatial_dims),
        roi_size=roi,
        crop="random",
        augmentation=aug,
        load=False,
    )
    tf.set_random_state(seed=0)
    shapes = {tuple(tf(dict(item))["image"].shape[1:]) for _ in range(8)}
    assert shapes == {tuple(roi)}
    rotated = any(type(t).__name__ == "RandRotate90d" for t in tf.transforms)
    assert rotated == (roi[0] == roi[1])


def _smooth_volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values in [0, 1] that vary over ~6 voxels (so interpolation moves the 0.5 level set little)."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma=4.0)
    return ((field - field.min()) / (field.max() - field.min())).astype(np.float32)


SPATIAL_AUGS = {
    "flip": {"flip_prob": 1.0},
    "rot90": {"rot90_prob": 1.0},
    "affine": {"affine_prob": 1.0, "rotate_degrees": 30.0, "scale_range": 0.2},
    "elastic": {"elastic_prob": 1.0, "elastic_sigma": (4.0, 5.0), "elastic_magnitude": (300.0, 400.0)},
}


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("aug_name", sorted(SPATIAL_AUGS))
def test_spatial_augmentation_keeps_image_and_label_aligned(spatial_dims, aug_name):
    """label = image > 0.5 before augmentation; after each spatial augmentation it still holds.

    Flips and 90° rotations move voxels exactly; the affine and elastic ones resample the image
    bilinearly and the label nearest-neighbour, so only voxels on the 0.5 level set may disagree.
    """
    shape = (28, 24, 20)[:spatial_dims]
    image = _smooth_volume(shape)
    label = (image > 0.5).astype(np.float32)
    assert 0.1 < label.mean() < 0.9
    roi = (16, 16, 12)[:spatial_dims]
    aug = Augmentation(**{**vars(NO_AUG), **SPATIAL_AUGS[aug_name]})
    tf = train_transforms(
        PreprocessingSpec(spatial_dims=spatial_dims),
        roi_size=roi,
        crop="pos_neg",
        num_samples=4,
        augmentation=aug,
        load=False,
    )
    tf.set_random_state(seed=1)
    for patch in tf({"image": image[None], "label": label[None]}):
        img, lbl = patch["image"][0].numpy(), patch["label"][0].numpy()
        assert img.shape == lbl.shape == roi
        agree = float(((img > 0.5) == (lbl > 0.5)).mean())
        if aug_name in ("affine", "elastic"):
            assert agree > 0.9, agree
        else:
            assert agree == 1.0, agree
