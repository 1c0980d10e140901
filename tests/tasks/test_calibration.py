"""Tests for medfocal.tasks.calibration: temperature scaling and the AdaFocal callback."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medfocal.card import ModelCard
from medfocal.metrics import calibration_bins, expected_calibration_error
from medfocal.tasks.calibration import (
    AdaFocalCalibration,
    TemperatureScaling,
    collect_logits,
    fit_temperature,
)


# ----------------------------------------------------------------------------- callbacks on a stub module
class _Blobs(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x = torch.randn(n, 4, generator=g) + torch.nn.functional.one_hot(self.y, 4).float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], "label": self.y[i]}


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x


class _RecordingAdaFocal(nn.Module):
    n_bins = 10

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target)

    def update_from_calibration(self, bin_confidence: torch.Tensor, bin_accuracy: torch.Tensor) -> None:
        self.calls.append((bin_confidence, bin_accuracy))


class _StubModule(pl.LightningModule):
    """What the callbacks rely on: ``model``, ``loss``, ``activation``, a float ``temperature``, a card
    in the checkpoint, and ``validation_step`` returning the batch's logits."""

    def __init__(self, loss: nn.Module | None = None, factor: float = 6.0, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(4, 3), _Scale(factor))
        self.loss = loss or nn.CrossEntropyLoss()
        self.activation = "softmax"
        self.temperature = 1.0
        self.forward_calls = 0

    def training_step(self, batch, batch_idx):
        return self.loss(self.model(batch["image"]), batch["label"])

    def validation_step(self, batch, batch_idx):
        self.forward_calls += 1
        logits = self.model(batch["image"])
        self.log("val_loss", nn.functional.cross_entropy(logits, batch["label"]))
        return {"logits": logits}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def on_save_checkpoint(self, checkpoint):
        card = ModelCard(task="classification", num_classes=3, temperature=self.temperature)
        checkpoint["medfocal"] = card.to_dict()


class _DM(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(_Blobs(256, 0), batch_size=64, shuffle=True)

    def val_dataloader(self):
        return DataLoader(_Blobs(600, 1), batch_size=200)


def _trainer(tmp_path, callbacks, epochs=3):
    return pl.Trainer(
        max_epochs=epochs,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        logger=pl.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )


@pytest.mark.slow
def test_temperature_scaling_callback(tmp_path):
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val_loss", mode="min", save_last=True
    )
    scaling = TemperatureScaling(save_path=str(tmp_path / "calibrated.ckpt"))
    module = _StubModule(factor=6.0, lr=0.002)  # stays over-confident
    _trainer(tmp_path, [scaling, checkpoint]).fit(module, datamodule=_DM())

    r = scaling.results
    assert r["temperature"] > 1.0  # the x6 head is over-confident
    assert r["nll_after"] < r["nll_before"]
    assert r["ece_after"] < r["ece_before"]
    assert module.temperature == pytest.approx(r["temperature"])
    best = torch.load(checkpoint.best_model_path, weights_only=True)
    assert best["medfocal"]["temperature"] == pytest.approx(r["temperature"])
    assert "temperature" not in best["state_dict"]  # the card holds the only copy
    saved = torch.load(tmp_path / "calibrated.ckpt", weights_only=True)
    assert saved["medfocal"]["temperature"] == pytest.approx(r["temperature"])
    logged = json.loads(next(tmp_path.rglob("temperature_scaling.json")).read_text())
    assert logged["temperature"] == pytest.approx(r["temperature"])
    # the module in memory carries the best weights the temperature was fitted for
    torch.testing.assert_close(module.model[0].weight, best["state_dict"]["model.0.weight"])
    # collected logits are the raw network's, not divided by T
    logits, labels = collect_logits(module, _DM().val_dataloader())
    with torch.no_grad():
        raw = module.model(_Blobs(600, 1).x)
    torch.testing.assert_close(logits, raw)
    assert expected_calibration_error(
        torch.softmax(logits / module.temperature, 1), labels
    ).item() == pytest.approx(r["ece_after"])


@pytest.mark.slow
def test_adafocal_callback_updates_loss_each_validation(tmp_path):
    loss = _RecordingAdaFocal()
    callback = AdaFocalCalibration()
    module = _StubModule(loss=loss, factor=1.0)
    _trainer(tmp_path, [callback], epochs=2).fit(module, datamodule=_DM())

    assert len(loss.calls) == 2  # one per validation epoch, none for the sanity check
    confidence, accuracy = loss.calls[-1]
    assert confidence.shape == accuracy.shape == (10,)
    data = _Blobs(600, 1)
    with torch.no_grad():
        probs = torch.softmax(module.model(data.x), 1)
    expected = calibration_bins(probs, data.y, 10)
    torch.testing.assert_close(confidence, expected.bin_confidence().float())
    torch.testing.assert_close(accuracy, expected.bin_accuracy().float())


