from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import oracle_checkpoint

from medfocal.inference import Predictor
from medfocal.inference.writer import TMP_PREFIX


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def _images(root: Path) -> list[Path]:
    return sorted((root / "imagesTs").glob("*.nii.gz"))


@pytest.fixture(scope="module")
def predictor(oracle_ckpt) -> Predictor:
    return Predictor.from_checkpoint(oracle_ckpt, device="cpu", overlap=0.25)


@pytest.mark.slow
def test_round_trip_geometry_and_alignment(predictor, lesion_cases, tmp_path):
    """Masks keep the input's shape and affine, and land on the generated lesions (inversion is right)."""
    out = tmp_path / "out"
    result = predictor.predict_folder(lesion_cases / "imagesTs", out, num_workers=1, progress=False)
    assert result.ok and result.counts["ok"] == 3
    for image_path in _images(lesion_cases):
        src, mask = nib.load(image_path), nib.load(out / image_path.name)
        assert not np.allclose(src.affine[:3, :3], np.diag(np.diag(src.affine[:3, :3])))  # oblique input
        assert mask.shape == src.shape
        assert np.allclose(mask.affine, src.affine)
        assert mask.get_data_dtype() == np.uint8
        truth = np.asarray(nib.load(lesion_cases / "labelsTs" / image_path.name).dataobj)
        assert _dice(np.asarray(mask.dataobj), truth) > 0.9
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["status"] for r in rows] == ["ok"] * 3
    # the report's volume is the written mask's voxel count times the voxel volume (|det| of the affine)
    mask0 = nib.load(out / _images(lesion_cases)[0].name)
    voxel_ml = abs(np.linalg.det(mask0.affine[:3, :3])) / 1000
    assert voxel_ml == pytest.approx(1.2 * 0.9 * 2.5 / 1000)
    expected_ml = float((np.asarray(mask0.dataobj) == 1).sum() * voxel_ml)
    assert float(rows[0]["lesion_volume_ml"]) == pytest.approx(expected_ml, rel=1e-3)
    assert int(rows[0]["lesion_components"]) >= 1 and float(rows[0]["lesion_max_prob"]) > 0.9


def test_predict_volume_matches_tta_and_keep_largest(oracle_ckpt, lesion_cases):
    image_path = _images(lesion_cases)[0]
    plain = Predictor.from_checkpoint(oracle_ckpt, device="cpu").predict_volume(image_path)
    tta = Predictor.from_checkpoint(oracle_ckpt, device="cpu", tta=True, keep_largest=True, roi_size=[64] * 3)
    pred = tta.predict_volume(image_path)
    assert pred.label.shape == nib.load(image_path).shape
    # the oracle is flip-equivariant: mirroring changes almost nothing
    assert np.abs(pred.probabilities - plain.probabilities).max() < 1e-3
    assert pred.statistics["lesion_components"] == 1
    assert plain.statistics["lesion_components"] >= 1


def test_temperature_divides_logits_before_softmax(tmp_path):
    spec = {"modality": "generic", "spatial_dims": 3}
    hot = Predictor.from_checkpoint(
        oracle_checkpoint(tmp_path / "t.ckpt", temperature=4.0, preprocessing=spec)
    )
    cold = Predictor.from_checkpoint(oracle_checkpoint(tmp_path / "c.ckpt", preprocessing=spec))
    x = torch.rand(1, 5, 6, 7)
    logits = cold.model(x[None])[0]
    assert torch.allclose(hot.predict_tensor(x), torch.softmax(logits / 4.0, 0), atol=1e-5)
    assert torch.allclose(cold.predict_tensor(x), torch.softmax(logits, 0), atol=1e-5)


