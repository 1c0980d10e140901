"""Tests for medfocal.card: the model card's round trip, validation messages and in-place updates."""

from __future__ import annotations

import pytest
import torch

from medfocal.card import FORMAT_VERSION, ModelCard, card_of_checkpoint, update_card_file


def _card(**changes) -> ModelCard:
    base = dict(
        task="segmentation",
        model={"class_path": "torch.nn.Conv3d", "init_args": {"in_channels": 1, "out_channels": 2}},
        class_names=["background", "lesion"],
        num_classes=2,
        in_channels=1,
        spatial_dims=3,
        roi_size=(32, 32, 16),
        preprocessing={"modality": "ct", "spacing": [1.0, 1.0, 2.0]},
        temperature=1.5,
        loss_alpha={"focal": [0.25, 0.75]},
        training_data={"root": "/data/x", "class_counts": [900.0, 100.0]},
        medfocal_version="0.1.0",
    )
    base.update(changes)
    return ModelCard(**base)


def test_round_trip_is_json_and_equal():
    card = _card()
    data = card.to_dict()
    assert data["format_version"] == FORMAT_VERSION == 2
    assert data["roi_size"] == [32, 32, 16]  # lists, not tuples: torch.load(weights_only=True) reads it
    assert ModelCard.from_dict(data) == card


def test_format_1_dict_reads_with_empty_new_fields():
    v1 = {k: v for k, v in _card().to_dict().items() if k not in ("loss_alpha", "training_data")}
    v1 = {**v1, "format_version": 1}
    del v1["task_options"], v1["medfocal_version"]
    card = ModelCard.from_dict(v1)
    assert card.loss_alpha == {} and card.training_data == {} and card.temperature == 1.5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": 3}, "a.ckpt: medfocal format_version 3, this medfocal reads <= 2"),
        (
            {"task": "segmentaion"},
            "a.ckpt: unknown task 'segmentaion': expected one of "
            "['classification', 'detection', 'segmentation']; did you mean 'segmentation'?",
        ),
        ({"activation": "relu"}, "a.ckpt: activation must be one of ('softmax', 'sigmoid'), got 'relu'"),
        ({"temperature": -1.0}, "a.ckpt: temperature must be > 0, got -1.0"),
        ({"roi_size": [8, 8]}, "a.ckpt: roi_size [8, 8] has 2 values, expected spatial_dims=3"),
        ({"colour": "red"}, "a.ckpt: checkpoint['medfocal'] has unknown keys ['colour']"),
        ({"in_channels": None}, "a.ckpt: checkpoint['medfocal'] lacks (or has null) ['in_channels']"),
    ],
)
def test_errors_name_the_file(change, message):
    data = {**_card().to_dict(), **change}
    with pytest.raises(ValueError) as err:
        ModelCard.from_dict(data, "runs/a.ckpt")
    assert str(err.value).startswith("runs/" + message)


def test_incomplete_card_is_allowed_for_training_code():
    card = ModelCard.from_dict({"task": "classification", "num_classes": 3}, complete=False)
    assert card.class_names == ["class_0", "class_1", "class_2"]
    with pytest.raises(ValueError, match=r"lacks \(or has null\) \['model', 'in_channels', 'spatial_dims'\]"):
        card.check_complete()


def test_foreground_names():
    assert _card().foreground_names == ["lesion"]
    sigmoid = _card(activation="sigmoid", num_classes=1, class_names=["background", "lesion"])
    assert sigmoid.foreground_names == ["lesion"]
    multi = _card(activation="sigmoid", num_classes=2, class_names=["oedema", "core"])
    assert multi.foreground_names == ["oedema", "core"]


def test_not_a_checkpoint_names_the_file():
    with pytest.raises(ValueError, match=r"^x\.pt: not a medfocal checkpoint .*'weights'"):
        card_of_checkpoint({"weights": 1}, "x.pt")


def test_update_card_file_moves_a_format_1_file_to_one_temperature(tmp_path):
    path = tmp_path / "m.ckpt"
    v1 = {**_card(temperature=1.0).to_dict(), "format_version": 1}
    state = {"model.weight": torch.ones(2), "temperature": torch.tensor(1.0)}
    torch.save({"state_dict": state, "medfocal": v1, "epoch": 3}, path)
    card = update_card_file(path, temperature=1.7)
    saved = torch.load(path, weights_only=True)
    assert card.temperature == saved["medfocal"]["temperature"] == pytest.approx(1.7)
    assert saved["medfocal"]["format_version"] == FORMAT_VERSION
    assert list(saved["state_dict"]) == ["model.weight"] and saved["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]  # no temporary left
    with pytest.raises(ValueError, match="temperature must be > 0"):
        update_card_file(path, temperature=0.0)
    assert torch.load(path, weights_only=True)["medfocal"]["temperature"] == pytest.approx(1.7)


class _Opaque:
    """Not loadable with ``weights_only=True`` (a callback state some plug-in might keep)."""

    def __init__(self) -> None:
        self.x = 1


def test_update_card_file_trusts_only_when_asked(tmp_path):
    path = tmp_path / "own.ckpt"
    torch.save({"state_dict": {}, "medfocal": _card().to_dict(), "callbacks": {"x": _Opaque()}}, path)
    refused = r"intact, but cannot be loaded with weights_only=True.*pass --trust-checkpoint"
    with pytest.raises(ValueError, match=refused):
        update_card_file(path, temperature=2.0)
    assert update_card_file(path, trust=True, temperature=2.0).temperature == 2.0
    assert torch.load(path, weights_only=False)["medfocal"]["temperature"] == 2.0


def test_operating_point_field_round_trips_and_defaults_to_none():
    """A field added without a format bump: absent in older dicts (None: argmax), kept when present."""
    point = {
        "rule": "youden",
        "threshold": 0.31,
        "target_sensitivity": None,
        "val_sensitivity": 0.8,
        "val_specificity": 0.9,
        "validation": {"balanced_accuracy": 0.85, "n": 40.0},
    }
    card = _card(task="classification", operating_point=point)
    data = card.to_dict()
    assert data["format_version"] == 2 and data["operating_point"] == point
    assert ModelCard.from_dict(data) == card
    del data["operating_point"]
    assert ModelCard.from_dict(data).operating_point is None
    with pytest.raises(ValueError, match=r"a.ckpt: operating_point must be a dict with a 'rule'"):
        ModelCard.from_dict({**data, "operating_point": 0.5}, "a.ckpt")
