"""medfocal plan: layout detection, fingerprint, planning rules, YAML with reasons, runs with fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from scipy import ndimage

from medfocal.cli import main
from medfocal.data import Augmentation, PreprocessingSpec, train_transforms
from medfocal.data.autolayout import find_layout
from medfocal.data.fingerprint import compute_fingerprint
from medfocal.data.layouts import CaseFoldersLayout, PairedFoldersLayout
from medfocal.data.plan_rules import dynunet_topology, fit_patch, target_spacing
from medfocal.data.planning import layout_spec, make_plan, parse_budget, plan_dataset, render_yaml

REPO = Path(__file__).resolve().parents[2]
FIT_FAST = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--data.init_args.num_workers=0"]


# ---------------------------------------------------------------- rules


def test_target_spacing_anisotropic_takes_10th_percentile():
    spacings = [[1, 1, 5], [1, 1, 4], [0.8, 0.8, 6], [1, 1, 5], [1, 1, 3]]
    target, why = target_spacing(spacings)
    # sorted z spacings 3, 4, 5, 5, 6: 10th percentile = 3 + 0.4 * (4 - 3)
    assert target == pytest.approx([1.0, 1.0, 3.4])
    assert "anisotropic" in why
    assert target_spacing([[1, 1, 2], [1, 1, 2.5], [1.2, 1, 2]])[0] == pytest.approx([1.0, 1.0, 2.0])


def test_dynunet_topology_anisotropic_by_hand():
    kernels, strides = dynunet_topology([128, 128, 16], [0.8, 0.8, 4.0])
    # z (4 mm) is pooled only once x/y reach 3.2 mm (within 2x), and stops when its size drops below 8
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert kernels == [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]


def test_fit_patch_budget_and_divisibility():
    assert fit_patch([64, 48], [1.0, 1.0], 10**6) == [64, 48]
    patch = fit_patch([565, 584], [1.0, 1.0], 4096)
    _, strides = dynunet_topology(patch, [1.0, 1.0])
    total = np.prod(np.asarray(strides), axis=0)
    assert np.prod(patch) <= 4096 and all(p % t == 0 for p, t in zip(patch, total))
    # square pixels: a square-ish patch, using at least half of the voxel budget
    assert abs(patch[0] - patch[1]) <= 8 and np.prod(patch) >= 2048


def test_fit_patch_uses_the_budget_after_rounding_to_the_strides():
    # rounding 33.7^3 down to the strides used to give 28 x 32 x 32 (26% of the budget lost)
    assert fit_patch([120, 120, 78], [2.0, 2.0, 2.0], 38250) == [32, 32, 32]
    for shape, spacing, budget in (
        ([120, 120, 78], [2.0] * 3, 60000),
        ([512, 512, 80], [0.8, 0.8, 3.0], 10**5),
    ):
        patch = fit_patch(shape, spacing, budget)
        _, strides = dynunet_topology(patch, spacing)
        total = np.prod(np.asarray(strides), axis=0)
        assert all(p % t == 0 for p, t in zip(patch, total)) and all(p <= m for p, m in zip(patch, shape))
        assert 0.75 * budget <= np.prod(patch) <= budget


def test_lowres_factor_coarsens_a_patch_that_sees_too_little():
    from medfocal.data.plan_rules import LOWRES_MAX, lowres_factor

    assert lowres_factor([32, 32, 32], [64, 64, 32]) == 1.0  # a quarter of the volume: enough
    # BraTS at 1 mm on the CPU budget: 0.4% of the brain volume, capped at LOWRES_MAX
    assert lowres_factor([32, 32, 32], [240, 240, 155]) == LOWRES_MAX
    factor = lowres_factor([32, 32, 32], [80, 80, 80])  # 6.4%: (0.25 / 0.064)^(1/3) = 1.575
    assert factor == pytest.approx((0.25 / (32**3 / 80**3)) ** (1 / 3))


def test_big_3d_volumes_are_planned_coarser_with_half_the_patches_on_background(lesion_dataset):
    """A multi-class 3D dataset whose volumes dwarf the CPU patch: the plan resamples (2x at most) and
    says why; half the patch centres fall on background (equal per-class ratios put 80% on tumour and
    the network called normal brain tumour)."""
    from dataclasses import replace

    from medfocal.data.plan_rules import segmentation_plan

    layout = find_layout(lesion_dataset)
    fp = compute_fingerprint(layout)
    big = replace(
        fp,
        shapes=[[240, 240, 155]] * fp.num_cases,
        spacings=[[1.0, 1.0, 1.0]] * fp.num_cases,
        class_fractions=[0.97, 0.01, 0.01, 0.01],
        class_names=["background", "a", "b", "c"],
    )
    config, reasons = segmentation_plan(big, layout_spec(layout, lesion_dataset), "cpu", 1800.0)
    data = config["data"]["init_args"]
    assert data["preprocessing"]["spacing"] == [2.0, 2.0, 2.0]
    assert "coarsened 2x" in reasons["data.init_args.preprocessing.spacing"]
    # 30 min of one CPU thread: 2000 steps of 2 patches at ~3 us per voxel leave room for 48^3
    assert data["roi_size"] == [48, 48, 48]
    assert data["crop"] == "label_classes" and data["class_ratios"] == [3.0, 1.0, 1.0, 1.0]
    assert "half the patch centres on background" in reasons["data.init_args.crop"]
    # classes at 1% of the voxels still get Dice + CE: the focal term cost Dice on DRIVE and BraTS
    inner = config["model"]["init_args"]["loss"]  # the CPU plan's UNet: no deep-supervision wrapper
    assert (inner["class_path"], inner["init_args"]["gamma"]) == ("medfocal.losses.DiceFocalLoss", 0.0)
    assert "segmentation_losses.md" in reasons["model.init_args.loss"]


def test_parse_budget():
    assert parse_budget("cpu").minutes == 30 and parse_budget("gpu").device == "gpu"
    assert parse_budget("45").minutes == 45.0
    with pytest.raises(ValueError, match="expected 'cpu', 'gpu' or minutes"):
        parse_budget("fast")


# ---------------------------------------------------------------- layout detection


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _drive_like(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for i in range(21, 21 + n):
        _png(root / "images" / f"{i}_training.png", rng.integers(0, 255, (40, 36, 3)))
        mask = np.zeros((40, 36))
        mask[5:9, 4:30] = 255
        mask[20, 20] = 255
        _png(root / "1st_manual" / f"{i}_manual1.png", mask)
        _png(root / "mask" / f"{i}_training_mask.png", np.full((40, 36), 255))
    return root


def test_drive_like_folder_detected_with_suffixes_and_fov(tmp_path):
    layout = find_layout(_drive_like(tmp_path / "drive"))
    assert isinstance(layout, PairedFoldersLayout)
    assert (layout.image_suffix, layout.mask_suffix, layout.fov_suffix) == (
        "_training.png",
        "_manual1.png",
        "_training_mask.png",
    )
    first = layout.records()[0]
    assert first["case"] == "21" and first["fov"].endswith("21_training_mask.png")


def test_plan_of_a_folder_with_a_field_of_view_scores_validation_inside_it(tmp_path, lesion_images_2d):
    """DRIVE's protocol: the plan sets ``metric_mask_key: fov`` (with its reason) when the layout has
    field-of-view masks, and not otherwise."""
    config = yaml.safe_load(plan_dataset(_drive_like(tmp_path / "drive"), out=tmp_path / "p.yaml", show=False)
                            .read_text())  # fmt: skip
    assert config["model"]["init_args"]["metric_mask_key"] == "fov"
    assert "inside the field of view" in (tmp_path / "p.yaml").read_text()
    assert json.loads((tmp_path / "p.fingerprint.json").read_text())["region_mask_key"] == "fov"
    other = yaml.safe_load(plan_dataset(lesion_images_2d, out=tmp_path / "q.yaml", show=False).read_text())
    assert "metric_mask_key" not in other["model"]["init_args"]


def test_ambiguous_label_folders_name_the_option(tmp_path):
    root = _drive_like(tmp_path / "d")
    (root / "labels").mkdir()
    with pytest.raises(ValueError, match=r"several label folders \['labels', '1st_manual'\].*masks_dir="):
        find_layout(root)


def test_flat_nifti_folder_asks_for_a_csv(tmp_path):
    for name in ("ct.nii.gz", "seg.nii.gz"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / name)
    with pytest.raises(ValueError, match="write a CSV manifest"):
        find_layout(tmp_path)


def test_case_folders_detected(case_folders):
    layout = find_layout(case_folders)
    assert isinstance(layout, CaseFoldersLayout)
    assert layout.channels == ["Flair_x.nii.gz", "T1c_x.nii.gz"] and layout.label == "seg.nii.gz"


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_3d_against_nibabel(lesion_dataset):
    fp = compute_fingerprint(lesion_dataset)
    assert fp.task == "segmentation" and fp.spatial_dims == 3 and fp.num_cases == 6
    assert sorted(fp.median_spacing) == pytest.approx(sorted([1.2, 0.9, 2.5]), abs=1e-4)
    labels = [
        np.asarray(nib.load(p).dataobj).astype(int) for p in sorted((lesion_dataset / "labelsTr").glob("*"))
    ]
    counts = np.bincount(np.concatenate([lab.ravel() for lab in labels]), minlength=2)
    assert fp.class_fractions == pytest.approx((counts / counts.sum()).tolist())
    n_components = sum(ndimage.label(lab == 1, np.ones((3, 3, 3)))[1] for lab in labels)
    assert fp.components["1"]["per_case"] == pytest.approx(n_components / 6)
    assert fp.modality == "mri"  # "MRI0" declared in dataset.json


def test_fingerprint_2d_and_classification(lesion_images_2d, classification_npz):
    fp = compute_fingerprint(lesion_images_2d)
    assert (fp.spatial_dims, fp.in_channels, fp.modality, fp.label_values) == (2, 3, "rgb", [0, 255])
    assert fp.median_shape == [64, 64] and fp.components["1"]["per_case"] == 1.0
    cls = compute_fingerprint(classification_npz)
    with np.load(classification_npz) as data:
        expected = np.bincount(data["train_labels"].ravel(), minlength=3).tolist()
    assert cls.task == "classification" and cls.class_counts == expected and cls.image_shape == [28, 28]


# ---------------------------------------------------------------- plans


def _plan(data, **kw):
    layout = find_layout(data)
    return make_plan(compute_fingerprint(layout), layout_spec(layout, data), **kw)


def test_segmentation_plan_2d_few_images(lesion_images_2d):
    plan = _plan(lesion_images_2d)
    data = plan.config["data"]["init_args"]
    assert (data["batch_size"], data["num_samples"]) == (4, 8)
    assert data["preprocessing"]["label_threshold"] == 127
    # 90-degree rotations are on: the patch must be square or rotated patches cannot be stacked
    assert data["augmentation"]["rot90_prob"] > 0 and data["roi_size"][0] == data["roi_size"][1]
    model = plan.config["model"]["init_args"]
    assert model["model"]["class_path"] == "medfocal.nets.UNet"  # the CPU default
    assert model["lr_scheduler"]["class_path"] == "torch.optim.lr_scheduler.PolynomialLR"
    assert model["lr_scheduler"]["init_args"]["total_iters"] == plan.config["trainer"]["max_epochs"]
    text = render_yaml(plan)
    assert yaml.safe_load(text) == plan.config
    for key in ("roi_size", "num_samples", "batch_size", "max_epochs", "strides", "loss", "augmentation"):
        line = next(i for i, t in enumerate(text.splitlines()) if t.strip().startswith(f"{key}:"))
        assert text.splitlines()[line - 1].strip().startswith("# "), key


def _steps_and_voxels(plan) -> tuple[int, int]:
    init = plan.config["data"]["init_args"]
    return plan.config["trainer"]["max_epochs"], int(np.prod(init["roi_size"]))


def test_plan_network_unet_on_cpu_dynunet_on_gpu_or_when_asked(lesion_images_2d, classification_npz):
    """``network="auto"``: MONAI's residual UNet on a CPU budget (cheaper per step, so more steps or a
    larger patch in the same minutes), nnU-Net's DynUNet with deep supervision on a GPU; either on
    request. Every planned network runs on the planned patch."""
    from medfocal.nets import DynUNet, UNet

    cpu = _plan(lesion_images_2d)
    asked = _plan(lesion_images_2d, network="dynunet")
    gpu = _plan(lesion_images_2d, budget="gpu")
    for plan, cls, deep in ((cpu, UNet, False), (asked, DynUNet, True), (gpu, DynUNet, True)):
        model = plan.config["model"]["init_args"]
        assert model["model"]["class_path"] == f"medfocal.nets.{cls.__name__}"
        wrapped = model["loss"]["class_path"] == "medfocal.nets.DeepSupervisionLoss"
        assert wrapped is deep
        roi = plan.config["data"]["init_args"]["roi_size"]
        net = cls(**model["model"]["init_args"]).eval()
        with torch.no_grad():
            out = net(torch.zeros(1, 3, *roi))
        assert out.shape == (1, 2, *roi)
    text = render_yaml(cpu)
    assert "# MONAI's residual UNet (the default on a CPU budget)" in text
    assert "(nnU-Net's network, chosen with --network)" in render_yaml(asked)
    unet = cpu.config["model"]["init_args"]["model"]["init_args"]
    assert len(unet["channels"]) == len(unet["strides"]) + 1 and unet["num_res_units"] == 2
    assert all(isinstance(s, int) for s in unet["strides"])  # isotropic levels: MONAI's int form
    # the same minutes buy more training with the cheaper network: more epochs x patch voxels
    (e_unet, v_unet), (e_dyn, v_dyn) = _steps_and_voxels(cpu), _steps_and_voxels(asked)
    assert e_unet * v_unet > 1.5 * e_dyn * v_dyn
    with pytest.raises(ValueError, match="network: expected one of auto, unet, dynunet, got 'vnet'"):
        _plan(lesion_images_2d, network="vnet")
    with pytest.raises(ValueError, match="network 'unet': only for segmentation plans"):
        _plan(classification_npz, network="unet")


def test_unet_plan_of_anisotropic_volumes_pools_each_axis_as_planned(lesion_dataset):
    """Thick slices: the UNet's strides are per axis (the DynUNet's rule), written as lists where the
    axes differ; the network accepts them and checks divisibility per axis."""
    from dataclasses import replace

    from medfocal.data.plan_rules import segmentation_plan
    from medfocal.nets import UNet

    layout = find_layout(lesion_dataset)
    fp = compute_fingerprint(layout)
    thick = replace(fp, shapes=[[160, 160, 24]] * fp.num_cases, spacings=[[0.8, 0.8, 5.0]] * fp.num_cases)
    config, _ = segmentation_plan(thick, layout_spec(layout, lesion_dataset), "cpu", 1800.0)
    net = config["model"]["init_args"]["model"]["init_args"]
    roi = config["data"]["init_args"]["roi_size"]
    assert any(isinstance(s, list) and s[2] == 1 for s in net["strides"])  # the thick axis pools later
    unet = UNet(**net).eval()
    with torch.no_grad():
        assert unet(torch.zeros(1, fp.in_channels, *roi)).shape[2:] == tuple(roi)
    per_axis = np.prod([np.broadcast_to(s, (3,)) for s in net["strides"]], axis=0)
    assert per_axis[2] < per_axis[0]
    bad = [roi[0], roi[1], roi[2] + 1]
    with pytest.raises(ValueError, match="not divisible by"):
        unet(torch.zeros(1, fp.in_channels, *bad))


def _reason_above(text: str, key: str) -> str:
    """The comment line right above the first ``key:`` line of a rendered plan."""
    lines = text.splitlines()
    index = next(i for i, t in enumerate(lines) if t.strip().startswith(f"{key}:"))
    assert lines[index - 1].strip().startswith("# "), key
    return lines[index - 1].strip()


def test_plan_caches_small_datasets_uses_no_class_weights_and_costs_3d_more(
    lesion_dataset, lesion_images_2d, monkeypatch
):
    """Small datasets are cached in memory (loading every case each step made the BraTS plan 3x slower);
    the loss has no ``alpha`` (effective-number weights of voxel counts are uniform); a 3D voxel costs
    more than a 2D pixel in the time model, so at one budget a 3D plan gets fewer voxels per step."""
    from medfocal.data import plan_rules

    for data in (lesion_dataset, lesion_images_2d):
        plan = _plan(data)
        init = plan.config["data"]["init_args"]
        assert init["cache"] == "memory"
        assert "fit in memory" in _reason_above(render_yaml(plan), "cache")
        inner = plan.config["model"]["init_args"]["loss"]
        inner = inner["init_args"].get("loss", inner)
        assert inner["init_args"]["alpha"] is None
        assert "no class weights" in _reason_above(render_yaml(plan), "loss")
        # the last epoch is a validation epoch (the best checkpoint can be the last one)
        trainer = plan.config["trainer"]
        assert trainer["max_epochs"] % trainer["check_val_every_n_epoch"] == 0
        assert (
            plan.config["model"]["init_args"]["lr_scheduler"]["init_args"]["total_iters"]
            == trainer["max_epochs"]
        )
        assert "the last at the last epoch" in _reason_above(render_yaml(plan), "check_val_every_n_epoch")
    monkeypatch.setattr(plan_rules, "CACHE_BYTES", 1024)
    plan = _plan(lesion_dataset)
    assert plan.config["data"]["init_args"]["cache"] == "none"
    assert "do not fit" in _reason_above(render_yaml(plan), "cache")
    assert plan_rules.US_PER_VOXEL["dynunet"][3]["cpu"] > 2 * plan_rules.US_PER_VOXEL["dynunet"][2]["cpu"]
    # the 3D UNet's figure against the BraTS records: 2000 steps of 2 patches of 32^3 and 8 validations
    # took 4.6-7.9 min of one thread (bench/results/segmentation_losses_runs.jsonl): 0.14-0.24 s per step
    step_s = plan_rules.US_PER_VOXEL["unet"][3]["cpu"] * 1e-6 * 2 * 32**3
    assert 0.14 <= step_s <= 0.24


def test_plan_3d_mri_turns_lowres_simulation_on_with_its_reason(lesion_dataset):
    plan = _plan(lesion_dataset)
    assert plan.config["data"]["init_args"]["preprocessing"]["modality"] == "mri"
    aug = plan.config["data"]["init_args"]["augmentation"]
    assert (aug["lowres_prob"], aug["lowres_zoom"], aug["elastic_prob"]) == (0.25, [0.5, 1.0], 0.0)
    text = render_yaml(plan)
    assert _reason_above(text, "lowres_prob").startswith("# low-resolution simulation on (nnU-Net: p 0.25")
    assert "3D mri volumes" in _reason_above(text, "lowres_prob")
    assert _reason_above(text, "elastic_prob").startswith("# elastic deformation off")
    # the block is a valid Augmentation, and the training transforms then simulate low resolution
    steps = train_transforms(
        PreprocessingSpec(modality="mri"), roi_size=[16, 16, 16], augmentation=Augmentation(**aug)
    ).transforms
    assert [type(t).__name__ for t in steps].count("RandSimulateLowResolutiond") == 1


def test_plan_2d_leaves_lowres_and_elastic_off_with_reasons(lesion_images_2d):
    plan = _plan(lesion_images_2d)
    aug = plan.config["data"]["init_args"]["augmentation"]
    assert (aug["lowres_prob"], aug["elastic_prob"]) == (0.0, 0.0)
    text = render_yaml(plan)
    assert _reason_above(text, "lowres_prob").startswith("# low-resolution simulation off in 2D")
    assert _reason_above(text, "elastic_prob").startswith("# elastic deformation off")


def test_planned_3d_config_trains_with_lowres_and_elastic(lesion_dataset, tmp_path, monkeypatch):
    """One training step of the planned 3D config, both new augmentations forced on (p 1)."""
    monkeypatch.chdir(tmp_path)
    plan_dataset(lesion_dataset, out=tmp_path / "plan.yaml", show=False)
    args = ["fit", "--config", "plan.yaml", *FIT_FAST, "--trainer.fast_dev_run=true"]
    force = [
        "--data.init_args.augmentation.lowres_prob=1.0",
        "--data.init_args.augmentation.elastic_prob=1.0",
    ]
    assert main([*args, *force]) == 0


def test_baseline_config_replaces_network_loss_and_augmentation(
    lesion_images_2d, tmp_path, monkeypatch, capsys
):
    """plan.yaml + configs/baselines/unet_dicece.yaml: MONAI UNet + DiceCELoss; data, trainer as planned."""
    monkeypatch.chdir(tmp_path)
    planned = yaml.safe_load(
        plan_dataset(lesion_images_2d, out=tmp_path / "plan.yaml", show=False).read_text()
    )
    args = ["fit", "--config", "plan.yaml", "--config", "baselines/unet_dicece"]
    assert main([*args, "--print_config"]) == 0
    merged = yaml.safe_load(capsys.readouterr().out)
    model, data = merged["model"]["init_args"], merged["data"]["init_args"]
    planned_net = planned["model"]["init_args"]["model"]["init_args"]
    assert model["model"]["class_path"] == "medfocal.nets.UNet"
    net = model["model"]["init_args"]
    # the plan's dimensions and channels carry over; the UNet's own layout comes from the baseline
    assert [net[k] for k in ("spatial_dims", "in_channels", "out_channels")] == [
        planned_net[k] for k in ("spatial_dims", "in_channels", "out_channels")
    ]
    assert (net["channels"], net["strides"]) == ([16, 32, 64, 128], [2, 2, 2])
    assert model["loss"]["class_path"] == "monai.losses.DiceCELoss"
    assert model["loss"]["init_args"]["to_onehot_y"] and model["loss"]["init_args"]["softmax"]
    # MONAI's default, not the plan's DiceFocalLoss include_background: false carried over by LightningCLI
    assert model["loss"]["init_args"]["include_background"] is True
    aug = data["augmentation"]
    assert (aug["flip_prob"], aug["intensity_prob"], aug["intensity_factor"]) == (0.5, 1.0, 0.1)
    assert aug["affine_prob"] == aug["rot90_prob"] == aug["contrast_prob"] == aug["lowres_prob"] == 0.0
    planned_data = planned["data"]["init_args"]
    for key in ("roi_size", "batch_size", "num_samples", "crop", "pos_fraction"):
        assert data[key] == planned_data[key], key
    for key, value in planned_data["preprocessing"].items():
        assert data["preprocessing"][key] == value, key
    assert merged["trainer"]["max_epochs"] == planned["trainer"]["max_epochs"]
    assert (
        model["optimizer"]["init_args"]["lr"] == planned["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    )
    # and it trains: one step, then a checkpoint whose card names the baseline's network and loss
    one_step = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1"]
    assert main([*args, *one_step, *FIT_FAST]) == 0
    state = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)
    assert state["global_step"] == 1
    assert state["hyper_parameters"]["model"]["class_path"] == "medfocal.nets.UNet"
    assert "monai.losses.DiceCELoss" in str(state["hyper_parameters"]["loss"])


def test_classification_plan_small_images(classification_npz):
    plan = _plan(classification_npz)
    net = plan.config["model"]["init_args"]["model"]["init_args"]
    assert (net["conv1_t_size"], net["conv1_t_stride"], net["no_max_pool"]) == (3, 1, True)
    assert plan.config["model"]["init_args"]["monitor"] == "val/auroc"
    counts = np.asarray(compute_fingerprint(classification_npz).class_counts, float)
    assert net["prior"] == pytest.approx((counts / counts.sum()).tolist(), abs=1e-4)
    # calibrated after fit; a threshold rule only where the task is binary (this fixture has 3 classes)
    callbacks = [c["class_path"] for c in plan.config["trainer"]["callbacks"]]
    assert len(counts) == 3 and callbacks == ["medfocal.tasks.TemperatureScaling"]


def test_binary_classification_plan_chooses_an_operating_point(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.random((n, 1)) < 0.3).astype(np.uint8)
    np.savez(tmp_path / "binary.npz", **arrays)
    plan = _plan(tmp_path / "binary.npz")
    callbacks = plan.config["trainer"]["callbacks"]
    assert [c["class_path"] for c in callbacks] == [
        "medfocal.tasks.TemperatureScaling",
        "medfocal.tasks.OperatingPoint",
    ]
    assert callbacks[1]["init_args"] == {"rule": "youden"}
    assert "Youden" in render_yaml(plan)


def test_preset_loss_and_wrong_kind(lesion_images_2d):
    plan = _plan(lesion_images_2d, preset="lesion_isic")  # the UNet: the preset's loss replaces the loss
    assert plan.config["model"]["init_args"]["loss"]["class_path"] == "medfocal.losses.JaccardFocalLoss"
    plan = _plan(lesion_images_2d, preset="lesion_isic", network="dynunet")  # inside deep supervision
    inner = plan.config["model"]["init_args"]["loss"]["init_args"]["loss"]
    assert inner["class_path"] == "medfocal.losses.JaccardFocalLoss"
    with pytest.raises(ValueError, match="a classification preset, but the data is segmentation"):
        _plan(lesion_images_2d, preset="nodule_cls_ct")


def test_plan_dataset_writes_yaml_and_fingerprint(lesion_dataset, tmp_path):
    out = plan_dataset(lesion_dataset, out=tmp_path / "p.yaml", show=False)
    config = yaml.safe_load(out.read_text())
    fp = json.loads((tmp_path / "p.fingerprint.json").read_text())
    assert fp["task"] == "segmentation" and config["data"]["init_args"]["layout"] == str(
        lesion_dataset.resolve()
    )
    assert len(config["data"]["init_args"]["roi_size"]) == 3


@pytest.mark.slow
def test_planned_configs_run_fast_dev_run(lesion_dataset, lesion_images_2d, classification_npz, tmp_path):
    # a CSV manifest too: its plan must name the CSV layout, not a bare path LightningCLI would read as text
    manifest = tmp_path / "cases.csv"
    images = sorted((lesion_dataset / "imagesTr").glob("*.nii.gz"))
    rows = [f"{i},{lesion_dataset / 'labelsTr' / i.name}" for i in images]
    manifest.write_text("image,label\n" + "\n".join(rows) + "\n")
    cases = (
        ("seg3d", lesion_dataset),
        ("seg2d", lesion_images_2d),
        ("cls", classification_npz),
        ("csv", manifest),
        ("fov", _drive_like(tmp_path / "drive")),  # validation scored inside the field of view
    )
    for name, data in cases:
        out = plan_dataset(data, out=tmp_path / f"{name}.yaml", show=False)
        run = subprocess.run(
            [sys.executable, "-m", "medfocal.cli", "fit", "--config", str(out), "--trainer.fast_dev_run=true",
             "--data.init_args.num_workers=0", "--trainer.logger=false"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
            env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert run.returncode == 0, (name, run.stderr[-3000:])


# ---------------------------------------------------------------- shared real data


@pytest.mark.realdata
@pytest.mark.parametrize(
    "rel", ["drive/training", "kvasir_seg_sample", "brats2013", "medmnist/BreastMNIST.npz",
            "medmnist/retinamnist.npz", "medmnist/adrenalmnist3d.npz", "medmnist/adrenalmnist3d_64.npz"],
)  # fmt: skip
def test_plan_on_shared_data(shared_data, rel, tmp_path):
    path = shared_data / rel
    if not path.exists():
        # justified: real data is optional (../shared/data or $MEDFOCAL_DATA); skip and say so
        pytest.skip(f"{path} not present in the shared data")
    config = yaml.safe_load(plan_dataset(path, out=tmp_path / "p.yaml", show=False).read_text())
    data = config["data"]["init_args"]
    if rel == "drive/training":
        layout = data["layout"]["init_args"]
        assert layout["fov_dir"].endswith("mask") and layout["mask_suffix"] == "_manual1.gif"
        assert (data["num_samples"], data["batch_size"]) == (8, 4)
        assert config["model"]["init_args"]["metric_mask_key"] == "fov"
    if rel == "brats2013":
        assert data["layout"]["init_args"]["val_root"].endswith("validation")
        assert config["model"]["init_args"]["model"]["init_args"]["out_channels"] == 5
        assert data["crop"] == "label_classes"
        assert (
            "metric_mask_key" not in config["model"]["init_args"]
        )  # a brain mask: predictions outside count


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("rel", ["drive/training", "kvasir_seg_sample", "brats2013", "totalseg_example"])
def test_every_shared_segmentation_plan_trains_with_fit(shared_data, rel, tmp_path, monkeypatch):
    """`medfocal plan` then `medfocal fit --config plan.yaml` (one training and one validation batch) on
    every shared segmentation dataset; TotalSegmentator's single case goes through a CSV manifest."""
    path = shared_data / rel
    if not path.exists():
        # justified: real data is optional (../shared/data or $MEDFOCAL_DATA); skip and say so
        pytest.skip(f"{path} not present in the shared data")
    if rel == "totalseg_example":
        csv = tmp_path / "cases.csv"
        case = f"{path / 'example_ct_sm.nii.gz'},{path / 'example_seg.nii.gz'}"
        csv.write_text(f"image,label,split\n{case},train\n{case},val\n")
        path = csv
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(path), "-o", "plan.yaml"]) == 0
    args = ["fit", "--config", "plan.yaml", *FIT_FAST, "--trainer.fast_dev_run=true"]
    assert main(args) == 0


