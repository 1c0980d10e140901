"""Fixtures for the loss tests: small random logits/targets in 2D, 3D and classification shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# importlib import mode: make the reference helpers (_losses_ref.py) importable from the test modules.
sys.path.insert(0, str(Path(__file__).parent))

# (B, C, *spatial) shapes: classification, 2D, 3D -- tiny so the whole folder runs in seconds.
SHAPES = {"cls": (6, 3), "2d": (2, 3, 5, 6), "3d": (2, 3, 4, 5, 3)}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["2d", "3d"])
def seg_shape(request) -> tuple[int, ...]:
    return SHAPES[request.param]


@pytest.fixture(params=["cls", "2d", "3d"])
def any_shape(request) -> tuple[int, ...]:
    return SHAPES[request.param]
