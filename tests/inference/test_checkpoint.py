from __future__ import annotations

import pytest
import torch
from helpers import oracle_checkpoint, save_checkpoint, threshold_oracle

from medfocal.inference import CheckpointInfo, load_checkpoint, read_checkpoint


def test_round_trip_rebuilds_model_and_ignores_non_model_keys(tmp_path):
    path = oracle_checkpoint(tmp_path / "a.ckpt", temperature=2.0)
    info, model = load_checkpoint(path)
    reference, _ = threshold_oracle()
    assert info.task == "segmentation" and info.temperature == 2.0
    assert info.foreground_names == ["lesion"]
    assert torch.equal(model.weight, reference.weight) and not model.training


def test_missing_key_is_named(tmp_path):
    model, spec = threshold_oracle()
    path = save_checkpoint(tmp_path / "a.ckpt", model, spec)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["medfocal"]["in_channels"]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"a\.ckpt.*in_channels"):
        read_checkpoint(path)


def test_not_a_medfocal_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a medfocal checkpoint"):
        read_checkpoint(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "nope.pt")


class _Evil:
    def __reduce__(self):  # would run code on a full unpickle
        return (print, ("pickle code ran",))


def test_unsafe_pickle_is_refused_unless_trusted(tmp_path):
    model, spec = threshold_oracle()
    path = save_checkpoint(tmp_path / "a.ckpt", model, spec)
    ckpt = torch.load(path, weights_only=True)
    ckpt["extra"] = _Evil()
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_checkpoint(path)
    info, _ = read_checkpoint(path, trust=True)
    assert info.in_channels == 1


def test_info_validation():
    base = {
        "task": "segmentation",
        "model": {},
        "activation": "softmax",
        "num_classes": 2,
        "in_channels": 1,
        "spatial_dims": 3,
        "preprocessing": None,
    }
    assert CheckpointInfo.from_dict(base).preprocessing == {}
    with pytest.raises(ValueError, match="activation"):
        CheckpointInfo.from_dict({**base, "activation": "relu"})
    with pytest.raises(ValueError, match="format_version"):
        CheckpointInfo.from_dict({**base, "format_version": 99})
    with pytest.raises(ValueError, match="temperature"):
        CheckpointInfo.from_dict({**base, "temperature": -1.0})
