from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import oracle_checkpoint, save_checkpoint, threshold_oracle

from medfocal.inference import CheckpointInfo, discover_cases, load_checkpoint, read_checkpoint


def test_round_trip_rebuilds_model_and_ignores_non_model_keys(tmp_path):
    path = oracle_checkpoint(tmp_path / "a.ckpt", temperature=2.0)
    info, model = load_checkpoint(path)
    reference, _ = threshold_oracle()
    assert info.task == "segmentation" and info.temperature == 2.0
    assert info.foreground_names == ["lesion"]
    assert torch.equal(model.weight, reference.weight) and not model.training


def test_missing_key_is_named(tmp_path):
    model, spec = threshold_oracle()
    path = save_checkpoint(tmp_path / "a.ckpt", model, spec)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["medfocal"]["in_channels"]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"a\.ckpt.*in_channels"):
        read_checkpoint(path)


def test_not_a_medfocal_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a medfocal checkpoint"):
        read_checkpoint(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "nope.pt")


class _Evil:
    def __reduce__(self):  # would run code on a full unpickle
        return (print, ("pickle code ran",))


def test_unsafe_pickle_is_refused_unless_trusted(tmp_path):
    model, spec = threshold_oracle()
    path = save_checkpoint(tmp_path / "a.ckpt", model, spec)
    ckpt = torch.load(path, weights_only=True)
    ckpt["extra"] = _Evil()
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_checkpoint(path)
    info, _ = read_checkpoint(path, trust=True)
    assert info.in_channels == 1


@pytest.mark.parametrize("cut", ["half", "zero", "tail"])
def test_truncated_checkpoint_is_called_corrupt_not_unsafe(tmp_path, cut):
    """A cut file is truncated/corrupt: no advice to turn off the safe loader (issue 15 item 11)."""
    model, spec = threshold_oracle()
    data = save_checkpoint(tmp_path / "a.ckpt", model, spec).read_bytes()
    size = {"half": len(data) // 2, "zero": 0, "tail": len(data) - 10}[cut]
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[:size])
    for trust in (False, True):
        with pytest.raises(ValueError, match="truncated or corrupt") as info:
            read_checkpoint(path, trust=trust)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert "--trust-checkpoint does not help" in message
        assert "pass --trust-checkpoint" not in message


def test_corrupt_member_with_refused_pickle_is_corrupt(tmp_path):
    """The safe loader's refusal of a damaged pickle is still corruption when a CRC check fails."""
    import zipfile

    model, spec = threshold_oracle()
    good = save_checkpoint(tmp_path / "a.ckpt", model, spec)
    with zipfile.ZipFile(good) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    data = bytearray(good.read_bytes())
    local = info.header_offset  # local header: name and extra lengths at bytes 26..29 (torch pads extra)
    start = local + 30 + int.from_bytes(data[local + 26 : local + 28], "little")
    start += int.from_bytes(data[local + 28 : local + 30], "little")
    assert data[start : start + 2] == b"\x80\x02"  # the pickle header
    data[start + 2] = ord("Z")  # an opcode the weights_only unpickler refuses
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_checkpoint(path)


def test_info_validation():
    base = {
        "task": "segmentation",
        "model": {},
        "activation": "softmax",
        "num_classes": 2,
        "in_channels": 1,
        "spatial_dims": 3,
        "preprocessing": None,
    }
    assert CheckpointInfo.from_dict(base).preprocessing == {}
    with pytest.raises(ValueError, match="activation"):
        CheckpointInfo.from_dict({**base, "activation": "relu"})
    with pytest.raises(ValueError, match="format_version"):
        CheckpointInfo.from_dict({**base, "format_version": 99})
    with pytest.raises(ValueError, match="temperature"):
        CheckpointInfo.from_dict({**base, "temperature": -1.0})


FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_format_1_segmentation_checkpoint_loads_and_predicts(tmp_path):
    """A checkpoint written by medfocal before the model card (format 1) predicts, temperature once."""
    import nibabel as nib
    from monai.inferers import sliding_window_inference

    from medfocal.inference import Predictor
    from medfocal.synthetic import make_lesion_dataset

    path = FIXTURES / "format1_segmentation.ckpt"
    raw = torch.load(path, weights_only=True)
    assert raw["medfocal"]["format_version"] == 1 and "temperature" in raw["state_dict"]
    card, model = load_checkpoint(path)
    assert card.task == "segmentation" and card.roi_size == (16, 16, 16)
    assert card.temperature == pytest.approx(2.7693, abs=1e-4) and card.loss_alpha == {}

    root = make_lesion_dataset(tmp_path / "data", n_train=0, n_test=1, shape=(28, 24, 16))
    predictor = Predictor.from_checkpoint(path, device="cpu", overlap=0.5)
    image_path = next((root / "imagesTs").glob("*.nii.gz"))
    image = predictor._load(discover_cases(image_path)[0])
    with torch.no_grad():
        logits = sliding_window_inference(
            image.as_tensor()[None], (16, 16, 16), 2, model, overlap=0.5, mode="gaussian"
        )
    expected = torch.softmax(logits / card.temperature, dim=1)[0]
    torch.testing.assert_close(predictor.predict_tensor(image), expected, atol=1e-5, rtol=1e-4)

    result = predictor.predict_folder(root / "imagesTs", tmp_path / "out", num_workers=0, progress=False)
    assert result.ok, result.failures
    src, mask = nib.load(image_path), nib.load(tmp_path / "out" / image_path.name)
    assert mask.shape == src.shape and np.allclose(mask.affine, src.affine)


def test_format_1_classification_checkpoint_loads_and_predicts(tmp_path):
    from PIL import Image

    from medfocal.inference import Predictor

    path = FIXTURES / "format1_classification.ckpt"
    predictor = Predictor.from_checkpoint(path, device="cpu")
    assert predictor.card.temperature == pytest.approx(20.0) and predictor.card.class_names == ["0", "1", "2"]
    pixels = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    prediction = predictor.predict_volume(tmp_path / "img.png")
    with torch.no_grad():
        logits = predictor.model(torch.as_tensor(pixels.T / 255.0, dtype=torch.float32)[None, None])[0]
    np.testing.assert_allclose(prediction.probabilities, torch.softmax(logits / 20.0, 0).numpy(), atol=1e-5)
