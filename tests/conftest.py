"""Shared fixtures: small generated datasets and the location of the optional real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _data_check_cache(tmp_path_factory, monkeypatch):
    """``check: quick`` remembers checked files; tests keep that memory out of the user's ~/.cache."""
    monkeypatch.setenv("MEDFOCAL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "medfocal_cache"))


REPO = Path(__file__).resolve().parents[1]


def real_data_root() -> Path:
    """``$MEDFOCAL_DATA`` or ``<repo>/../shared/data``; tests that need it skip (saying so) when absent."""
    return Path(os.environ.get("MEDFOCAL_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = real_data_root()
    if not root.is_dir():
        # justified: real data is optional (../shared/data or $MEDFOCAL_DATA); skip and say so
        pytest.skip(f"real data folder {root} not present (set MEDFOCAL_DATA)")
    return root


@pytest.fixture(scope="session")
def lesion_dataset(tmp_path_factory) -> Path:
    """A tiny Decathlon-style 3D folder: 6 training + 2 test cases, oblique non-RAS affines."""
    from medfocal.synthetic import make_lesion_dataset

    return make_lesion_dataset(tmp_path_factory.mktemp("lesions"), n_train=6, n_test=2, shape=(32, 32, 24))


@pytest.fixture(scope="session")
def lesion_images_2d(tmp_path_factory) -> Path:
    """Paired ``images/`` and ``masks/`` PNG folders of 8 RGB 64x64 lesion images."""
    from medfocal.synthetic import make_lesion_images_2d

    return make_lesion_images_2d(tmp_path_factory.mktemp("lesions2d"), n=8)


@pytest.fixture(scope="session")
def classification_npz(tmp_path_factory) -> Path:
    """A MedMNIST-style npz: 3 imbalanced classes, 28x28 grey."""
    from medfocal.synthetic import make_classification_npz

    return make_classification_npz(tmp_path_factory.mktemp("npz") / "toy.npz")
