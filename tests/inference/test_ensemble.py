"""Checkpoint ensembles: mean of temperature-scaled probabilities, and refusal of mismatched cards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medfocal.inference import Predictor
from medfocal.inference.ensemble import ensemble_probabilities, load_ensemble
from tests.inference.helpers import save_checkpoint

SPEC2D = {"modality": "grey", "spatial_dims": 2, "intensity_range": [0.0, 1.0]}


def _conv(seed: int) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(1, 3, kernel_size=3, padding=1)
    spec = {
        "class_path": "torch.nn.Conv2d",
        "init_args": {"in_channels": 1, "out_channels": 3, "kernel_size": 3, "padding": 1},
    }
    return conv, spec


def _save(tmp_path, name, seed, temperature, **kw):
    model, spec = _conv(seed)
    kw.setdefault("class_names", ["bg", "a", "b"])
    save_checkpoint(
        tmp_path / name,
        model,
        spec,
        spatial_dims=2,
        preprocessing=dict(SPEC2D),
        temperature=temperature,
        **kw,
    )
    return model


def test_ensemble_of_two_equals_mean_of_probabilities(tmp_path):
    m0 = _save(tmp_path, "f0.ckpt", 0, 1.0)
    m1 = _save(tmp_path, "f1.ckpt", 1, 2.0)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected = (torch.softmax(m0(x), 1) + torch.softmax(m1(x) / 2.0, 1)) / 2
        info, model = load_ensemble(tmp_path)  # the folder: both *.ckpt
        assert info.temperature == 1.0 and info.class_names == ["bg", "a", "b"]
        torch.testing.assert_close(torch.softmax(model(x), 1), expected, atol=1e-6, rtol=1e-5)
        # through the Predictor (whole image, temperature 1 in the merged info)
        probs = Predictor(model, info, device="cpu").predict_tensor(x[0])
    torch.testing.assert_close(probs, expected[0], atol=1e-5, rtol=1e-4)


def test_sigmoid_mean():
    a, b = torch.tensor([[0.0, 2.0]]), torch.tensor([[4.0, -2.0]])
    got = ensemble_probabilities([a, b], [1.0, 2.0], "sigmoid")
    torch.testing.assert_close(got, (torch.sigmoid(a) + torch.sigmoid(b / 2)) / 2)


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("class_names", {"class_names": ["bg", "x", "y"]}),
        ("preprocessing", {"preprocessing": dict(SPEC2D, intensity_range=[0.0, 255.0])}),
        ("roi_size", {"roi_size": [16, 16]}),
    ],
)
def test_mismatched_cards_refused(tmp_path, field, kwargs):
    _save(tmp_path, "a.ckpt", 0, 1.0)
    model, spec = _conv(1)
    names = kwargs.pop("class_names", ["bg", "a", "b"])
    pre = kwargs.pop("preprocessing", dict(SPEC2D))
    save_checkpoint(
        tmp_path / "b.ckpt", model, spec, spatial_dims=2, class_names=names, preprocessing=pre, **kwargs
    )
    with pytest.raises(ValueError, match=rf"ensemble: {field} differs: .*a\.ckpt has .*b\.ckpt has"):
        load_ensemble([tmp_path / "a.ckpt", tmp_path / "b.ckpt"])


def test_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no \.ckpt"):
        load_ensemble(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt: checkpoint not found"):
        load_ensemble([tmp_path / "nope.ckpt"])
