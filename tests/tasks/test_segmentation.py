"""Tests for medfocal.tasks.segmentation.SegmentationModule."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from tasks_standins import BlobSegmentationData, CrossEntropy, _Dicts
from torch import nn
from torch.utils.data import DataLoader

import medfocal
from medfocal.nets import UNet, build_model
from medfocal.tasks import SegmentationModule


def _unet(spatial_dims: int = 2) -> UNet:
    return UNet(spatial_dims, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)


def test_checkpoint_is_self_describing_and_weights_only(make_trainer, tmp_path):
    module = SegmentationModule(_unet(), CrossEntropy(), compute_hd95=False)
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, BlobSegmentationData(n=8))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    meta = ckpt["medfocal"]
    assert meta == {
        "format_version": 2,
        "task": "segmentation",
        "model": meta["model"],
        "activation": "softmax",
        "class_names": ["background", "lesion"],
        "num_classes": 2,
        "in_channels": 1,
        "spatial_dims": 2,
        "roi_size": None,
        "preprocessing": {"modality": "generic", "spatial_dims": 2},
        "temperature": 1.0,
        "loss_alpha": {},
        "training_data": {"datamodule": "tasks_standins.BlobSegmentationData"},
        "task_options": {},
        "medfocal_version": medfocal.__version__,
        "operating_point": None,
    }
    assert "temperature" not in ckpt["state_dict"]  # the card holds the only copy
    rebuilt = build_model(meta["model"])
    weights = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    rebuilt.load_state_dict(weights)
    x = torch.randn(1, 1, 16, 16)
    module.eval()
    torch.testing.assert_close(rebuilt.eval()(x), module.model(x))
    assert ckpt["hyper_parameters"]["optimizer"]["class_path"].endswith("AdamW")


def test_validation_logs_monai_metrics_per_class(make_trainer):
    module = SegmentationModule(_unet(), CrossEntropy())
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=2)
    trainer.validate(module, BlobSegmentationData(n=8))
    metrics = trainer.callback_metrics
    for key in ("val/dice", "val/dice_lesion", "val/iou_lesion", "val/hd95", "val/sensitivity", "val/loss"):
        assert key in metrics, key
    assert module.monitor == "val/dice" and module.monitor_mode == "max"


def test_discretise_gives_one_hot_prediction_and_target():
    module = SegmentationModule(_unet(), CrossEntropy(), compute_hd95=False)
    label = torch.zeros(2, 1, 8, 8)
    label[:, :, 2:5, 2:5] = 1
    perfect = torch.cat([1 - label, label], dim=1) * 10
    pred, target = module.discretise(perfect, label)
    assert pred.shape == target.shape == (2, 2, 8, 8)
    torch.testing.assert_close(pred, target)
    # one sigmoid channel becomes a two-class one-hot
    sig = SegmentationModule(
        UNet(2, 1, 1, channels=(4, 8), strides=(2,)), CrossEntropy(), activation="sigmoid"
    )
    pred, target = sig.discretise(label * 4 - 2, label)
    assert pred.shape == (2, 2, 8, 8)
    torch.testing.assert_close(pred, target)


def test_sliding_window_validation_in_3d_takes_roi_from_datamodule(make_trainer):
    data = BlobSegmentationData(n=4, shape=(24, 24, 24), batch_size=2)
    data.roi_size = (16, 16, 16)
    module = SegmentationModule(_unet(3), CrossEntropy(), compute_hd95=False, sw_batch_size=2)
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, data)
    assert module.roi_size == (16, 16, 16)
    out = module(torch.randn(1, 1, 24, 24, 24))
    assert out.shape == (1, 2, 24, 24, 24)


def test_predict_divides_logits_by_temperature():
    module = SegmentationModule(_unet(), CrossEntropy()).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        logits = module(x)
        module.temperature = 2.0
        probs = module.predict_step({"image": x}, 0)
    torch.testing.assert_close(probs, torch.softmax(logits / 2.0, dim=1))
    assert "temperature" not in module.state_dict()  # stored in the model card only


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activation": "relu"}, "activation"),
        ({"sw_overlap": 1.0}, "sw_overlap"),
        ({"monitor_mode": "up"}, "max"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SegmentationModule(_unet(), CrossEntropy(), **kwargs)


def test_short_fit_with_dice_focal_loss_finds_the_lesions(make_trainer):
    from medfocal.losses import DiceFocalLoss

    torch.manual_seed(0)
    data = BlobSegmentationData(n=16, shape=(32, 32), batch_size=4)
    loss = DiceFocalLoss(include_background=False)
    net = UNet(2, 1, 2, channels=(8, 16), strides=(2,), num_res_units=1)
    module = SegmentationModule(
        net, loss, optimizer=lambda p: torch.optim.Adam(p, lr=0.02), compute_hd95=False
    )
    trainer = make_trainer(max_epochs=8)
    trainer.validate(module, data)
    before = float(trainer.callback_metrics["val/loss"])
    trainer.fit(module, data)
    after = trainer.callback_metrics
    assert float(after["val/loss"]) < 0.7 * before
    assert float(after["val/dice"]) > 0.5  # lesions are ~2.5 % of the pixels: chance Dice is ~0.05


def test_validation_hd95_is_in_mm_for_images_with_an_affine():
    """``val/hd95`` uses each image's voxel spacing (from the MetaTensor affine), as ``evaluate`` does."""
    from monai.data import MetaTensor
    from monai.metrics import compute_hausdorff_distance

    class Fixed(torch.nn.Module):  # predicts a box shifted by 2 voxels along the first axis
        def forward(self, x):
            fg = torch.zeros_like(x)
            fg[:, :, 6:10, 4:8] = 1.0
            return torch.cat([-fg, fg], dim=1) * 5

    module = SegmentationModule(Fixed(), CrossEntropy())
    label = torch.zeros(2, 1, 16, 16)
    label[:, :, 4:8, 4:8] = 1
    affines = torch.stack([torch.diag(torch.tensor([3.0, 0.5, 1.0, 1.0])), torch.eye(4)])
    image = MetaTensor(torch.zeros(2, 1, 16, 16), affine=affines)
    module._evaluate({"image": image, "label": label}, "val")
    hd = module._stage_metrics("val")["hd95"].aggregate()
    pred, target = module.discretise(Fixed()(image.as_tensor()), label)
    expected = compute_hausdorff_distance(pred, target, percentile=95.0, spacing=[[3.0, 0.5], [1.0, 1.0]])
    torch.testing.assert_close(hd.float(), expected.mean(0).float())
    assert expected[0, 0] == pytest.approx(6.0) and expected[1, 0] == pytest.approx(2.0)  # 2 voxels x 3 mm
    # plain tensors: voxels
    module._metrics.clear()
    module._evaluate({"image": image.as_tensor(), "label": label}, "val")
    assert module._stage_metrics("val")["hd95"].aggregate().item() == pytest.approx(2.0)