@pytest.mark.realdata
def test_plan_totalseg_through_a_csv(shared_data, tmp_path):
    root = shared_data / "totalseg_example"
    if not root.exists():
        # justified: real data is optional (../shared/data or $MEDFOCAL_DATA); skip and say so
        pytest.skip(f"{root} not present in the shared data")
    with pytest.raises(ValueError, match="CSV manifest"):
        find_layout(root)
    csv = tmp_path / "cases.csv"
    csv.write_text(f"image,label\n{root / 'example_ct_sm.nii.gz'},{root / 'example_seg.nii.gz'}\n")
    config = yaml.safe_load(plan_dataset(csv, out=tmp_path / "p.yaml", show=False).read_text())
    spec = config["data"]["init_args"]["preprocessing"]
    assert spec["modality"] == "ct" and spec["window"][0] < spec["window"][1]


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name", ["BreastMNIST.npz", "retinamnist.npz", "adrenalmnist3d.npz", "adrenalmnist3d_64.npz"]
)
def test_plan_fit_test_on_every_shared_medmnist_file(shared_data, name, tmp_path):
    """Issue 20's "done when": plan -> fit -> test through the CLI on each shared file (a few batches)."""
    path = shared_data / "medmnist" / name
    if not path.exists():
        # justified: real data is optional (../shared/data or $MEDFOCAL_DATA); skip and say so
        pytest.skip(f"{path} not present in the shared data")
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        run = subprocess.run([sys.executable, "-m", "medfocal.cli", *args], cwd=tmp_path,
                             capture_output=True, text=True, timeout=900, env=env)  # fmt: skip
        assert run.returncode == 0, (args[0], run.stdout[-2000:], run.stderr[-3000:])
        return run

    cli("plan", str(path), "-o", "plan.yaml")
    short = ["--config", "plan.yaml", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
             "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false"]  # fmt: skip
    cli("fit", *short)
    (best,) = list(tmp_path.glob("runs/plan/**/checkpoints/best-*.ckpt"))
    from medfocal.card import CARD_KEY

    card = __import__("torch").load(best, map_location="cpu", weights_only=False)[CARD_KEY]
    assert card["temperature"] > 0  # the planned TemperatureScaling wrote into the selected checkpoint
    binary = len(card["class_names"]) == 2
    assert (card.get("operating_point") is not None) == binary
    cli("test", *short, "--trainer.limit_test_batches=2", f"--ckpt_path={best}")
    rows = [r for p in tmp_path.glob("runs/plan/**/metrics.csv") for r in p.read_text().splitlines()]
    header = next(r for r in rows if "test/accuracy" in r).split(",")
    assert "test/ece" in header and ("test/op/accuracy" in header) == binary


