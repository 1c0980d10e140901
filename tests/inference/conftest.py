"""Inference test fixtures: small oblique, anisotropic, non-RAS lesion cases and oracle checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import oracle_checkpoint


@pytest.fixture(scope="session")
def lesion_cases(tmp_path_factory) -> Path:
    """3 test cases (40 x 36 x 20, spacing 1.2 x 0.9 x 2.5 mm, oblique, x flipped) with larger lesions."""
    from medfocal.synthetic import make_lesion_dataset

    return make_lesion_dataset(
        tmp_path_factory.mktemp("lesions_inf"),
        n_train=0,
        n_test=3,
        shape=(40, 36, 20),
        lesion_radius=(4.0, 6.0),
    )


@pytest.fixture(scope="session")
def oracle_ckpt(tmp_path_factory) -> Path:
    """Threshold oracle, preprocessing reorients to RAS and resamples to 1 x 1 x 1.5 mm, 24^3 windows."""
    return oracle_checkpoint(tmp_path_factory.mktemp("ckpt") / "oracle.ckpt", roi_size=[24, 24, 16])
