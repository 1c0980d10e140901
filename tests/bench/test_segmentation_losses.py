"""`bench/segmentation_losses.py`: each arm is the plan with only its loss swapped."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest
import yaml

from medfocal.cli import main
from medfocal.data.planning import plan_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import segmentation_losses


@pytest.mark.parametrize("arm", list(segmentation_losses.LOSSES))
def test_each_arm_changes_the_loss_and_nothing_else(arm, lesion_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    plan_dataset(lesion_dataset, out=tmp_path / "plan.yaml", show=False, network="dynunet")
    (tmp_path / "loss.yaml").write_text(segmentation_losses.overlay(arm))
    assert main(["fit", "--config", "plan.yaml", "--print_config"]) == 0
    planned = yaml.safe_load(capsys.readouterr().out)
    assert main(["fit", "--config", "plan.yaml", "--config", "loss.yaml", "--print_config"]) == 0
    merged = yaml.safe_load(capsys.readouterr().out)
    loss = merged["model"]["init_args"].pop("loss")
    assert loss["class_path"] == "medfocal.nets.DeepSupervisionLoss"
    class_path, init_args = segmentation_losses.LOSSES[arm]
    inner = loss["init_args"]["loss"]
    assert inner["class_path"] == class_path
    for key, value in init_args.items():
        assert inner["init_args"][key] == value, key
    # every other argument is the class's default, not a value left over from the plan's loss
    cls = getattr(importlib.import_module(class_path.rsplit(".", 1)[0]), class_path.rsplit(".", 1)[1])
    for name, param in inspect.signature(cls).parameters.items():
        if name not in init_args and param.default is not inspect.Parameter.empty:
            assert inner["init_args"][name] == param.default, (arm, name)
    planned["model"]["init_args"].pop("loss")
    assert merged == planned  # the network, data, trainer, optimiser and schedule of the plan


@pytest.mark.parametrize("arm", list(segmentation_losses.ABLATIONS))
def test_each_ablation_changes_its_one_part(arm, lesion_dataset, tmp_path, monkeypatch, capsys):
    """An ablation arm is the Dice + CE arm with one change: deep supervision off, or the baseline's
    augmentation; the rest of the merged config is the Dice + CE arm's."""
    monkeypatch.chdir(tmp_path)
    plan_dataset(lesion_dataset, out=tmp_path / "plan.yaml", show=False, network="dynunet")
    (tmp_path / "loss.yaml").write_text(segmentation_losses.overlay("dice_ce"))
    (tmp_path / "ablation.yaml").write_text(segmentation_losses.ablation_overlay(arm))
    base = ["fit", "--config", "plan.yaml", "--config", "loss.yaml"]
    assert main([*base, "--print_config"]) == 0
    dice_ce = yaml.safe_load(capsys.readouterr().out)
    assert main([*base, "--config", "ablation.yaml", "--print_config"]) == 0
    merged = yaml.safe_load(capsys.readouterr().out)
    net = merged["model"]["init_args"]["model"]["init_args"]
    augmentation = merged["data"]["init_args"]["augmentation"]
    if arm == "dice_ce_no_deep_supervision":
        assert net["deep_supervision"] is False
        assert dice_ce["model"]["init_args"]["model"]["init_args"]["deep_supervision"] is True
        net["deep_supervision"] = True
    else:
        baseline = yaml.safe_load(segmentation_losses.BASELINE_YAML.read_text())["data"]["init_args"]
        assert augmentation == {**dice_ce["data"]["init_args"]["augmentation"], **baseline["augmentation"]}
        assert augmentation != dice_ce["data"]["init_args"]["augmentation"]
        merged["data"]["init_args"]["augmentation"] = dice_ce["data"]["init_args"]["augmentation"]
    assert merged == dice_ce


def test_planned_unet_arm_is_the_cpu_plan_as_written(lesion_dataset, tmp_path):
    """The planned_unet arm trains ``plan_unet.yaml`` alone (no overlay): the CPU default plan; the loss
    arms train ``plan.yaml`` (the DynUNet recipe of their records) with their overlay."""
    root = tmp_path / "brats"
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    args = segmentation_losses.arm_configs(segmentation_losses.PLANNED_UNET, root, run_dir)
    assert args == ["--config", str(root / "plan_unet.yaml")] and not list(run_dir.iterdir())
    args = segmentation_losses.arm_configs(segmentation_losses.BASELINE_ON_UNET_PLAN, root, run_dir)
    assert args == ["--config", str(root / "plan_unet.yaml"), "--config", "baselines/unet_dicece"]
    args = segmentation_losses.arm_configs("dice_ce", root, run_dir)
    assert args == ["--config", str(root / "plan.yaml"), "--config", "loss.yaml"]
    assert (run_dir / "loss.yaml").read_text() == segmentation_losses.overlay("dice_ce")
    default = plan_dataset(lesion_dataset, out=tmp_path / "default.yaml", show=False)
    unet = plan_dataset(lesion_dataset, out=tmp_path / "unet.yaml", show=False, network="unet")
    assert yaml.safe_load(default.read_text()) == yaml.safe_load(unet.read_text())


@pytest.mark.parametrize("arm", ["dice_focal", "automated_focal"])
def test_unet_recipe_swaps_the_loss_alone(arm, lesion_dataset, tmp_path, monkeypatch, capsys):
    """``--recipe unet``: a loss arm is the UNet plan (no deep supervision) with only its loss replaced."""
    monkeypatch.chdir(tmp_path)
    plan_dataset(lesion_dataset, out=tmp_path / "plan_unet.yaml", show=False, network="unet")
    args = segmentation_losses.arm_configs(arm, tmp_path, tmp_path, recipe="unet")
    assert args == ["--config", str(tmp_path / "plan_unet.yaml"), "--config", "loss.yaml"]
    assert main(["fit", "--config", "plan_unet.yaml", "--print_config"]) == 0
    planned = yaml.safe_load(capsys.readouterr().out)
    assert main(["fit", *args, "--print_config"]) == 0
    merged = yaml.safe_load(capsys.readouterr().out)
    loss = merged["model"]["init_args"].pop("loss")
    class_path, init_args = segmentation_losses.LOSSES[arm]
    assert loss["class_path"] == class_path
    assert all(loss["init_args"][k] == v for k, v in init_args.items())
    planned["model"]["init_args"].pop("loss")
    assert merged == planned and merged["model"]["init_args"]["model"]["class_path"] == "medfocal.nets.UNet"
    with pytest.raises(ValueError, match="not an arm of the UNet recipe"):
        segmentation_losses.arm_configs("dice_ce_no_deep_supervision", tmp_path, tmp_path, recipe="unet")
    record = {"set": "brats", "arm": arm, "recipe": "unet"}
    assert segmentation_losses.recipe_of(record) == "unet"
    assert segmentation_losses.recipe_of({"arm": arm}) == "dynunet"
    assert segmentation_losses.recipe_of({"arm": segmentation_losses.PLANNED_UNET}) == "unet"