def test_bad_inputs_fail_alone_and_resume(predictor, lesion_cases, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    good = _images(lesion_cases)[:2]
    for p in good:
        shutil.copy(p, inp / p.name)
    (inp / "corrupt.nii.gz").write_bytes(b"\x1f\x8b not really a nifti")
    affine = nib.load(good[0]).affine
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), affine), inp / "two_channels.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), affine), inp / "flat.nii.gz")
    out = tmp_path / "out"
    result = predictor.predict_folder(inp, out, num_workers=0, progress=False)
    failed = dict(result.failures)
    assert set(failed) == {"corrupt", "two_channels", "flat"}
    assert "corrupt.nii.gz" in failed["corrupt"]
    assert "expected 1 channel(s), got 2" in failed["two_channels"]
    assert "flat.nii.gz" in failed["flat"] and "3D" in failed["flat"]
    assert result.counts == {"ok": 2, "skipped": 0, "failed": 3}
    assert sorted(p.name for p in out.glob("*.nii.gz")) == sorted(p.name for p in good)

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    again = predictor.predict_folder(inp, out, num_workers=0, progress=False)
    assert again.counts == {"ok": 0, "skipped": 2, "failed": 3}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == before
    rows = {r["case"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert rows[good[0].name[:-7]]["status"] == "skipped" and rows[good[0].name[:-7]]["lesion_volume_ml"]
    redo = predictor.predict_folder(inp, out, num_workers=0, progress=False, overwrite=True)
    assert redo.counts["ok"] == 2


def test_interrupted_write_leaves_nothing(predictor, lesion_cases, tmp_path, monkeypatch):
    real_save = nib.save

    def crash_after_partial(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full (simulated)")

    image = _images(lesion_cases)[0]
    out = tmp_path / "out"
    monkeypatch.setattr(nib, "save", crash_after_partial)
    result = predictor.predict_folder(image, out, num_workers=0, progress=False)
    assert not result.ok and "disk full" in result.failures[0][1]
    assert sorted(p.name for p in out.iterdir()) == [".medfocal", "report.csv"]
    assert not list(out.glob(f"**/{TMP_PREFIX}*"))
    monkeypatch.setattr(nib, "save", real_save)
    (out / f"{TMP_PREFIX}stale-case.nii.gz").write_bytes(b"left by a killed run")
    result = predictor.predict_folder(image, out, num_workers=0, progress=False)
    assert result.ok and (out / image.name).is_file()
    assert not list(out.glob(f"{TMP_PREFIX}*"))


def test_refuses_output_inside_input(predictor, lesion_cases):
    with pytest.raises(ValueError, match="inside the input folder"):
        predictor.predict_folder(lesion_cases / "imagesTs", lesion_cases / "imagesTs", progress=False)
    with pytest.raises(ValueError, match="inside the input folder"):
        predictor.predict_folder(lesion_cases / "imagesTs", lesion_cases / "imagesTs" / "sub", progress=False)


def test_multichannel_naming_4d_and_csv(tmp_path, lesion_cases):
    ckpt = oracle_checkpoint(tmp_path / "mc.ckpt", in_channels=2, roi_size=[24, 24, 16])
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    image = _images(lesion_cases)[0]
    src = nib.load(image)
    nnunet, four_d = tmp_path / "nnunet", tmp_path / "four_d"
    nnunet.mkdir()
    four_d.mkdir()
    for c in range(2):
        shutil.copy(image, nnunet / f"brain_{c:04d}.nii.gz")
    data = np.asarray(src.dataobj)
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), src.affine), four_d / "brain.nii.gz")
    (tmp_path / "list.csv").write_text("case,image\nfrom_csv,four_d/brain.nii.gz\n")
    truth = np.asarray(nib.load(lesion_cases / "labelsTs" / image.name).dataobj)
    for source, name in (
        (nnunet, "brain"),
        (four_d / "brain.nii.gz", "brain"),
        (tmp_path / "list.csv", "from_csv"),
    ):
        out = tmp_path / f"out_{Path(source).stem}"
        result = predictor.predict_folder(
            source, out, num_workers=0, progress=False, save_probabilities="nifti"
        )
        assert result.ok, result.failures
        mask = nib.load(out / f"{name}.nii.gz")
        assert mask.shape == src.shape and np.allclose(mask.affine, src.affine)
        assert _dice(np.asarray(mask.dataobj), truth) > 0.9
        probs = nib.load(out / f"{name}_probabilities.nii.gz")
        assert probs.shape == (*src.shape, 2) and np.allclose(probs.affine, src.affine)


def test_probabilities_npz(predictor, lesion_cases, tmp_path):
    image = _images(lesion_cases)[0]
    predictor.predict_folder(image, tmp_path / "o", num_workers=0, progress=False, save_probabilities="npz")
    with np.load(tmp_path / "o" / f"{image.name[:-7]}_probabilities.npz") as z:
        assert z["probabilities"].shape == (2, *nib.load(image).shape)
        assert list(z["class_names"]) == ["background", "lesion"]
        assert np.allclose(z["probabilities"].astype(np.float32).sum(0), 1.0, atol=2e-3)


