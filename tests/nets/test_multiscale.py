"""MultiScaleResNet: scales, shared vs separate trunks, fusion."""

from __future__ import annotations

import pytest
import torch

from medfocal.nets import MultiScaleResNet


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_separate_trunks_have_more_parameters(spatial_dims):
    kw = {"spatial_dims": spatial_dims, "widen_factor": 0.125, "depth": 10, "fusion_features": 0}
    shared, separate = MultiScaleResNet(**kw), MultiScaleResNet(shared_trunk=False, **kw)
    assert len(shared.trunks) == 1 and len(separate.trunks) == 2
    assert n_params(separate) > n_params(shared)
    x = torch.randn(2, 3, *(16,) * spatial_dims)
    assert separate(x).shape == shared(x).shape == (2, 2)


def test_head_sees_features_of_every_scale():
    net = MultiScaleResNet(scales=(1.0, 0.5, 0.25), widen_factor=0.125, depth=10, fusion_features=0)
    assert net.head.in_features == 3 * 64


def test_scales_change_the_output():
    torch.manual_seed(0)
    net = MultiScaleResNet(scales=(1.0, 0.5), widen_factor=0.125, depth=10, init_std=0.5).eval()
    torch.manual_seed(0)
    single = MultiScaleResNet(scales=(1.0,), widen_factor=0.125, depth=10, init_std=0.5).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(net(x), single(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 101}, "depth must be one of"),
        ({"scales": ()}, "non-empty and positive"),
        ({"scales": (1.0, 0.0)}, "non-empty and positive"),
        ({"head": "mlp"}, "head must be"),
        ({"activation": "relu"}, "activation must be one of"),
    ],
)
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiScaleResNet(**kwargs)
