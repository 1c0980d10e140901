"""The examples in medfocal.nets docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "factory",
    "heads",
    "segmentation",
    "classification",
    "dense_unet",
    "multiscale",
    "deep_supervision",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    mod = importlib.import_module(f"medfocal.nets.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