# ----------------------------------------------------------------------------- the real task modules
@pytest.mark.slow
def test_temperature_scaling_with_classification_module(classification_npz, tmp_path):
    """ClassificationModule + ClassificationDataModule: T lands in the buffer, the checkpoint's
    ``medfocal`` dict and ``predict_step``."""
    from monai.data import set_track_meta

    from medfocal.data import ClassificationDataModule
    from medfocal.losses import FocalLoss
    from medfocal.nets import create_model
    from medfocal.tasks import ClassificationModule

    set_track_meta(False)
    try:
        dm = ClassificationDataModule(str(classification_npz), batch_size=20, num_workers=0)
        dm.setup("fit")
        net = create_model("resnet18", spatial_dims=2, in_channels=1, out_channels=3, widen_factor=0.125)
        module = ClassificationModule(net, FocalLoss(gamma=2.0, alpha="auto"))
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor=module.monitor, mode="max")
        scaling = TemperatureScaling()
        trainer = _trainer(tmp_path, [scaling, checkpoint], epochs=2)
        trainer.fit(module, datamodule=dm)
    finally:
        set_track_meta(True)
    temperature = scaling.results["temperature"]
    assert scaling.results["nll_after"] <= scaling.results["nll_before"] + 1e-9
    saved = torch.load(checkpoint.best_model_path, weights_only=True)
    assert saved["medfocal"]["temperature"] == pytest.approx(temperature)
    assert module.temperature == pytest.approx(temperature)
    # what `medfocal infer` reads
    from medfocal.inference.checkpoint import read_checkpoint

    info, _ = read_checkpoint(checkpoint.best_model_path)
    assert info.temperature == pytest.approx(temperature)
    batch = next(iter(dm.val_dataloader()))
    module.eval()
    with torch.no_grad():
        expected = torch.softmax(module.model(batch["image"]) / temperature, dim=1)
        out = module.predict_step(batch, 0)  # ClassificationModule: probabilities and the decisions
        torch.testing.assert_close(out["probabilities"], expected)
        assert out["prediction"].tolist() == expected.argmax(1).tolist()  # no operating point: argmax


def test_collect_logits_segmentation_uses_forward_and_subsamples():
    """Segmentation: logits come from the module's forward (sliding window) and are voxel-subsampled."""
    from medfocal.losses import DiceCELoss
    from medfocal.tasks import SegmentationModule

    torch.manual_seed(0)
    net = nn.Conv2d(1, 3, 3, padding=1)
    module = SegmentationModule(
        net, DiceCELoss(), roi_size=(8, 8), sw_batch_size=2, class_names=["bg", "a", "b"]
    )
    images = torch.randn(2, 1, 16, 12)
    labels = torch.randint(0, 3, (2, 1, 16, 12)).float()
    batches = [{"image": images, "label": labels}]
    logits, target = collect_logits(module, batches, max_voxels_per_batch=None)
    with torch.no_grad():
        full = module(images)
    torch.testing.assert_close(logits, full.movedim(1, -1).reshape(-1, 3))
    torch.testing.assert_close(target, labels.reshape(-1).long())
    logits, target = collect_logits(module, batches, max_voxels_per_batch=100)
    assert logits.shape == (100, 3) and target.shape == (100,)
    # labels drawn from softmax(forward / 3): the fitted temperature of collect_logits' output is 3
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        net.weight.mul_(8)
        big = torch.randn(4, 1, 48, 48, generator=g)
        z = module(big).movedim(1, -1)
    torch.manual_seed(2)
    drawn = torch.distributions.Categorical(logits=z / 3.0).sample()[:, None].float()
    logits, target = collect_logits(module, [{"image": big, "label": drawn}], max_voxels_per_batch=None)
    assert fit_temperature(logits, target) == pytest.approx(3.0, rel=0.1)


def test_collect_logits_mask_key_keeps_only_voxels_inside_the_mask():
    """``mask_key``: only the voxels where ``batch[mask_key] > 0`` are returned (a field of view)."""
    from medfocal.losses import DiceCELoss
    from medfocal.tasks import SegmentationModule

    torch.manual_seed(0)
    module = SegmentationModule(nn.Conv2d(1, 2, 3, padding=1), DiceCELoss(), class_names=["bg", "fg"])
    images = torch.randn(2, 1, 10, 9)
    labels = torch.randint(0, 2, (2, 1, 10, 9)).float()
    fov = torch.zeros(2, 1, 10, 9)
    fov[0, 0, 2:6, 3:7] = 1  # 16 voxels
    fov[1, 0, :, 0] = 1  # 10 voxels
    batches = [{"image": images, "label": labels, "fov": fov}]
    logits, target = collect_logits(module, batches, max_voxels_per_batch=None, mask_key="fov")
    with torch.no_grad():
        full = module(images)
    inside = fov[:, 0] > 0
    torch.testing.assert_close(logits, full.movedim(1, -1)[inside])
    torch.testing.assert_close(target, labels[:, 0][inside].long())
    assert logits.shape == (26, 2)
    # the subsample draws from inside the mask only
    sub, _ = collect_logits(module, batches, max_voxels_per_batch=5, mask_key="fov")
    assert sub.shape == (5, 2)
    assert all((row == logits).all(dim=1).any() for row in sub)
    with pytest.raises(KeyError, match="mask_key='brainmask'"):
        collect_logits(module, batches, mask_key="brainmask")
    with pytest.raises(ValueError, match="does not match the logits"):
        collect_logits(module, [{"image": images, "label": labels, "fov": fov[:, :, :5]}], mask_key="fov")


