"""FocalHead and prior_bias: the initial mean predicted probability equals the prior."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import DenseNet121 as MonaiDenseNet121
from monai.networks.nets import resnet18 as monai_resnet18
from torch import nn

from medfocal.nets import FocalHead, create_model, prior_bias, replace_classifier, set_prior

PRIORS = {"scalar": 0.01, "per_class": [0.85, 0.1, 0.05]}


def expected_probs(prior, activation, num_classes=3):
    if isinstance(prior, float):
        if activation == "sigmoid":
            return torch.full((num_classes,), prior)
        return torch.tensor([1 - (num_classes - 1) * prior] + [prior] * (num_classes - 1))
    return torch.tensor(prior)


def probs(logits, activation):
    return torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=1)


def test_sigmoid_bias_is_retinanet_formula():
    pi = 0.01
    assert prior_bias(1, pi, "sigmoid").item() == pytest.approx(-math.log((1 - pi) / pi))


def test_softmax_bias_is_log_prior_and_normalised():
    b = prior_bias(3, [0.7, 0.2, 0.1], "softmax")
    torch.testing.assert_close(b, torch.log(torch.tensor([0.7, 0.2, 0.1])))
    # unnormalised class counts/frequencies are normalised
    torch.testing.assert_close(
        torch.softmax(prior_bias(3, [0.7, 0.2, 0.2], "softmax"), 0), torch.tensor([7, 2, 2]) / 11
    )


@pytest.mark.parametrize("prior_kind", sorted(PRIORS))
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_focal_head_initial_mean_probability_equals_prior(activation, prior_kind):
    prior = PRIORS[prior_kind]
    head = FocalHead(16, 3, prior=prior, activation=activation)
    p = probs(head(torch.randn(64, 16) * 5), activation)
    torch.testing.assert_close(p.mean(0), expected_probs(prior, activation))


def test_focal_head_retinanet_gaussian_init_starts_near_prior():
    torch.manual_seed(0)
    head = FocalHead(64, 2, prior=0.01, activation="sigmoid", init_std=0.01)
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.2)
    p = torch.sigmoid(head(torch.rand(256, 64)))
    assert p.mean().item() == pytest.approx(0.01, rel=0.05)


def test_focal_head_on_feature_maps_is_a_1x1_convolution():
    head = FocalHead(4, 3, activation="sigmoid", init_std=0.1)
    x = torch.randn(2, 4, 5, 6, 7)
    conv = torch.nn.functional.conv3d(x, head.weight[:, :, None, None, None], head.bias)
    torch.testing.assert_close(head(x), conv)


def test_reset_prior_from_data():
    head = FocalHead(8, 3, prior=0.01, activation="softmax")
    head.reset_prior([0.6, 0.3, 0.1])
    torch.testing.assert_close(torch.softmax(head(torch.randn(4, 8)), 1)[0], torch.tensor([0.6, 0.3, 0.1]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 0.0, "sigmoid"), r"prior must be in \(0, 1\)"),
        ((3, 1.5, "softmax"), r"prior must be in \(0, 1\)"),
        ((3, [0.5, 0.5], "sigmoid"), "2 values, expected num_classes=3"),
        ((3, [0.5, 0.0, 0.5], "softmax"), "every prior must be in"),
        ((1, 0.1, "softmax"), "softmax needs num_classes >= 2"),
        ((5, 0.3, "softmax"), "leaves"),
        ((3, 0.1, "softmin"), "activation must be one of"),
    ],
)
def test_prior_bias_errors(args, message):
    with pytest.raises(ValueError, match=message):
        prior_bias(*args)


@pytest.mark.parametrize("prior_kind", sorted(PRIORS))
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_classifier_initial_mean_probability_equals_prior(
    classifier_name, activation, prior_kind, nets_cases
):
    name = classifier_name
    prior = PRIORS[prior_kind]
    model = create_model(name, **nets_cases.tiny_kwargs(name, 2, prior=prior, activation=activation)).eval()
    with torch.no_grad():
        p = probs(model(torch.randn(nets_cases.input_shape(name, 2, batch=4))), activation)
    torch.testing.assert_close(p.mean(0), expected_probs(prior, activation))


def test_linear_head_option_keeps_plain_linear(classifier_name, nets_cases):
    name = classifier_name
    model = create_model(name, **nets_cases.tiny_kwargs(name, 2, head="linear"))
    assert not any(isinstance(m, FocalHead) for m in model.modules())
    with pytest.raises(ValueError, match="head must be"):
        create_model(name, **nets_cases.tiny_kwargs(name, 2, head="conv"))


def test_state_dict_keys_match_monai_densenet():
    ours = create_model(
        "densenet121", spatial_dims=2, in_channels=1, out_channels=2, init_features=4, growth_rate=2
    )
    ref = MonaiDenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=4, growth_rate=2)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(ours.state_dict())


def test_replace_classifier_in_monai_models():
    dense = MonaiDenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=4, growth_rate=2)
    in_features = dense.class_layers.out.in_features
    replace_classifier(dense, FocalHead(in_features, 2, activation="sigmoid"))
    assert isinstance(dense.class_layers.out, FocalHead)

    res = monai_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125)
    replace_classifier(res, FocalHead(res.fc.in_features, 2))
    assert isinstance(res.fc, FocalHead)
    with torch.no_grad():
        p = torch.softmax(res.eval()(torch.randn(2, 1, 32, 32)), 1)
    torch.testing.assert_close(p[:, 1], torch.full((2,), 0.01))


def test_replace_classifier_errors():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(8, 2))
    replace_classifier(net, FocalHead(8, 2))  # falls back to the last nn.Linear
    assert isinstance(net[2], FocalHead)
    with pytest.raises(ValueError, match="differs from '2' in_features=8"):
        replace_classifier(net, FocalHead(9, 2))
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        replace_classifier(nn.Conv2d(1, 2, 1), FocalHead(8, 2))


def test_set_prior_from_class_counts(nets_cases):
    model = create_model("resnet18", **nets_cases.tiny_kwargs("resnet18", 2, activation="softmax")).eval()
    counts = torch.tensor([900.0, 80.0, 20.0])
    assert set_prior(model, (counts / counts.sum()).tolist()) == 1
    with torch.no_grad():
        p = torch.softmax(model(torch.randn(nets_cases.input_shape("resnet18", 2))), 1)
    torch.testing.assert_close(p.mean(0), counts / counts.sum())
    assert set_prior(nn.Linear(2, 2), 0.1) == 0
