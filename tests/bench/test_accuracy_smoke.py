"""`bench/accuracy.py --smoke`: one tiny epoch on real BreastMNIST, when ../shared/data is present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.realdata
def test_accuracy_smoke(shared_data, tmp_path):
    if not (shared_data / "medmnist" / "BreastMNIST.npz").is_file():
        # justified: real data is optional (../shared/data or $MEDFOCAL_DATA); skip and say so
        pytest.skip(f"{shared_data / 'medmnist' / 'BreastMNIST.npz'} not present")
    env = {**os.environ, "MEDFOCAL_DATA": str(shared_data), "MPLBACKEND": "Agg"}
    out, work = tmp_path / "out", tmp_path / "work"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "accuracy.py"),
            "--smoke",
            "--out",
            str(out),
            "--work",
            str(work),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    record = json.loads((out / "accuracy_runs.jsonl").read_text().splitlines()[0])
    assert record["dataset"] == "breastmnist" and record["smoke"] is True
    assert record["n_test"] == 156
    for key in (
        "accuracy",
        "balanced_accuracy",
        "auroc",
        "f1_macro",
        "recall_rarest",
        "ece_before",
        "ece_after",
    ):
        assert 0.0 <= record[key] <= 1.0, key
    # the module's own test loop and the benchmark's scikit-learn metrics agree
    assert record["module_test_accuracy"] == pytest.approx(record["accuracy"], abs=1e-6)
    report = (out / "accuracy.md").read_text()
    assert "published: MedMNIST v2 ResNet-18 (28)" in report
    assert (out / "accuracy_breastmnist.png").stat().st_size > 0


def test_metrics_of_the_benchmark():
    """The benchmark's metric helper against hand-computed values (no data needed)."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("bench_accuracy", REPO / "bench" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_accuracy"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 1, 2])
    out = module.classification_metrics(probs, labels, class_counts=np.array([10.0, 5.0, 1.0]), kappa=True)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["recall_per_class"] == pytest.approx([1.0, 0.5, 1.0])
    assert out["balanced_accuracy"] == pytest.approx(2.5 / 3)
    assert out["rarest_class"] == 2 and out["recall_rarest"] == pytest.approx(1.0)
    assert out["auroc"] == pytest.approx(1.0)
    assert -1.0 <= out["kappa_quadratic"] <= 1.0