def test_temperature_scaling_mask_key_fits_inside_the_mask(tmp_path):
    """A fit restricted to the mask differs from the whole-image fit exactly as the data says.

    Outside the mask the logits are over-confident (T > 1 wanted), inside under-confident (T < 1):
    the callback with ``mask_key`` must return the inside-only temperature.
    """
    g = torch.Generator().manual_seed(0)
    n, side = 8, 16
    labels = torch.randint(0, 2, (n, side, side), generator=g)
    sign = 2.0 * labels - 1.0
    noise = torch.randn(n, side, side, generator=g)
    fov = torch.zeros(n, 1, side, side)
    fov[:, :, 4:12, 4:12] = 1
    strength = torch.where(fov[:, 0] > 0, 0.5, 8.0)  # weak logits inside, very strong outside
    flip = torch.rand(n, side, side, generator=g) < 0.1
    margin = strength * sign * torch.where(flip, -1.0, 1.0) + 0.1 * noise
    logits = torch.stack([-margin / 2, margin / 2], dim=1)
    inside = fov[:, 0] > 0
    expected = fit_temperature(logits.movedim(1, -1)[inside], labels[inside])
    whole = fit_temperature(logits, labels)
    assert expected < 1.0 < whole

    class _Fixed(pl.LightningModule):
        """The "network" returns its input: the validation images are the logits above."""

        def __init__(self):
            super().__init__()
            self.model = nn.Identity()
            self.dummy = nn.Parameter(torch.zeros(()))
            self.activation = "softmax"
            self.temperature = 1.0

        def training_step(self, batch, batch_idx):
            return self.dummy * 0.0

        def validation_step(self, batch, batch_idx):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    items = [{"image": logits[i], "label": labels[i, None].float(), "fov": fov[i]} for i in range(n)]
    fitted = {}
    for key in ("fov", None):
        scaling = TemperatureScaling(use_best_checkpoint=False, max_voxels_per_batch=None, mask_key=key)
        trainer = _trainer(tmp_path / str(key), [scaling], epochs=1)
        trainer.fit(_Fixed(), DataLoader(items, batch_size=4), DataLoader(items, batch_size=4))
        fitted[key] = scaling.results["temperature"]
        assert scaling.results["n_samples"] == (int(inside.sum()) if key else n * side * side)
    assert fitted["fov"] == pytest.approx(expected, rel=1e-4)
    assert fitted[None] == pytest.approx(whole, rel=1e-4)


class _CountingNet(nn.Module):
    """A conv that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x)


def test_adafocal_validation_runs_the_network_once_per_batch(make_trainer):
    """The callback bins the logits ``validation_step`` returns: no second forward pass per batch."""
    from tasks_standins import BlobSegmentationData

    from medfocal.losses import AdaFocalLoss
    from medfocal.tasks import SegmentationModule

    data = BlobSegmentationData(n=8, shape=(16, 16), batch_size=4)
    net, loss = _CountingNet(), AdaFocalLoss(n_bins=5)
    module = SegmentationModule(net, loss, compute_hd95=False)
    make_trainer(callbacks=[AdaFocalCalibration()]).validate(module, data)
    assert net.calls == 2  # two validation batches, one pass each

    # and the update is the AdaFocal rule on the bins of exactly those logits
    module.eval()
    with torch.no_grad():
        probs = torch.softmax(module(data.data.images), dim=1)
    bins = calibration_bins(probs, data.data.labels.long(), 5)
    gap = torch.nan_to_num(bins.bin_confidence() - bins.bin_accuracy(), nan=0.0).float()
    torch.testing.assert_close(loss.gammas, torch.exp(gap).clamp(0.0, 20.0))


def test_adafocal_needs_the_logits_of_validation_step(make_trainer):
    class _Silent(_StubModule):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.tensor(0.0))

    trainer = make_trainer(callbacks=[AdaFocalCalibration()], limit_val_batches=1)
    with pytest.raises(
        ValueError, match=r"_Silent\.validation_step must return a dict with the batch's 'logits'"
    ):
        trainer.validate(_Silent(loss=_RecordingAdaFocal()), datamodule=_DM())
