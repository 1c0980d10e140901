"""The classification head decides by the card's operating point (argmax without one)."""

from __future__ import annotations

import csv

import numpy as np
import torch

from medfocal.card import update_card_file
from medfocal.inference import Predictor
from medfocal.metrics.operating_point import OperatingPoint


def _rows(tmp_path, threshold: float | None) -> list[dict[str, str]]:
    from helpers import save_checkpoint
    from monai.networks.nets import Classifier
    from PIL import Image

    init = {"in_shape": [1, 16, 16], "classes": 2, "channels": [4], "strides": [2]}
    torch.manual_seed(0)
    spec = {"class_path": "monai.networks.nets.Classifier", "init_args": init}
    ckpt = save_checkpoint(
        tmp_path / "cls.ckpt",
        Classifier(**init),
        spec,
        task="classification",
        class_names=["benign", "malignant"],
        spatial_dims=2,
        preprocessing={"modality": "grey", "resize": [16, 16]},
    )
    if threshold is not None:
        update_card_file(ckpt, operating_point=OperatingPoint("youden", threshold).to_dict())
    inp = tmp_path / "imgs"
    inp.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(inp / f"img_{i}.png")
    out = tmp_path / f"o_{threshold}"
    assert Predictor.from_checkpoint(ckpt).predict_folder(inp, out, progress=False).ok
    return list(csv.DictReader((out / "predictions.csv").open()))


def test_prediction_column_follows_the_operating_point(tmp_path):
    plain = _rows(tmp_path, None)
    p = np.array([float(r["prob_malignant"]) for r in plain])
    assert [r["prediction"] for r in plain] == [["benign", "malignant"][k] for k in (p >= 0.5).astype(int)]
    assert {r["decision_rule"] for r in plain} == {"argmax"}
    threshold = float(np.median(p))  # calls half of the cases malignant, whatever argmax says
    rows = _rows(tmp_path, threshold)
    assert [float(r["prob_malignant"]) for r in rows] == p.tolist()
    expected = ["malignant" if v >= threshold else "benign" for v in p]
    assert [r["prediction"] for r in rows] == expected == [r["predicted_class"] for r in rows]
    assert [int(r["predicted_index"]) for r in rows] == [int(v >= threshold) for v in p]
    assert expected != [r["prediction"] for r in plain]
    assert {r["decision_rule"] for r in rows} == {f"youden@{threshold:.6g}"}
