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


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_accuracy", REPO / "bench" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_accuracy"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_metrics_of_the_benchmark():
    """The benchmark's metric helper against hand-computed values (no data needed)."""
    import numpy as np

    module = _bench()
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 1, 2])
    out = module.classification_metrics(probs, labels, class_counts=np.array([10.0, 5.0, 1.0]), kappa=True)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["recall_per_class"] == pytest.approx([1.0, 0.5, 1.0])
    assert out["balanced_accuracy"] == pytest.approx(2.5 / 3)
    assert out["rarest_class"] == 2 and out["recall_rarest"] == pytest.approx(1.0)
    assert out["auroc"] == pytest.approx(1.0)
    # quadratic kappa by hand: predictions [0, 1, 0, 2]; weights (i - j)^2 / 4; observed sum w O = 1/4,
    # expected sum w r_i c_j / N over true counts r = [1, 2, 1] and predicted c = [2, 1, 1] = 20 / 16
    assert out["kappa_quadratic"] == pytest.approx(1 - 0.25 / 1.25)


def test_drive_outer_folds_partition_the_images():
    """Each DRIVE image is held out in exactly one of the 4 outer folds, 5 per fold, never in training."""
    from medfocal.data.layouts import Layout

    module = _bench()

    class Twenty(Layout):
        def records(self):
            return [{"image": f"{i}.tif", "label": f"{i}.gif", "case": f"{i:02d}"} for i in range(21, 41)]

    held = []
    for fold in range(module.DRIVE_FOLDS):
        records = module._HeldOutLayout(Twenty(), fold).records()
        test = [r["case"] for r in records if r.get("split") == "test"]
        assert len(test) == 5 and len(records) == 20
        held += test
    assert sorted(held) == [f"{i:02d}" for i in range(21, 41)]


def test_brats_scores_come_from_medfocal_evaluate():
    """Region scores against hand-computed Dice/IoU and MONAI's HD95 with the affine's 2 mm spacing."""
    import numpy as np
    import torch
    from monai.metrics import compute_hausdorff_distance

    module = _bench()
    truth = np.zeros((30, 20, 16), np.int64)
    truth[5:15, 5:15, 4:12] = 2  # oedema: whole tumour only
    truth[8:12, 8:12, 6:10] = 4  # enhancing: also tumour core
    pred = np.zeros_like(truth)
    pred[6:16, 5:15, 4:12] = 2
    pred[8:12, 8:12, 6:8] = 4
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    row = module.brats_scores(pred, truth, affine)
    whole_p, whole_t = pred > 0, truth > 0
    inter = np.logical_and(whole_p, whole_t).sum()
    assert row["dice_whole tumour"] == pytest.approx(2 * inter / (whole_p.sum() + whole_t.sum()))
    assert row["iou_whole tumour"] == pytest.approx(inter / np.logical_or(whole_p, whole_t).sum())
    assert row["dice_enhancing"] == pytest.approx(2 * 32 / (32 + 64))
    hd = compute_hausdorff_distance(
        torch.as_tensor(whole_p)[None, None], torch.as_tensor(whole_t)[None, None], percentile=95, spacing=2.0
    )
    assert row["hd95_whole tumour"] == pytest.approx(float(hd))
    assert np.isnan(row["dice_necrosis"]) and np.isnan(row["iou_non_enhancing"])  # absent from both


def test_cross_validated_mean_averages_folds_then_seeds():
    module = _bench()
    rows = [
        {"seed": 0, "fold": 0, "x": 0.2},
        {"seed": 0, "fold": 1, "x": 0.4},
        {"seed": 1, "fold": 0, "x": 0.6},
        {"seed": 1, "fold": 1, "x": 0.8},
    ]
    # seed means 0.3 and 0.7: mean 0.5, sample std 0.283
    assert module._cv_mean_std(rows, "x") == "0.500 ± 0.283"
    # one seed: the spread over the folds
    assert module._cv_mean_std(rows[:2], "x") == "0.300 ± 0.141"


def test_sweep_table_chooses_on_validation_not_test():
    module = _bench()

    def record(config, seed, val, acc):
        return {"dataset": "breastmnist", "config": config, "seed": seed, "val_score": val, "accuracy": acc,
                "auroc": acc, "fit_seconds": 10.0, "epochs": 30, "best_epoch": 7}  # fmt: skip

    records = [
        record("base", 0, 0.90, 0.95),  # best on test, worse on validation
        record("base", 1, 0.92, 0.93),
        record("w05", 0, 0.95, 0.80),
        record("w05", 1, 0.97, 0.82),
    ]
    table = module.sweep_table(records, "breastmnist")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    chosen = [label for label, line in rows.items() if "chosen on validation" in line]
    assert chosen == [module.SWEEPS["breastmnist"]["w05"][0] + " **(chosen on validation)**"]
    assert "0.960 ± 0.014" in rows[chosen[0]]  # mean ± sample std of the validation AUC
    assert module.sweep_table(records, "retinamnist") is None  # no sweep records for that dataset
