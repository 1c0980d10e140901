"""ONNX / TorchScript export: the card travels in the file, predictions equal the checkpoint's."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "inference"))

from helpers import save_checkpoint

from medfocal._optional import MissingExtraError
from medfocal.export import (
    CARD_KEY,
    card_dict,
    export_onnx,
    export_torchscript,
    load_model,
    load_onnx,
)
from medfocal.inference.checkpoint import load_checkpoint
from medfocal.inference.predictor import Predictor

UNET = {
    "class_path": "monai.networks.nets.UNet",
    "init_args": {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [8, 16],
        "strides": [2],
        "num_res_units": 1,
    },
}


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory) -> Path:
    """A random UNet whose last layer is scaled up, so its label maps have both classes, decisively."""
    from medfocal.nets import build_model

    torch.manual_seed(0)
    net = build_model(UNET)
    with torch.no_grad():
        for p in list(net.parameters())[-2:]:
            p.mul_(30.0)
    path = tmp_path_factory.mktemp("export") / "unet.ckpt"
    return save_checkpoint(path, net, UNET, roi_size=[24, 24, 16], temperature=1.5)


@pytest.fixture(scope="module")
def lesion_cases(tmp_path_factory) -> Path:
    """Demo-like data: medfocal.synthetic lesion volumes (oblique, anisotropic), 2 test cases."""
    from medfocal.synthetic import make_lesion_dataset

    return make_lesion_dataset(
        tmp_path_factory.mktemp("lesions_export"), n_train=0, n_test=2, shape=(40, 36, 20)
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum((a > 0) & (b > 0)) / max(np.sum(a > 0) + np.sum(b > 0), 1)


def _compare(reference: Predictor, other: Predictor, cases: Path) -> None:
    images = sorted((cases / "imagesTs").glob("*.nii.gz"))
    assert images
    for image in images:
        want, got = reference.predict_volume(image), other.predict_volume(image)
        assert 0 < (want.label > 0).mean() < 1  # both classes present: the comparison means something
        assert _dice(want.label, got.label) == 1.0
        np.testing.assert_array_equal(want.label, got.label)
        assert np.abs(want.probabilities - got.probabilities).max() < 1e-4


@pytest.mark.slow
def test_onnx_predictions_equal_the_checkpoint(unet_ckpt, lesion_cases, tmp_path):
    out = export_onnx(unet_ckpt, tmp_path / "model.onnx")
    info, net = load_model(out)
    ref_info, _ = load_checkpoint(unet_ckpt)
    assert info == dataclasses.replace(ref_info, path=out)
    reference = Predictor.from_checkpoint(unet_ckpt, device="cpu", overlap=0.25)
    _compare(reference, Predictor(net, info, device="cpu", overlap=0.25), lesion_cases)


def test_onnx_card_and_dynamic_axes(unet_ckpt, tmp_path):
    import onnx  # the onnx extra is part of the dev extra: never skipped

    out = export_onnx(unet_ckpt, tmp_path / "model.onnx")
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    card = json.loads(props[CARD_KEY])
    assert card == card_dict(load_checkpoint(unet_ckpt)[0])
    assert card["temperature"] == 1.5 and card["class_names"] == ["background", "lesion"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "x", "y", "z"]
    _, net = load_onnx(out)
    ref = load_checkpoint(unet_ckpt)[1]
    x = torch.randn(3, 1, 16, 40, 8)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), ref(x).numpy(), atol=1e-4)


def test_torchscript_predictions_equal_the_checkpoint(unet_ckpt, lesion_cases, tmp_path):
    out = export_torchscript(unet_ckpt, tmp_path / "model.pt")
    info, net = load_model(out)
    assert card_dict(info) == card_dict(load_checkpoint(unet_ckpt)[0])
    reference = Predictor.from_checkpoint(unet_ckpt, device="cpu", overlap=0.25)
    _compare(reference, Predictor(net, info, device="cpu", overlap=0.25), lesion_cases)


def test_load_model_falls_back_to_checkpoint(unet_ckpt):
    info, net = load_model(unet_ckpt)
    assert info.roi_size == (24, 24, 16) and isinstance(net, torch.nn.Module)


def test_missing_extra_is_one_line(unet_ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtraError) as err:
        export_onnx(unet_ckpt, tmp_path / "model.onnx")
    assert str(err.value) == 'ONNX export needs onnx: pip install "medfocal[onnx]"'
    assert not (tmp_path / "model.onnx").exists()


def test_onnx_without_card(tmp_path):
    import onnx  # the onnx extra is part of the dev extra: never skipped

    path = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv3d(1, 2, 1), (torch.randn(1, 1, 4, 4, 4),), str(path), dynamo=False)
    assert onnx.load(str(path)).graph.node
    with pytest.raises(ValueError, match=r"plain\.onnx: no 'medfocal_card' metadata"):
        load_onnx(path)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_classification_2d_export(tmp_path, fmt):
    """A 2D classifier: ``(B, C)`` logits, dynamic batch, the card says classification."""
    from medfocal.nets import create_model

    torch.manual_seed(0)
    net = create_model("resnet18", spatial_dims=2, in_channels=3, out_channels=4, widen_factor=0.25)
    with torch.no_grad():  # off the zero-initialised head, so outputs depend on the input
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ckpt = save_checkpoint(
        tmp_path / "cls.ckpt",
        net,
        net._medfocal_spec,
        task="classification",
        class_names=["a", "b", "c", "d"],
        in_channels=3,
        spatial_dims=2,
        preprocessing={"modality": "rgb", "spatial_dims": 2, "resize": [64, 64]},
    )
    export = export_onnx if fmt == "onnx" else export_torchscript
    info, exported = load_model(export(ckpt, tmp_path / f"cls.{fmt}", spatial_size=(64, 64)))
    assert info.task == "classification" and info.class_names == ["a", "b", "c", "d"]
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        want, got = load_checkpoint(ckpt)[1](x), exported(x)
    assert got.shape == (5, 4)
    assert want.std(0).min() > 1e-3  # the comparison is not between constants
    scale = float(want.abs().max())  # random weights without training: logits far from 1
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5 * max(1.0, scale))


def test_export_check_refuses_a_mismatch(tmp_path):
    """The export check compares at another batch and size and names the file and the difference."""
    from medfocal.export import _check

    torch.manual_seed(0)
    net, other = torch.nn.Conv3d(1, 2, 1), torch.nn.Conv3d(1, 2, 1)
    example = torch.randn(1, 1, 8, 8, 4)
    _check(net, net, example, tmp_path / "m.onnx")  # identical: passes
    with pytest.raises(
        ValueError, match=r"m\.onnx: exported network differs .* on input \(2, 1, 16, 16, 8\)"
    ):
        _check(other, net, example, tmp_path / "m.onnx")
    fixed = torch.nn.Sequential(net, torch.nn.AdaptiveAvgPool3d((8, 8, 4)))  # as if traced at one size
    with pytest.raises(ValueError, match=r"shapes \(2, 2, 16, 16, 8\) vs \(2, 2, 8, 8, 4\)"):
        _check(fixed, net, example, tmp_path / "m.onnx")


def test_export_and_infer_through_the_cli(unet_ckpt, lesion_cases, tmp_path, capsys):
    """`medfocal export` then `medfocal infer -c model.onnx`: the same masks as the checkpoint."""
    from medfocal.cli import main

    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "-c", str(unet_ckpt), "-o", str(onnx_path)]) == 0
    assert onnx_path.is_file()
    images = lesion_cases / "imagesTs"
    assert main(["infer", "-c", str(onnx_path), "-i", str(images), "-o", str(tmp_path / "onnx_out")]) == 0
    assert main(["infer", "-c", str(unet_ckpt), "-i", str(images), "-o", str(tmp_path / "ckpt_out")]) == 0
    masks = sorted((tmp_path / "ckpt_out").glob("*.nii.gz"))
    assert masks
    for mask in masks:
        a = np.asarray(nib.load(mask).dataobj)
        b = np.asarray(nib.load(tmp_path / "onnx_out" / mask.name).dataobj)
        assert np.array_equal(a, b), mask.name
    assert main(["export", "-c", str(unet_ckpt), "-o", str(tmp_path / "model.h5")]) == 2
    assert "unknown format '.h5'; use .onnx or .pt" in capsys.readouterr().err
