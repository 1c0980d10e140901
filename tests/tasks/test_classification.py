"""Tests for medfocal.tasks.classification.ClassificationModule."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from tasks_standins import BlobClassificationData, CrossEntropy, TinyClassifier, _Dicts
from torch.utils.data import DataLoader

from medfocal.losses import FocalLoss
from medfocal.tasks import ClassificationModule


class _Recorder(pl.Callback):
    """Keep the validation probabilities and labels so metrics can be recomputed with scikit-learn."""

    def __init__(self) -> None:
        self.probs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        with torch.no_grad():
            self.probs.append(pl_module.probabilities(pl_module(batch["image"])))
        self.labels.append(batch["label"])


def test_short_fit_lowers_the_loss_and_beats_chance(make_trainer):
    torch.manual_seed(0)
    data = BlobClassificationData(n=90, batch_size=16)
    loss = FocalLoss(gamma=2.0, alpha="auto")  # resolved from the datamodule's class counts in setup
    module = ClassificationModule(TinyClassifier(), loss, optimizer=lambda p: torch.optim.Adam(p, lr=0.05))
    trainer = make_trainer(max_epochs=1, limit_train_batches=1)
    trainer.validate(module, data)
    loss_before = float(trainer.callback_metrics["val/loss"])
    trainer = make_trainer(max_epochs=15)
    trainer.fit(module, data)
    metrics = trainer.callback_metrics
    assert float(metrics["val/loss"]) < 0.8 * loss_before
    assert float(metrics["val/balanced_accuracy"]) > 0.6  # chance: 1/3
    assert float(metrics["val/auroc"]) > 0.8  # chance: 0.5


def test_metrics_agree_with_scikit_learn(make_trainer):
    recorder = _Recorder()
    module = ClassificationModule(TinyClassifier(), CrossEntropy())
    trainer = make_trainer(callbacks=[recorder])
    trainer.validate(module, BlobClassificationData(n=60))
    probs, labels = torch.cat(recorder.probs), torch.cat(recorder.labels)
    metrics = trainer.callback_metrics
    expected_bacc = balanced_accuracy_score(labels.numpy(), probs.argmax(1).numpy())
    assert float(metrics["val/balanced_accuracy"]) == pytest.approx(expected_bacc, abs=1e-5)
    expected_auc = roc_auc_score(labels.numpy(), probs.numpy(), multi_class="ovr", average="macro")
    assert float(metrics["val/auroc"]) == pytest.approx(expected_auc, abs=1e-4)
    from sklearn.metrics import cohen_kappa_score

    expected_kappa = cohen_kappa_score(labels.numpy(), probs.argmax(1).numpy(), weights="quadratic")
    assert float(metrics["val/kappa_quadratic"]) == pytest.approx(expected_kappa, abs=1e-5)
    from medfocal.metrics import expected_calibration_error

    expected_ece = float(expected_calibration_error(probs, labels, n_bins=15))
    assert expected_ece > 0.01  # the untrained stand-in is not calibrated: the check below can fail
    assert float(metrics["val/ece"]) == pytest.approx(expected_ece, abs=1e-5)
    for name in ("common", "rare", "rarest"):
        assert f"val/recall_{name}" in metrics
    assert module.confusion_matrix.shape == (3, 3)
    assert int(module.confusion_matrix.sum()) == 60


class NoLoss(torch.nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logits.sum() * 0


class FixedLogits(pl.LightningDataModule):
    """The "images" are the logits (the model is ``Identity``)."""

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.labels = logits, labels
        self.num_classes = logits.shape[1]
        self.class_names = [f"c{i}" for i in range(self.num_classes)]
        self.in_channels, self.spatial_dims, self.roi_size = 1, 2, None
        self.preprocessing = {"modality": "grey", "spatial_dims": 2}

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Dicts(self.logits, self.labels), batch_size=16)


@pytest.mark.parametrize("n_out", [1, 3])
def test_sigmoid_binary_and_multilabel_metric_values_match_scikit_learn(make_trainer, n_out):
    from sklearn import metrics as skm

    g = torch.Generator().manual_seed(0)
    n = 40
    labels = torch.randint(0, 2, (n, n_out), generator=g)
    logits = labels * 1.0 + torch.randn(n, n_out, generator=g)  # informative, not perfect
    module = ClassificationModule(torch.nn.Identity(), NoLoss(), activation="sigmoid", num_classes=n_out)
    target = labels[:, 0] if n_out == 1 else labels.float()
    trainer = make_trainer()
    trainer.validate(module, FixedLogits(logits, target), verbose=False)
    got = {k: float(v) for k, v in trainer.callback_metrics.items()}
    p = torch.sigmoid(logits).numpy()
    y = labels.numpy()
    hard = (p > 0.5).astype(int)
    if n_out == 1:  # scored as the two classes [1 - p, p]: macro = mean over both
        y1, p1, h1 = y[:, 0], p[:, 0], hard[:, 0]
        expected = {
            "accuracy": skm.accuracy_score(y1, h1),
            "balanced_accuracy": skm.balanced_accuracy_score(y1, h1),
            "auroc": skm.roc_auc_score(y1, p1),
            "f1": skm.f1_score(y1, h1, average="macro"),
            "average_precision": (
                skm.average_precision_score(y1, p1) + skm.average_precision_score(1 - y1, 1 - p1)
            )
            / 2,
            "recall_0": skm.recall_score(y1, h1, pos_label=0),  # one name for two scored classes: indices
        }
    else:
        expected = {
            "accuracy": float((hard == y).mean()),
            "balanced_accuracy": skm.recall_score(y, hard, average="macro"),
            "auroc": skm.roc_auc_score(y, p, average="macro"),
            "f1": skm.f1_score(y, hard, average="macro"),
            "map": skm.average_precision_score(y, p, average="macro"),
            "recall_c2": skm.recall_score(y[:, 2], hard[:, 2]),
        }
    for key, value in expected.items():
        assert got[f"val/{key}"] == pytest.approx(value, abs=1e-5), key


def test_num_classes_is_required_without_a_datamodule():
    module = ClassificationModule(TinyClassifier(), CrossEntropy())
    with pytest.raises(ValueError, match="num_classes"):
        module.setup("fit")


def test_alpha_auto_survives_the_checkpoint(make_trainer, tmp_path, recwarn):
    """``validate`` of a checkpoint without its training data computes the training loss (same alpha)."""
    from medfocal.losses import class_balanced_alpha

    torch.manual_seed(0)
    data = BlobClassificationData(n=60)
    module = ClassificationModule(TinyClassifier(), FocalLoss(gamma=2.0, alpha="auto"))
    trainer = make_trainer(max_epochs=1, limit_train_batches=2)
    trainer.fit(module, data)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    card = torch.load(path, weights_only=True)["medfocal"]
    expected_alpha = class_balanced_alpha(data.class_counts())
    assert card["loss_alpha"][""] == pytest.approx(expected_alpha.tolist(), rel=1e-6)
    assert card["training_data"]["class_counts"] == data.class_counts().tolist()
    with_data = make_trainer().validate(module, datamodule=data)[0]["val/loss"]

    # a new module and only a validation loader: no class counts anywhere but in the checkpoint
    fresh = ClassificationModule(TinyClassifier(), FocalLoss(gamma=2.0, alpha="auto"), num_classes=3)
    without = make_trainer().validate(fresh, dataloaders=data.val_dataloader(), ckpt_path=path)[0]["val/loss"]
    assert without == pytest.approx(with_data, rel=1e-6)
    torch.testing.assert_close(fresh.loss.alpha, expected_alpha.float())
    assert not [w for w in recwarn if "equal class counts" in str(w.message)]


def test_format_1_checkpoint_validates_with_its_temperature(make_trainer):
    """A checkpoint of medfocal format 1 (temperature also in ``state_dict``, no alpha) still loads."""
    from pathlib import Path

    from medfocal.nets import build_model

    path = Path(__file__).parents[1] / "fixtures" / "format1_classification.ckpt"
    legacy = torch.load(path, weights_only=True)
    net = build_model(legacy["medfocal"]["model"])
    module = ClassificationModule(net, FocalLoss(alpha="auto"), num_classes=3)
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.rand(1, 16, 16, generator=g), "label": torch.tensor(i % 3)} for i in range(6)]
    with pytest.warns(UserWarning, match="equal class counts"):  # format 1 did not keep the alpha
        make_trainer().validate(module, dataloaders=torch.utils.data.DataLoader(items, 6), ckpt_path=path)
    assert module.temperature == pytest.approx(legacy["medfocal"]["temperature"]) == pytest.approx(20.0)
    assert "temperature" not in module.state_dict()
    weight = legacy["state_dict"]["model.final.1.weight"]
    torch.testing.assert_close(module.model.state_dict()["final.1.weight"], weight)


def test_num_classes_must_match_the_data_classes(make_trainer):
    """Issue 15 item 5: 2 outputs for 3 classes is refused in setup, naming the config key."""
    module = ClassificationModule(TinyClassifier(num_classes=2), CrossEntropy(), num_classes=2)
    refused = r"2 output channel\(s\) \(model.init_args.num_classes\) .* 3 classes"
    with pytest.raises(ValueError, match=refused):
        make_trainer(limit_train_batches=1).fit(module, BlobClassificationData(n=12))
