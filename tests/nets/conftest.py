"""tests/nets: tiny constructor arguments for every registered model, and single-threaded torch.

The cases live here (not in an importable helper module) so the tests work under any pytest import mode:
tests ask for the ``nets_cases`` fixture, and ``model_name`` / ``classifier_name`` / ``segmenter_name``
arguments are parametrised over the cases by :func:`pytest_generate_tests`.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

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
MIN_SIZE_3D = {"densenet121": 32, "densenet169": 32, "densenet201": 32, "basic_unet": 32}


def input_shape(name: str, spatial_dims: int, batch: int = 2, channels: int = 2) -> tuple[int, ...]:
    size = 32 if spatial_dims == 2 else MIN_SIZE_3D.get(name, 16)
    return (batch, channels) + (size,) * spatial_dims


def tiny_kwargs(name: str, spatial_dims: int, out_channels: int = 3, **extra) -> dict:
    base = SEGMENTATION.get(name, CLASSIFICATION.get(name))
    return {"spatial_dims": spatial_dims, "in_channels": 2, "out_channels": out_channels, **base, **extra}


def pytest_generate_tests(metafunc):
    params = {
        "model_name": sorted({**SEGMENTATION, **CLASSIFICATION}),
        "classifier_name": sorted(CLASSIFICATION),
        "segmenter_name": sorted(SEGMENTATION),
    }
    for arg, names in params.items():
        if arg in metafunc.fixturenames:
            metafunc.parametrize(arg, names)


@pytest.fixture
def nets_cases() -> SimpleNamespace:
    return SimpleNamespace(
        SEGMENTATION=SEGMENTATION,
        CLASSIFICATION=CLASSIFICATION,
        input_shape=input_shape,
        tiny_kwargs=tiny_kwargs,
    )


@pytest.fixture(autouse=True)
def _single_thread():
    """On shared CPUs intra-op threads only contend; tiny models run fastest on one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