def test_2d_roi_of_the_data_is_the_window_of_validation_and_inference(make_trainer, tmp_path):
    """A 2D preset with ``roi_size`` only on the data validates with the sliding window inference uses."""
    from medfocal.inference import Predictor, read_checkpoint

    torch.manual_seed(0)
    data = BlobSegmentationData(n=4, shape=(40, 28), batch_size=2)
    data.roi_size = (16, 16)
    module = SegmentationModule(_unet(), CrossEntropy(), compute_hd95=False, sw_overlap=0.5, sw_batch_size=2)
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, data)
    assert module.roi_size == (16, 16)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    card, _ = read_checkpoint(path)
    assert card.roi_size == (16, 16)

    image = data.data.images[0]
    module.eval()
    with torch.no_grad():
        validation = torch.softmax(module(image[None]), dim=1)[0]
        whole = torch.softmax(module.model(image[None]), dim=1)[0]
    predictor = Predictor.from_checkpoint(path, device="cpu", overlap=0.5, sw_batch_size=2)
    torch.testing.assert_close(predictor.predict_tensor(image), validation)
    assert (validation - whole).abs().max() > 1e-4  # the window matters: the test can tell them apart


# ---------------------------------------------------------------- metric values against hand counts


class MaskAsLogits(nn.Module):
    """The input *is* the predicted mask; logits that argmax (softmax) or threshold (sigmoid) back to it."""

    def __init__(self, softmax: bool) -> None:
        super().__init__()
        self.softmax = softmax
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.softmax:
            return torch.cat([1 - x, x], dim=1) * self.scale
        return (2 * x - 1) * self.scale


class FixedSegData(pl.LightningDataModule):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> None:
        super().__init__()
        self.images, self.labels = images, labels
        self.class_names, self.num_classes = class_names, len(class_names)
        self.in_channels, self.spatial_dims, self.roi_size = images.shape[1], 2, None
        self.preprocessing = {"modality": "generic", "spatial_dims": 2}

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Dicts(self.images, self.labels), batch_size=2)  # batches of 2 and 1


