"""DDP on CPU (2 gloo processes) against one process: same metric values, balanced draws split by rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow


def _run(out: Path, devices: int, npz: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    env.update(OMP_NUM_THREADS="1", MASTER_PORT=str(31000 + os.getpid() % 2000))
    cmd = [sys.executable, str(HERE / "ddp_script.py"), str(out), str(devices), str(npz)]
    result = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    from medfocal.synthetic import make_classification_npz

    out = tmp_path_factory.mktemp("ddp")
    npz = make_classification_npz(out / "toy.npz", n=(90, 30, 30))
    _run(out, 1, npz)
    _run(out, 2, npz)
    return out


def test_ddp_validation_metrics_equal_single_process(runs):
    one = json.loads((runs / "metrics_1.json").read_text())
    two = json.loads((runs / "metrics_2.json").read_text())
    for key in ("val/dice", "val/iou", "val/sensitivity", "val/specificity", "val/hd95", "val/dice_lesion"):
        assert two[key] == pytest.approx(one[key], abs=1e-5), key
    for key in ("val/accuracy", "val/balanced_accuracy", "val/auroc", "val/f1", "val/average_precision"):
        assert two[key] == pytest.approx(one[key], abs=1e-5), key
    assert two["val/recall_rarest"] == pytest.approx(one["val/recall_rarest"], abs=1e-5)


def test_balanced_sampler_under_ddp_splits_the_draws_and_stays_balanced(runs):
    ranks = [json.loads((runs / f"draws_rank{r}.json").read_text()) for r in (0, 1)]
    # 90 training images (the npz's val split is separate): the weighted draw of 90 is split 45 + 45
    assert len(ranks[0]) == len(ranks[1]) == 45
    assert ranks[0] != ranks[1]
    share = np.bincount(ranks[0] + ranks[1], minlength=3) / 90
    assert np.all(np.abs(share - 1 / 3) < 0.15), share  # the training split itself is 70/20/10 %