def test_a_layouts_own_validation_split_sets_the_steps_per_epoch(lesion_dataset):
    """BraTS-style train/ + validation/ folders: 2 training cases are 2 steps per epoch (not 80% of all
    4 cases), so the epochs fill the budget; the fingerprint counts the explicit split."""
    from dataclasses import replace

    from medfocal.data.plan_rules import segmentation_plan

    layout = find_layout(lesion_dataset)
    fp = compute_fingerprint(layout)
    assert fp.split_sizes["unsplit"] + fp.split_sizes["train"] == fp.num_cases  # no validation folder here
    spec = layout_spec(layout, lesion_dataset)
    own = replace(fp, num_cases=4, split_sizes={"train": 2, "val": 2, "unsplit": 0})
    pooled = replace(fp, num_cases=4, split_sizes={"train": 0, "val": 0, "unsplit": 4})
    config_own, reasons_own = segmentation_plan(own, spec, "cpu", 60.0)
    config_pooled, reasons_pooled = segmentation_plan(pooled, spec, "cpu", 60.0)
    assert "(2 steps x" in reasons_own["trainer.max_epochs"]
    assert "(3 steps x" in reasons_pooled["trainer.max_epochs"]
    assert config_own["trainer"]["max_epochs"] > config_pooled["trainer"]["max_epochs"]
