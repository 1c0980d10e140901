"""class_balanced_alpha and alpha="auto" resolution via set_class_counts."""

from __future__ import annotations

import pytest
import torch
from _losses_ref import rand_case, softmax_focal_ref

from medfocal.losses import (
    DiceFocalLoss,
    FocalLoss,
    FocalTverskyLoss,
    class_balanced_alpha,
    set_class_counts,
)


def test_class_balanced_alpha_formula():
    counts = torch.tensor([100000.0, 500.0, 20.0])
    beta = 0.999
    effective = (1 - beta ** counts.double()) / (1 - beta)
    w = 1 / effective
    expected = (w / w.sum() * 3).float()
    torch.testing.assert_close(class_balanced_alpha(counts, beta), expected)
    torch.testing.assert_close(class_balanced_alpha(counts, 0.0), torch.ones(3))
    assert float(class_balanced_alpha([5.0, 0.0])[1]) > 1.0  # absent class counts as one sample


@pytest.mark.parametrize(
    "bad", [{"beta": 1.0}, {"beta": -0.1}, {"counts": [[1.0, 2.0]]}, {"counts": [-1.0, 2.0]}]
)
def test_class_balanced_alpha_errors(bad):
    kwargs = {"counts": [10.0, 2.0], "beta": 0.9} | bad
    with pytest.raises(ValueError):
        class_balanced_alpha(**kwargs)


def test_auto_alpha_resolved_in_sub_losses(seg_shape):
    counts = torch.tensor([5000.0, 300.0, 40.0])
    loss = DiceFocalLoss(alpha="auto", lambda_region=0.0)
    x, t = rand_case(seg_shape)
    with pytest.raises(ValueError, match="set_class_counts"):
        loss(x, t)
    assert set_class_counts(loss, counts) is loss
    expected = class_balanced_alpha(counts)
    torch.testing.assert_close(loss.focal.alpha, expected)
    torch.testing.assert_close(loss(x, t), softmax_focal_ref(x, t, 2.0, expected.double()))
    ftl = set_class_counts(FocalTverskyLoss(focal_alpha="auto", lambda_focal=1.0), counts)
    torch.testing.assert_close(ftl.focal.alpha, expected)


def test_auto_alpha_sigmoid_binary_and_checkpoint():
    loss = set_class_counts(FocalLoss("sigmoid", alpha="auto"), torch.tensor([900.0, 100.0]))
    w = class_balanced_alpha([900.0, 100.0])
    torch.testing.assert_close(loss.alpha, w[1] / w.sum())
    with pytest.raises(ValueError, match="negatives, positives"):
        set_class_counts(FocalLoss("sigmoid", alpha="auto"), torch.ones(3))
    # alpha is not persistent: a fresh "auto" loss loads the state dict and is resolved again later
    fresh = FocalLoss("sigmoid", alpha="auto")
    assert "alpha" not in loss.state_dict()
    fresh.load_state_dict(loss.state_dict())
    assert fresh.alpha is None and fresh.alpha_auto
    x, y = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    with pytest.raises(ValueError, match="alpha='auto' is unresolved"):
        fresh(x, y)
    set_class_counts(fresh, torch.tensor([900.0, 100.0]))
    torch.testing.assert_close(fresh.alpha, loss.alpha)
    torch.testing.assert_close(fresh(x, y), loss(x, y))


@pytest.mark.slow
def test_alpha_null_from_the_command_line_means_no_alpha(tmp_path):
    """LightningCLI hands `--model.init_args.loss.init_args.alpha=null` to a nested loss as 'None'."""
    import subprocess
    import sys
    from pathlib import Path

    from medfocal.losses import FocalLoss

    assert FocalLoss(alpha="None").alpha is None and FocalLoss(alpha="null").alpha is None
    with pytest.raises(ValueError, match="'nope'"):
        FocalLoss(alpha="nope")
    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-m", "medfocal.cli", "fit", "--config", "nodule_cls_ct",
         "--model.init_args.loss.init_args.alpha=null", "--print_config"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(repo)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    import yaml

    loss = yaml.safe_load(run.stdout)["model"]["init_args"]["loss"]
    assert loss["class_path"] == "medfocal.losses.FocalLoss"
    assert FocalLoss(**loss["init_args"]).alpha is None
