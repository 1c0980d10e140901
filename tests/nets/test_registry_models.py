"""Every registered model, 2D and 3D: forward shapes and rebuild from its spec (timm-style registry tests)."""

from __future__ import annotations

import json

import pytest
import torch

from medfocal.nets import build_model, create_model, list_models


def test_every_registered_model_has_a_test_case(nets_cases):
    assert set(list_models()) == set(nets_cases.SEGMENTATION) | set(nets_cases.CLASSIFICATION)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_shape(model_name, spatial_dims, nets_cases):
    name = model_name
    torch.manual_seed(0)
    model = create_model(name, **nets_cases.tiny_kwargs(name, spatial_dims)).eval()
    shape = nets_cases.input_shape(name, spatial_dims)
    with torch.no_grad():
        out = model(torch.randn(shape))
    expected = (shape[0], 3, *shape[2:]) if name in nets_cases.SEGMENTATION else (shape[0], 3)
    assert out.shape == expected
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_rebuild_from_spec_gives_same_outputs(model_name, spatial_dims, nets_cases):
    name = model_name
    torch.manual_seed(0)
    model = create_model(name, **nets_cases.tiny_kwargs(name, spatial_dims)).eval()
    spec = json.loads(json.dumps(model._medfocal_spec))  # JSON types only, as stored in a checkpoint
    assert spec["class_path"].startswith("medfocal.nets.")
    clone = build_model(spec).eval()
    assert type(clone) is type(model)
    assert clone.state_dict().keys() == model.state_dict().keys()
    clone.load_state_dict(model.state_dict())
    x = torch.randn(nets_cases.input_shape(name, spatial_dims, batch=1))
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))
    assert clone._medfocal_spec == spec


def test_class_path_matches_registry_name(model_name, nets_cases):
    name = model_name
    """The class_path form (LightningCLI) builds the same class as the registry name."""
    model = create_model(name, **nets_cases.tiny_kwargs(name, 2))
    cls_name = model._medfocal_spec["class_path"].rsplit(".", 1)[1]
    short = build_model({"class_path": cls_name, "init_args": model._medfocal_spec["init_args"]})
    assert type(short) is type(model)
    by_name = build_model({"name": name, "kwargs": nets_cases.tiny_kwargs(name, 2)})
    assert by_name._medfocal_spec == model._medfocal_spec


def test_backward_reaches_first_layer(model_name, nets_cases):
    name = model_name
    """A non-zero gradient reaches the first convolution.

    The focal head starts at zero weight (so every gradient behind it is zero at initialisation);
    give the zero-initialised tensors small random values first, as one optimiser step would.
    """
    torch.manual_seed(0)
    model = create_model(name, **nets_cases.tiny_kwargs(name, 2))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(std=0.1)
    out = model(torch.randn(nets_cases.input_shape(name, 2)))
    out.float().pow(2).mean().backward()
    first = next(p for p in model.parameters() if p.ndim > 1)
    assert first.grad is not None
    assert first.grad.abs().sum() > 0, f"{name}: zero gradient at the first layer"