def test_2d_png_segmentation(tmp_path):
    from PIL import Image

    from medfocal.synthetic import make_lesion_images_2d

    root = make_lesion_images_2d(tmp_path / "d2", n=2, size=(40, 56), rgb=True)
    spec = {"modality": "rgb", "spatial_dims": 2}
    # lesions are darker: "lesion" where channel 0 < 0.65 (scaled to [0, 1])
    ckpt = oracle_checkpoint(
        tmp_path / "2d.ckpt",
        in_channels=3,
        spatial_dims=2,
        preprocessing=spec,
        sign=-1.0,
        threshold=0.65,
        roi_size=[32, 32],
    )
    result = Predictor.from_checkpoint(ckpt).predict_folder(root / "images", tmp_path / "o", progress=False)
    assert result.ok, result.failures
    for p in sorted((root / "images").glob("*.png")):
        mask = np.asarray(Image.open(tmp_path / "o" / p.name))
        truth = np.asarray(Image.open(root / "masks" / p.name))
        assert mask.shape == truth.shape == (40, 56) and mask.dtype == np.uint8
        assert _dice(mask, truth) > 0.9
    assert "lesion_pixels" in result.rows[0]


def test_classification_csv(tmp_path):
    from helpers import save_checkpoint
    from monai.networks.nets import Classifier
    from PIL import Image

    init = {"in_shape": [1, 16, 16], "classes": 3, "channels": [4], "strides": [2]}
    torch.manual_seed(0)
    model = Classifier(**init)
    spec = {"class_path": "monai.networks.nets.Classifier", "init_args": init}
    names = ["benign", "malignant", "other"]
    ckpt = save_checkpoint(
        tmp_path / "cls.ckpt",
        model,
        spec,
        task="classification",
        class_names=names,
        spatial_dims=2,
        preprocessing={"modality": "grey", "resize": [16, 16]},
        temperature=2.0,
    )
    inp = tmp_path / "imgs"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(inp / f"img_{i}.png")
    predictor = Predictor.from_checkpoint(ckpt)
    result = predictor.predict_folder(inp, tmp_path / "o", progress=False)
    assert result.ok
    rows = list(csv.DictReader((tmp_path / "o" / "predictions.csv").open()))
    assert [r["case"] for r in rows] == ["img_0", "img_1", "img_2"]
    probs = np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert [r["predicted_class"] for r in rows] == [names[k] for k in probs.argmax(1)]
    # temperature 2: the probabilities are softmax(logits / 2) of the preprocessed image
    image = predictor._load(result_case(inp / "img_0.png"))
    with torch.no_grad():
        logits = model.eval()(image.as_tensor()[None])[0]
    assert np.allclose(probs[0], torch.softmax(logits / 2.0, 0).numpy(), atol=1e-4)
    for _ in range(2):  # skipped rows keep their probabilities and stay skipped
        again = predictor.predict_folder(inp, tmp_path / "o", progress=False)
        assert again.counts["skipped"] == 3
        assert float(again.rows[0]["prob_benign"]) == float(rows[0]["prob_benign"])


def result_case(path: Path):
    from medfocal.inference import discover_cases

    return discover_cases(path)[0]


def test_check_finite_modes():
    from medfocal.inference.folder import check_finite

    values = torch.tensor([1.0, float("nan"), 3.0, float("inf")])
    with pytest.raises(ValueError, match=r"^2 non-finite voxel\(s\) \(NaN/Inf\) in the image"):
        check_finite(values.clone(), "input", "error")
    assert check_finite(values, "input", "replace") == ["2 non-finite input voxel(s) set to 1"]
    assert values.tolist() == [1.0, 1.0, 3.0, 1.0]  # the minimum of the finite values
    nothing_finite = torch.full((3,), float("nan"))
    assert check_finite(nothing_finite, "preprocessed", "replace") == [
        "3 non-finite value(s) after preprocessing set to 0"
    ]
    with torch.inference_mode():
        output = torch.tensor([0.5, float("nan")])
    assert check_finite(output, "output", "replace", fill=0.0) == [
        "1 non-finite probabilities from the network set to 0"
    ]
    assert output.tolist() == [0.5, 0.0]
    assert check_finite(torch.ones(2), "input", "error") == []


def test_network_without_a_file_is_identified_by_its_weights(oracle_ckpt, lesion_cases, tmp_path):
    """A Predictor built from a network (no checkpoint file) records the SHA-256 of its weights."""
    from medfocal.inference import load_checkpoint

    card, model = load_checkpoint(oracle_ckpt)
    image = _images(lesion_cases)[0]
    first = Predictor(model, card.replace(path=None)).predict_folder(image, tmp_path / "o", progress=False)
    assert first.run_info["sha256_of"] == "weights" and first.run_info["checkpoint"] is None
    with torch.no_grad():
        model.bias.add_(1.0)
    refused = r"made with checkpoint weights [0-9a-f]{16} .* this run uses weights"
    with pytest.raises(ValueError, match=refused):
        Predictor(model, card.replace(path=None)).predict_folder(image, tmp_path / "o", progress=False)
