"""Fixtures of the reliability tests: the demo's generated data and tiny checkpoints (no training).

The checkpoints are the threshold oracles of ``tests/inference/helpers.py`` (a 1x1 convolution that says
"lesion" where the intensity is above the lesions' lower bound), saved as medfocal checkpoints: they
segment ``medfocal.synthetic`` lesions almost perfectly, so a wrong result shows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))

from helpers import RESAMPLING_SPEC, oracle_checkpoint


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The demo's generated data (``make_lesion_dataset`` defaults: 48 x 48 x 32, oblique), 3 test cases."""
    from medfocal.synthetic import make_lesion_dataset

    return make_lesion_dataset(tmp_path_factory.mktemp("demo_data"), n_train=0, n_test=3)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    """Oracle, preprocessing to RAS 1 x 1 x 1.5 mm and intensities / 1000, 24 x 24 x 16 windows."""
    return oracle_checkpoint(tmp_path_factory.mktemp("ckpt") / "oracle.ckpt", roi_size=[24, 24, 16])


@pytest.fixture(scope="session")
def other_ckpt(tmp_path_factory) -> Path:
    """Another model: a higher threshold (smaller masks)."""
    return oracle_checkpoint(
        tmp_path_factory.mktemp("ckpt2") / "other.ckpt", roi_size=[24, 24, 16], threshold=0.75
    )


@pytest.fixture(scope="session")
def mri_ckpt(tmp_path_factory) -> Path:
    """The demo preset's preprocessing (``modality: mri``: z-score), where huge values overflow."""
    spec = dict(RESAMPLING_SPEC, modality="mri")
    spec.pop("intensity_range")
    return oracle_checkpoint(
        tmp_path_factory.mktemp("ckpt3") / "mri.ckpt", roi_size=[24, 24, 16], preprocessing=spec
    )
