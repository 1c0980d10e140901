"""Tiny constructor arguments for every registered model, so tests cover the whole registry on CPU."""

from __future__ import annotations

SEGMENTATION = {
    "unet": {"channels": (4, 8, 16), "num_res_units": 1},
    "basic_unet": {"features": (4, 4, 8, 16, 32, 4)},
    "dynunet": {"num_levels": 3, "base_filters": 4},
    "dense_unet": {"init_features": 4, "growth_rate": 4, "block_config": (1, 1, 2), "bn_size": 2},
}
CLASSIFICATION = {
    "densenet121": {"init_features": 4, "growth_rate": 2, "bn_size": 2},
    "densenet169": {"init_features": 4, "growth_rate": 2, "bn_size": 2},
    "densenet201": {"init_features": 4, "growth_rate": 2, "bn_size": 2},
    "resnet18": {"widen_factor": 0.125},
    "resnet34": {"widen_factor": 0.125},
    "resnet50": {"widen_factor": 0.125},
    "multiscale_resnet": {"widen_factor": 0.125, "fusion_features": 8, "depth": 10},
}
# DenseNet halves five times and BasicUNet four (instance norm needs > 1 voxel): 32 per axis in 3D.
MIN_SIZE = {"densenet121": 32, "densenet169": 32, "densenet201": 32, "basic_unet": 32}


def input_shape(name: str, spatial_dims: int, batch: int = 2, channels: int = 2) -> tuple[int, ...]:
    size = 32 if spatial_dims == 2 else MIN_SIZE.get(name, 16)
    return (batch, channels) + (size,) * spatial_dims


def tiny_kwargs(name: str, spatial_dims: int, out_channels: int = 3, **extra) -> dict:
    base = SEGMENTATION.get(name, CLASSIFICATION.get(name))
    return {"spatial_dims": spatial_dims, "in_channels": 2, "out_channels": out_channels, **base, **extra}
