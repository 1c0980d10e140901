"""Shared fixtures: small generated datasets and the location of the optional real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

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


# --- CI: a fixed hypothesis profile, and a check that unmarked tests stay fast -----------------------

# CI=true (set by .ci/run and by most CI services) selects it; locally hypothesis explores at random
hypothesis_settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    hypothesis_settings.load_profile("ci")

#: ``MEDFOCAL_MAX_UNMARKED_S`` (``make test-fast``) lists every test without the ``slow`` or ``realdata``
#: marker that spends longer than that in its call phase (fixture set-up, shared between tests under
#: xdist, is not counted), and fails the run when one takes over ``MEDFOCAL_FAIL_UNMARKED_S`` (default 4x
#: the listing limit): the listing catches a test that should be marked, the failure a runaway one,
#: without making CI flaky on a loaded machine.
MAX_UNMARKED_ENV = "MEDFOCAL_MAX_UNMARKED_S"
FAIL_UNMARKED_ENV = "MEDFOCAL_FAIL_UNMARKED_S"
_too_slow: list[tuple[str, float]] = []


def _limits() -> tuple[float, float] | None:
    limit = os.environ.get(MAX_UNMARKED_ENV)
    if not limit:
        return None
    return float(limit), float(os.environ.get(FAIL_UNMARKED_ENV, 4 * float(limit)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    limits = _limits()
    if limits is None or report.when != "call" or report.skipped:
        return
    if "slow" in report.keywords or "realdata" in report.keywords:
        return
    if report.duration > limits[0]:
        _too_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    limits = _limits()
    if _too_slow and limits is not None:
        terminalreporter.section(
            f"unmarked tests over {limits[0]:g} s (mark them slow; over {limits[1]:g} s fails the run)"
        )
        for nodeid, seconds in sorted(_too_slow, key=lambda t: -t[1]):
            terminalreporter.write_line(f"{seconds:6.1f}s  {nodeid}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    limits = _limits()
    if limits and any(t > limits[1] for _, t in _too_slow) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
