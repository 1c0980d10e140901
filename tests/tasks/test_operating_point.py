"""The operating point of a classifier: chosen on validation, stored in the card, applied and reported."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score
from tasks_standins import BlobClassificationData, CrossEntropy, TinyClassifier, _Dicts
from torch.utils.data import DataLoader

from medfocal.card import card_of_checkpoint, update_card_file
from medfocal.metrics.operating_point import OperatingPoint as Point
from medfocal.metrics.operating_point import choose_operating_point
from medfocal.tasks import ClassificationModule, OperatingPoint, TemperatureScaling


class BinaryData(pl.LightningDataModule):
    """Imbalanced binary images (1, 8, 8): positives (20%) are brighter; val and test are other draws."""

    def __init__(self, n: int = 80, batch_size: int = 16) -> None:
        super().__init__()
        self.n, self.batch_size = n, batch_size
        self.class_names = ["negative", "positive"]
        self.num_classes = 2
        self.in_channels = 1
        self.spatial_dims = 2
        self.roi_size = None
        self.preprocessing = {"modality": "grey", "spatial_dims": 2}

    def _draw(self, seed: int) -> _Dicts:
        g = torch.Generator().manual_seed(seed)
        labels = (torch.rand(self.n, generator=g) < 0.2).long()
        labels[:2] = torch.tensor([0, 1])
        images = labels.float()[:, None, None, None] * 0.8 + torch.randn(self.n, 1, 8, 8, generator=g)
        return _Dicts(images, labels)

    def setup(self, stage: str) -> None:
        self.train, self.val, self.test = self._draw(0), self._draw(1), self._draw(2)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.train.labels, minlength=2).float()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=self.batch_size)


def _probs(module: ClassificationModule, data: _Dicts) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return module.probabilities(module.model(data.images))


def test_validation_logs_argmax_and_operating_point_metrics(make_trainer):
    """``val/op/*`` are scikit-learn's figures of the thresholded decisions; the argmax ones are kept."""
    torch.manual_seed(0)
    data = BinaryData()
    data.setup("validate")
    module = ClassificationModule(TinyClassifier(num_classes=2), CrossEntropy())
    trainer = make_trainer()
    trainer.validate(module, data)
    assert not any(k.startswith("val/op/") for k in trainer.callback_metrics)  # no point: argmax only
    probs = _probs(module, data.val)
    threshold = float(probs[:, 1].median())  # far from 0.5 for this untrained net: decisions differ
    module.operating_point = Point("youden", threshold)
    trainer = make_trainer()
    trainer.validate(module, data)
    m = trainer.callback_metrics
    y = data.val.labels.numpy()
    chosen = (probs[:, 1] >= threshold).long().numpy()
    argmax = probs.argmax(1).numpy()
    assert (chosen != argmax).any()
    assert float(m["val/balanced_accuracy"]) == pytest.approx(balanced_accuracy_score(y, argmax), abs=1e-5)
    assert float(m["val/op/balanced_accuracy"]) == pytest.approx(balanced_accuracy_score(y, chosen), abs=1e-5)
    assert float(m["val/op/accuracy"]) == pytest.approx((chosen == y).mean(), abs=1e-6)
    assert float(m["val/op/f1"]) == pytest.approx(f1_score(y, chosen, average="macro"), abs=1e-5)
    assert float(m["val/op/sensitivity"]) == pytest.approx(chosen[y == 1].mean(), abs=1e-6)
    assert float(m["val/op/specificity"]) == pytest.approx(1 - chosen[y == 0].mean(), abs=1e-6)
    out = module.predict_step({"image": data.val.images[:10]}, 0)
    torch.testing.assert_close(out["probabilities"], probs[:10])
    assert out["prediction"].tolist() == chosen[:10].tolist()


def test_single_sigmoid_output_is_thresholded_on_its_probability():
    module = ClassificationModule(TinyClassifier(num_classes=1), CrossEntropy(), activation="sigmoid")
    module.operating_point = Point("sensitivity", 0.3, 0.9)
    probs = torch.tensor([[0.1], [0.3], [0.7]])
    assert module.decide(probs).tolist() == [0, 1, 1]
    module.operating_point = None
    assert module.decide(probs).tolist() == [0, 0, 1]


@pytest.mark.parametrize("order", ["operating_point_first", "temperature_first"])
def test_callback_chooses_on_validation_stores_in_card_and_applies(make_trainer, tmp_path, order):
    """With the best weights and the temperature (whatever the callback order): the point of
    ``choose_operating_point`` on the validation probabilities, in the best checkpoint's card, restored
    by a load, applied by ``test`` (``test/op/*``)."""
    torch.manual_seed(0)
    data = BinaryData()
    module = ClassificationModule(
        TinyClassifier(num_classes=2), CrossEntropy(), optimizer=lambda p: torch.optim.Adam(p, lr=0.05)
    )
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/auroc", mode="max")
    point_cb, scaling = OperatingPoint(rule="youden"), TemperatureScaling()
    calls = []
    original = scaling.on_fit_end
    scaling.on_fit_end = lambda t, m: (calls.append(1), original(t, m))[1]
    callbacks = [point_cb, scaling] if order == "operating_point_first" else [scaling, point_cb]
    trainer = make_trainer(max_epochs=3, callbacks=[*callbacks, checkpoint])
    trainer.fit(module, data)
    temperature = scaling.results["temperature"]
    assert temperature != pytest.approx(1.0)
    assert module.temperature == pytest.approx(temperature)
    # reference: the best weights, softmax(logits / T) on the validation split
    best = ClassificationModule(TinyClassifier(num_classes=2), CrossEntropy())
    saved = torch.load(checkpoint.best_model_path, weights_only=True)
    best.load_state_dict(saved["state_dict"])
    best.temperature = temperature
    expected = choose_operating_point(_probs(best, data.val), data.val.labels, "youden")
    assert module.operating_point == expected == point_cb.point
    assert module.operating_point.threshold == pytest.approx(expected.threshold)
    assert expected.validation["n"] == len(data.val)
    card = card_of_checkpoint(saved, checkpoint.best_model_path, complete=False)
    assert card.operating_point == expected.to_dict()
    assert card.temperature == pytest.approx(temperature)
    assert len(calls) >= 1 and scaling._done
    # a load restores it; test reports both
    loaded = ClassificationModule(TinyClassifier(num_classes=2), CrossEntropy())
    loaded.on_load_checkpoint(saved)
    assert loaded.operating_point == expected
    trainer.test(module, data)
    m = trainer.callback_metrics
    y = data.test.labels.numpy()
    chosen = (_probs(module, data.test)[:, 1] >= expected.threshold).long().numpy()
    assert float(m["test/op/balanced_accuracy"]) == pytest.approx(
        balanced_accuracy_score(y, chosen), abs=1e-5
    )
    assert "test/balanced_accuracy" in m and "test/auroc" in m and "test/accuracy" in m


def test_temperature_scaling_runs_once_per_fit(make_trainer, tmp_path):
    """TemperatureScaling placed before OperatingPoint: the second call (from OperatingPoint) is a no-op."""
    torch.manual_seed(0)
    scaling = TemperatureScaling()
    fits = []
    import medfocal.tasks.calibration as calibration

    real = calibration.fit_temperature
    calibration.fit_temperature = lambda *a, **k: (fits.append(1), real(*a, **k))[1]
    try:
        trainer = make_trainer(max_epochs=1, callbacks=[scaling, OperatingPoint()])
        trainer.fit(ClassificationModule(TinyClassifier(num_classes=2), CrossEntropy()), BinaryData())
    finally:
        calibration.fit_temperature = real
    assert len(fits) == 1


def test_threshold_rule_on_a_multiclass_module_fails_at_fit_start(make_trainer):
    module = ClassificationModule(TinyClassifier(), CrossEntropy())
    trainer = make_trainer(max_epochs=1, callbacks=[OperatingPoint(rule="sensitivity")])
    with pytest.raises(ValueError) as err:
        trainer.fit(module, BlobClassificationData())
    assert str(err.value) == (
        "OperatingPoint(rule='sensitivity'): a threshold rule needs a binary task (2 softmax classes or 1 "
        "sigmoid output), the module has 3 softmax outputs; use rule='argmax' for multi-class or "
        "multi-label tasks"
    )


def test_argmax_rule_on_a_multiclass_module_stores_argmax(make_trainer, tmp_path):
    torch.manual_seed(0)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val/auroc", mode="max")
    trainer = make_trainer(max_epochs=1, callbacks=[OperatingPoint(rule="argmax"), checkpoint])
    module = ClassificationModule(TinyClassifier(), CrossEntropy())
    trainer.fit(module, BlobClassificationData())
    card = card_of_checkpoint(torch.load(checkpoint.best_model_path, weights_only=True), complete=False)
    assert card.operating_point["rule"] == "argmax" and card.operating_point["threshold"] is None


def test_bad_callback_arguments():
    with pytest.raises(
        ValueError, match=r"rule must be one of \('argmax', 'youden', 'sensitivity'\), got 'f1'"
    ):
        OperatingPoint(rule="f1")
    with pytest.raises(ValueError, match=r"target_sensitivity must be in \(0, 1\], got 1.5"):
        OperatingPoint(rule="sensitivity", target_sensitivity=1.5)


def test_update_card_file_keeps_the_point_beside_the_temperature(make_trainer, tmp_path):
    module = ClassificationModule(TinyClassifier(num_classes=2), CrossEntropy())
    trainer = make_trainer(max_epochs=1)
    trainer.fit(module, BinaryData())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["medfocal"]["operating_point"] is None
    update_card_file(path, temperature=1.5)
    card = update_card_file(path, operating_point=Point("youden", 0.25).to_dict())
    assert card.temperature == 1.5 and card.operating_point["threshold"] == 0.25
    with pytest.raises(ValueError, match="operating_point must be a dict with a 'rule'"):
        update_card_file(path, operating_point={"threshold": 0.2})
