"""Predictor paths the oracle tests do not take: sigmoid and multi-label checkpoints, > 2 classes through
the inversion, ``min_size``, ``crop_foreground``, and the card's preprocessing values.

Every checkpoint is a 1x1 convolution whose decision is a known threshold of the scaled intensity, so
the expected mask is computed from the input image by hand.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import RESAMPLING_SPEC, save_checkpoint
from torch import nn

from medfocal.inference import Predictor

OBLIQUE = np.array([[-1.2, 0.1, 0.0, 10.0], [0.05, 0.9, 0.2, -5.0], [0.0, -0.1, 2.5, 3.0], [0, 0, 0, 1.0]])
NO_RESAMPLING = {"modality": "generic", "spatial_dims": 3, "intensity_range": [0.0, 1000.0]}


def _volume(shape=(24, 22, 14)) -> np.ndarray:
    """Background 100, a 'mid' block 500, a big 'bright' block 800 and a tiny bright 2^3 block."""
    image = np.full(shape, 100.0, np.float32)
    image[3:11, 3:11, 3:9] = 500.0
    image[13:21, 10:18, 4:10] = 800.0
    image[3:5, 16:18, 10:12] = 800.0
    return image


def _write(tmp_path: Path, image: np.ndarray, name: str = "case.nii.gz") -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(image, OBLIQUE), path)
    return path


def _conv(weights: list[float], biases: list[float]) -> tuple[nn.Module, dict]:
    """A 1x1x1 conv from one input channel: logit_k = w_k * x + b_k (x is the scaled intensity)."""
    conv = nn.Conv3d(1, len(weights), kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).reshape(-1, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor(biases))
    spec = {
        "class_path": "torch.nn.Conv3d",
        "init_args": {"in_channels": 1, "out_channels": len(weights), "kernel_size": 1},
    }
    return conv, spec


def _predictor(tmp_path: Path, weights, biases, preprocessing, **kwargs) -> Predictor:
    model, spec = _conv(weights, biases)
    class_names = kwargs.pop("class_names", None)
    activation = kwargs.pop("activation", "softmax")
    ckpt = save_checkpoint(
        tmp_path / "m.ckpt",
        model,
        spec,
        activation=activation,
        class_names=class_names,
        preprocessing=preprocessing,
    )
    # as SegmentationModule writes it: num_classes is the channel count (a 1-channel sigmoid: 1)
    saved = torch.load(ckpt, weights_only=True)
    saved["medfocal"]["num_classes"] = len(weights)
    torch.save(saved, ckpt)
    return Predictor.from_checkpoint(ckpt, device="cpu", **kwargs)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_sigmoid_single_channel_checkpoint(tmp_path):
    image = _volume()
    # logit = 40 (x - 0.59): foreground where the raw intensity is over 590
    pred = _predictor(tmp_path, [40.0], [-40 * 0.59], NO_RESAMPLING, activation="sigmoid").predict_volume(
        _write(tmp_path, image)
    )
    assert pred.probabilities.shape == (1, *image.shape)
    np.testing.assert_array_equal(pred.label, (image > 590).astype(np.uint8))
    np.testing.assert_allclose(
        pred.probabilities[0], 1 / (1 + np.exp(-40 * (image / 1000 - 0.59))), atol=1e-5
    )
    np.testing.assert_allclose(pred.affine, OBLIQUE)


def test_multilabel_sigmoid_checkpoint_labels_the_most_probable_channel_over_half(tmp_path):
    """Channel 1: 10 (x - 0.3); channel 2: 100 (x - 0.7). At 500 only channel 1 is > 0.5; at 800 both are,
    channel 2 more (10 > 5); at 100 neither."""
    image = _volume()
    predictor = _predictor(
        tmp_path,
        [10.0, 100.0],
        [-3.0, -70.0],
        NO_RESAMPLING,
        activation="sigmoid",
        class_names=["bg", "a", "b"],
    )
    pred = predictor.predict_volume(_write(tmp_path, image))
    expected = np.select([image > 700, image > 300], [2, 1], 0).astype(np.uint8)
    assert pred.probabilities.shape == (2, *image.shape)
    np.testing.assert_array_equal(pred.label, expected)


def test_three_class_softmax_goes_back_through_reorientation_and_resampling(tmp_path):
    """logit_0 = 0, logit_1 = 40 (x - 0.3), logit_2 = 160 (x - 0.6): class 2 over 700, class 1 over 300.

    The checkpoint reorients to RAS and resamples to 1 x 1 x 1.5 mm; the > 2-class inversion (all
    channels resampled, no 1 - p shortcut) must land each class on its block of the input grid.
    """
    image = _volume()
    predictor = _predictor(
        tmp_path,
        [0.0, 40.0, 160.0],
        [0.0, -12.0, -96.0],
        dict(RESAMPLING_SPEC),
        class_names=["bg", "mid", "bright"],
    )
    pred = predictor.predict_volume(_write(tmp_path, image))
    assert pred.label.shape == image.shape and pred.probabilities.shape == (3, *image.shape)
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-4)
    expected = np.select([image > 700, image > 300], [2, 1], 0)
    for k in (1, 2):
        assert _dice(pred.label == k, expected == k) > 0.75, (k, _dice(pred.label == k, expected == k))
        # a mirrored inversion would put the block elsewhere
        assert _dice(np.flip(pred.label == k, 0), expected == k) < 0.3


@pytest.mark.parametrize("min_size", [0, 9, 200])
def test_min_size_drops_small_components_only(tmp_path, min_size):
    image = _volume()
    predictor = _predictor(tmp_path, [-20.0, 20.0], [20 * 0.59, -20 * 0.59], NO_RESAMPLING, min_size=min_size)
    pred = predictor.predict_volume(_write(tmp_path, image))
    big = np.zeros(image.shape, bool)
    big[13:21, 10:18, 4:10] = True  # 384 voxels
    tiny = np.zeros(image.shape, bool)
    tiny[3:5, 16:18, 10:12] = True  # 8 voxels
    expected = big | (tiny if min_size <= 8 else False)
    if min_size > 384:
        expected = np.zeros_like(big)
    np.testing.assert_array_equal(pred.label == 1, expected)


def test_crop_foreground_prediction_is_padded_back_to_the_input_grid(tmp_path):
    image = np.zeros((26, 24, 16), np.float32)
    image[3:-3, 2:-2, 2:-2] = _volume((20, 20, 12))  # air (0) around the anatomy
    spec = {**NO_RESAMPLING, "crop_foreground": True, "crop_margin": 1}
    predictor = _predictor(tmp_path, [-20.0, 20.0], [20 * 0.59, -20 * 0.59], spec)
    item = predictor.transforms({"image": str(_write(tmp_path, image))})
    assert tuple(item["image"].shape[1:]) == (22, 22, 14)  # the box plus the margin
    pred = predictor.predict_volume(_write(tmp_path, image))
    assert pred.label.shape == image.shape
    np.testing.assert_array_equal(pred.label, (image > 590).astype(np.uint8))
    assert np.all(pred.probabilities[1][:2] == 0.0)  # outside the box: no foreground probability


def test_the_cards_intensity_range_is_the_one_applied(tmp_path):
    """Scaled by the card's (0, 2000), threshold 0.3 means raw 600: the 500 block stays background.
    Any other scaling ((0, 1000) as the default presets, or none) would label it."""
    image = _volume()
    spec = {**NO_RESAMPLING, "intensity_range": [0.0, 2000.0]}
    predictor = _predictor(tmp_path, [-20.0, 20.0], [20 * 0.3, -20 * 0.3], spec)
    pred = predictor.predict_volume(_write(tmp_path, image))
    np.testing.assert_array_equal(pred.label, (image > 600).astype(np.uint8))


@pytest.mark.slow
def test_a_trained_checkpoint_preprocesses_as_its_datamodule(tmp_path):
    """The card of a checkpoint written by Lightning: the predictor's input tensor equals the
    validation loader's, value for value, and its probabilities equal the module's softmax."""
    from helpers import trained_segmentation_checkpoint

    from medfocal.data import PreprocessingSpec
    from medfocal.synthetic import make_lesion_dataset

    root = make_lesion_dataset(tmp_path / "data", n_train=4, n_test=0, shape=(24, 24, 16))
    spec = PreprocessingSpec(modality="ct", window=(0.0, 900.0), spacing=(1.5, 1.5, 2.0))
    ckpt, module, data = trained_segmentation_checkpoint(tmp_path, root, spec, steps=1)
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", overlap=module.sw_overlap)
    assert predictor.spec.window == (0.0, 900.0) and predictor.spec.spacing == (1.5, 1.5, 2.0)
    data.setup("validate")
    val_item = data.val_dataloader().dataset[0]
    ours = predictor.transforms({"image": val_item["image"].meta["filename_or_obj"]})["image"]
    torch.testing.assert_close(ours.as_tensor(), val_item["image"].as_tensor())
    module.eval()
    # the predictor blends per-window logits, then softmax, exactly as validation does: compare with
    # MONAI's sliding window over the module's network with the same settings
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        logits = sliding_window_inference(
            val_item["image"].as_tensor()[None],
            roi_size=module.roi_size,
            sw_batch_size=2,
            predictor=module.model,
            overlap=module.sw_overlap,
            mode="gaussian",
        )
        expected = torch.softmax(logits, dim=1)[0]
    assert predictor.roi_size == module.roi_size == (16, 16, 16)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(predictor.model(x), module.model(x))
    torch.testing.assert_close(predictor.predict_tensor(ours), expected, atol=1e-5, rtol=1e-4)