class NoLoss(nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logits.sum() * 0


def _box(r: slice, c: slice) -> torch.Tensor:
    m = torch.zeros(8, 8)
    m[r, c] = 1
    return m


# three 8 x 8 cases: a partial hit, a missed lesion, an empty case predicted empty
LABELS = torch.stack(
    [_box(slice(2, 6), slice(2, 6)), _box(slice(1, 4), slice(1, 4)), _box(slice(0), slice(0))]
)
PREDS = torch.stack([_box(slice(3, 7), slice(2, 6)), _box(slice(0), slice(0)), _box(slice(0), slice(0))])
# by hand: case 1 overlaps 12 of 16 + 16 voxels (Dice 24/32, IoU 12/20); case 2 Dice = IoU = 0; case 3 has no
# lesion and no prediction, which MONAI scores NaN and the epoch mean leaves out. Sensitivity and
# specificity pool the confusion counts over cases: TP 12, FN 4 + 9, FP 4, TN 44 + 55 + 64.
HAND = {"dice": (0.75 + 0.0) / 2, "iou": (0.6 + 0.0) / 2, "sensitivity": 12 / 25, "specificity": 163 / 167}


def _validate(make_trainer, module, images, labels, names=("background", "lesion")) -> dict[str, float]:
    trainer = make_trainer(limit_val_batches=None)
    trainer.validate(module, FixedSegData(images, labels, list(names)), verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_val_metrics_equal_hand_counts_on_partial_missed_and_empty_cases(make_trainer, activation):
    module = SegmentationModule(
        MaskAsLogits(activation == "softmax"), NoLoss(), activation=activation, compute_hd95=False
    )
    got = _validate(make_trainer, module, PREDS[:, None], LABELS[:, None])
    for key, value in HAND.items():
        assert got[f"val/{key}"] == pytest.approx(value, abs=1e-6), key
    assert got["val/dice_lesion"] == pytest.approx(HAND["dice"], abs=1e-6)
    assert got["val/iou_lesion"] == pytest.approx(HAND["iou"], abs=1e-6)


def test_val_metrics_are_one_on_a_perfect_prediction_and_zero_on_an_empty_one(make_trainer):
    perfect = _validate(
        make_trainer, SegmentationModule(MaskAsLogits(True), NoLoss()), LABELS[:, None], LABELS[:, None]
    )
    for key in ("dice", "iou", "sensitivity", "specificity"):
        assert perfect[f"val/{key}"] == pytest.approx(1.0), key
    module = SegmentationModule(MaskAsLogits(True), NoLoss(), compute_hd95=False)
    empty = _validate(make_trainer, module, torch.zeros_like(LABELS)[:, None], LABELS[:, None])
    assert empty["val/dice"] == empty["val/iou"] == empty["val/sensitivity"] == 0.0
    assert empty["val/specificity"] == 1.0


def test_val_metrics_of_a_multilabel_sigmoid_score_every_channel(make_trainer):
    """Two sigmoid channels with (B, 2, H, W) masks: both are labels (no background channel)."""
    labels = torch.stack([LABELS, LABELS.roll(1, 0)], dim=1)  # channel 1: the cases in another order
    preds = torch.stack([PREDS, LABELS.roll(1, 0)], dim=1)  # channel 1 perfect
    module = SegmentationModule(MaskAsLogits(False), NoLoss(), activation="sigmoid", compute_hd95=False)
    got = _validate(make_trainer, module, preds, labels, names=("edema", "core"))
    assert "val/dice_edema" in got, sorted(got)
    assert got["val/dice_core"] == pytest.approx(1.0)
    assert got["val/dice_edema"] == pytest.approx(HAND["dice"], abs=1e-6)
    assert got["val/dice"] == pytest.approx((HAND["dice"] + 1.0) / 2, abs=1e-6)


@pytest.mark.parametrize("out_channels", [1, 3])
def test_output_channels_must_match_the_data_classes(make_trainer, out_channels):
    """Issue 15 item 5: a network with another number of outputs than the data's classes is refused in
    setup, naming the config keys (no silent training, no loss traceback at the first step)."""
    model = UNet(2, 1, out_channels, channels=(4, 8), strides=(2,), num_res_units=0)
    module = SegmentationModule(model, CrossEntropy(), compute_hd95=False)
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=1)
    with pytest.raises(ValueError) as info:
        trainer.fit(module, BlobSegmentationData(n=4))
    assert str(info.value) == (
        f"the network has {out_channels} output channel(s) (model.init_args.model.init_args.out_channels) "
        "but the data has 2 classes ['background', 'lesion']; with softmax set "
        "model.init_args.model.init_args.out_channels: 2, or fix the data's labels / class names "
        "(data.init_args.class_names, or 'labels' in dataset.json)"
    )
    assert trainer.global_step == 0


def test_sigmoid_accepts_one_channel_per_foreground_class(make_trainer):
    model = UNet(2, 1, 1, channels=(4, 8), strides=(2,), num_res_units=0)
    module = SegmentationModule(model, CrossEntropy(), activation="sigmoid", compute_hd95=False)
    module.trainer = make_trainer()
    module.trainer.datamodule = BlobSegmentationData(n=4)
    module._check_output_channels()  # 1 sigmoid channel for background + lesion: fine
    module.model = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0)
    module.hparams["model"] = None
    with pytest.raises(ValueError, match=r"with sigmoid set .*out_channels: 2 or 1,"):
        module._check_output_channels()


def test_three_label_dataset_with_two_outputs_names_the_dataset(tmp_path, make_trainer):
    """Labels 0..2 declared in dataset.json, ``out_channels: 2``: refused before the first step."""
    from medfocal.data import SegmentationDataModule
    from medfocal.synthetic import make_lesion_dataset

    root = make_lesion_dataset(tmp_path / "d", n_train=3, n_test=0, shape=(32, 32, 16), n_classes=3)
    data = SegmentationDataModule(str(root), roi_size=[16, 16, 8], num_workers=0, check="none")
    model = UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
    module = SegmentationModule(model, CrossEntropy(), compute_hd95=False)
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=1)
    with pytest.raises(ValueError, match=r"has 3 classes \['background', 'lesion_1', 'lesion_2'\]") as info:
        trainer.fit(module, data)
    assert str(root) in str(info.value) and "out_channels: 3" in str(info.value)
