"""Registry, create_model, build_model and model specs."""

from __future__ import annotations

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from torch import nn

from medfocal.nets import (
    DenseUNet,
    build_model,
    create_model,
    is_model,
    list_models,
    model_spec,
    register_model,
)


def test_list_models_wildcard():
    assert list_models("resnet*") == ["resnet18", "resnet34", "resnet50"]
    assert list_models("densenet*") == ["densenet121", "densenet169", "densenet201"]
    assert {"unet", "basic_unet", "dynunet", "dense_unet"} <= set(list_models("*unet"))
    assert list_models("nothing*") == []
    assert is_model("unet") and not is_model("unet3")


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model name 'resnet19'\. Did you mean 'resnet18'"):
        create_model("resnet19")
    with pytest.raises(ValueError, match="Did you mean 'dense_unet'"):
        create_model("denseunet")
    with pytest.raises(ValueError, match="Available: basic_unet"):
        create_model("qqqqqq")


def test_none_kwargs_are_dropped():
    model = create_model("unet", channels=(4, 8), strides=None, dropout=None)
    assert model._medfocal_spec["init_args"]["strides"] == [2]
    assert model._medfocal_spec["init_args"]["dropout"] == 0.0


def test_unexpected_kwarg_is_a_value_error():
    with pytest.raises(ValueError, match=r"create_model\('resnet18'\).*n_input_channels"):
        create_model("resnet18", n_input_channels=3)


def test_register_same_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_model("unet")(nn.Identity)


def test_build_model_from_monai_class_path_records_spec():
    spec = {
        "class_path": "monai.networks.nets.UNet",
        "init_args": {
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 2,
            "channels": [4, 8],
            "strides": [2],
        },
    }
    model = build_model(spec)
    assert type(model).__module__.startswith("monai.")
    assert model_spec(model) == spec
    assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 2, 16, 16)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"class_path": "collections.OrderedDict"}, "must name a torch.nn.Module subclass"),
        ({"class_path": "medfocal.nets.no_such_module.Net"}, "cannot import module"),
        ({"class_path": "torch.nn.NoSuchLayer"}, "has no attribute 'NoSuchLayer'"),
        ({"class_path": "NoSuchNet"}, "neither a dotted path"),
        ({"init_args": {}}, "needs 'class_path'"),
        ({"class_path": "medfocal.nets.UNet", "init_args": {"bogus": 1}}, "bogus"),
        ({"name": "unett"}, "Did you mean 'unet'"),
    ],
)
def test_build_model_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        build_model(spec)


def test_build_model_rejects_non_dict():
    with pytest.raises(ValueError, match="must be a dict"):
        build_model("unet")  # type: ignore[arg-type]


def test_model_spec_of_plain_monai_model_raises():
    from monai.networks.nets import UNet

    with pytest.raises(ValueError, match="has no _medfocal_spec"):
        model_spec(UNet(2, 1, 2, channels=(4, 8), strides=(2,)))


def test_non_json_init_arg_is_a_value_error():
    with pytest.raises(ValueError, match=r"init argument 'norm'.*cannot be stored"):
        create_model("unet", channels=(4, 8), norm=("instance", {"affine": object()}))


def test_direct_instantiation_records_spec():
    """Models LightningCLI instantiates from class_path carry the spec too."""
    model = DenseUNet(spatial_dims=3, in_channels=2, out_channels=2, block_config=(1, 1))
    assert model_spec(model)["class_path"] == "medfocal.nets.DenseUNet"
    assert model_spec(model)["init_args"]["block_config"] == [1, 1]


def test_subclass_does_not_inherit_parent_spec():
    class MyUNet(DenseUNet):
        pass

    assert not hasattr(MyUNet(block_config=(1, 1)), "_medfocal_spec")


@pytest.mark.parametrize(
    "config",
    [
        """
model:
  class_path: medfocal.nets.DenseUNet
  init_args: {spatial_dims: 3, in_channels: 2, out_channels: 2, block_config: [1, 1], growth_rate: 4}
""",
        """
model:
  class_path: medfocal.nets.ResNet18
  init_args: {spatial_dims: 2, in_channels: 1, out_channels: 3, prior: [0.8, 0.15, 0.05], widen_factor: 0.125}
""",
        """
model:
  class_path: medfocal.nets.DynUNet
  init_args:
    spatial_dims: 3
    kernel_size: [3, [3, 3, 1], 3]
    strides: [1, 2, [2, 2, 1]]
    filters: [4, 8, 16]
    norm_name: [instance, {affine: true}]
""",
    ],
)
def test_lightningcli_style_class_path_config(config):
    """jsonargparse (what LightningCLI uses) builds the classes from YAML, and build_model rebuilds them."""
    parser = ArgumentParser()
    parser.add_argument("--model", type=nn.Module)
    cfg = parser.parse_object(yaml.safe_load(config))
    model = parser.instantiate(cfg).model
    clone = build_model(model_spec(model))
    assert clone.state_dict().keys() == model.state_dict().keys()


def test_cli_typo_in_literal_is_rejected():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=nn.Module)
    bad = {"model": {"class_path": "medfocal.nets.ResNet18", "init_args": {"activation": "softmaxx"}}}
    with pytest.raises(Exception, match="softmax"):
        parser.parse_object(bad)
