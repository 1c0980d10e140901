"""DetectionHead through ``medfocal infer`` and ``medfocal evaluate --task detection`` (2D and 3D).

Two kinds of checks: a real (tiny, briefly trained) RetinaNet checkpoint for the file formats, counts,
resume and agreement with the training module's own detections; and a threshold "oracle" detector in
place of the network (objects are the only dark pixels / bright voxels) for the coordinates, which must
then equal the ground truth: VOC pixels in 2D, world millimetres of oblique, non-RAS volumes in 3D.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from scipy import ndimage

from medfocal.cli import main
from medfocal.data import DetectionDataModule
from medfocal.inference.heads.detection import DetectionHead
from medfocal.nets import DetectionRetinaNet
from medfocal.synthetic import make_box_images_2d, make_nodule_volumes
from medfocal.tasks import DetectionModule

warnings.filterwarnings("ignore", category=UserWarning)
TINY = {"layers": [1, 1, 1, 1], "block_inplanes": [16, 16, 32, 32], "fpn_channels": 16}


def _fit_and_save(module: DetectionModule, dm: DetectionDataModule, path: Path) -> Path:
    torch.manual_seed(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(path.parent),
    )
    trainer.fit(module, dm)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return make_box_images_2d(tmp_path_factory.mktemp("voc"), n=(4, 3, 0), size=(64, 48), seed=3)


@pytest.fixture(scope="module")
def ckpt_2d(voc, tmp_path_factory) -> tuple[Path, DetectionModule, DetectionDataModule]:
    torch.manual_seed(0)
    net = DetectionRetinaNet(
        2, 3, num_classes=3, num_anchors=3, conv1_t_stride=1, returned_layers=[1, 2], **TINY
    )
    module = DetectionModule(
        net, anchor_shapes=[[6, 6], [10, 10], [16, 10]], score_thresh=0.0, count_threshold=0.01
    )
    dm = DetectionDataModule(voc, zoom=0.5, batch_size=2, val_batch_size=1)
    path = _fit_and_save(module, dm, tmp_path_factory.mktemp("ck2") / "det2d.ckpt")
    return path, module.eval(), dm


@pytest.fixture(scope="module")
def nodules(tmp_path_factory) -> Path:
    return make_nodule_volumes(
        tmp_path_factory.mktemp("ct"), n=(1, 0, 3), shape=(36, 32, 20), spacing=(0.9, 1.1, 1.6), seed=4
    )


@pytest.fixture(scope="module")
def ckpt_3d(nodules, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = DetectionRetinaNet(
        3, 1, num_classes=1, num_anchors=3, conv1_t_stride=1, returned_layers=[1, 2], **TINY
    )
    module = DetectionModule(net, anchor_shapes=[[4, 4, 3], [6, 6, 4], [8, 8, 5]])
    dm = DetectionDataModule(
        nodules / "dataset.json", modality="ct", orientation="RAS", spacing=[1.0, 1.0, 1.5], batch_size=1
    )
    return _fit_and_save(module, dm, tmp_path_factory.mktemp("ck3") / "det3d.ckpt")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------------- oracle
class _Oracle:
    """Stands in for MONAI's detector: connected components of object pixels/voxels, exact boxes.

    2D (synthetic smears): object pixels are darker than the background; the class is the dominant colour
    channel (red, green, blue -> the class whose name starts with it). 3D: voxels above 0.5 after the CT
    window are nodules. Boxes follow MONAI's voxel convention: voxel k covers [k - 0.5, k + 0.5) in 3D;
    2D pixel boxes are the VOC ones, pixel k covers [k, k + 1).
    """

    pred_score_key = "labels_scores"
    training = False

    def __init__(self, class_names: list[str], dims: int) -> None:
        self.class_names, self.dims = class_names, dims

    def __call__(self, images: torch.Tensor, use_inferer: bool = False) -> list[dict[str, torch.Tensor]]:
        image = images[0].double().numpy()
        mask = image.mean(0) < 0.6 if self.dims == 2 else image[0] > 0.5
        comps, _ = ndimage.label(mask)
        boxes, labels = [], []
        for k, sl in enumerate(ndimage.find_objects(comps), start=1):
            if sl is None:
                continue
            lo = np.array([s.start for s in sl], dtype=np.float64)
            hi = np.array([s.stop for s in sl], dtype=np.float64)
            if self.dims == 3:
                lo, hi = lo - 0.5, hi - 0.5
                labels.append(0)
            else:
                colour = image[:, comps == k].mean(1)
                first = "rgb"[int(colour.argmax())]
                labels.append(next(i for i, n in enumerate(self.class_names) if n.startswith(first[0])))
            boxes.append(np.r_[lo, hi])
        n = len(boxes)
        return [
            {
                "boxes": torch.as_tensor(np.array(boxes).reshape(n, 2 * self.dims), dtype=torch.float32),
                "labels": torch.as_tensor(labels, dtype=torch.long),
                "labels_scores": torch.linspace(0.99, 0.9, n) if n else torch.zeros(0),
            }
        ]


@pytest.fixture
def oracle(monkeypatch):
    monkeypatch.setattr(
        DetectionHead, "_detector", lambda self, network: _Oracle(self.card.class_names, self.dims)
    )


# ---------------------------------------------------------------------------------------------- 2D
def test_infer_2d_writes_boxes_counts_and_matches_the_module(ckpt_2d, voc, tmp_path):
    path, module, dm = ckpt_2d
    out = tmp_path / "out"
    assert (
        main(["infer", "-c", str(path), "-i", str(voc / "JPEGImages"), "-o", str(out), "--device", "cpu"])
        == 0
    )
    rows = _read_csv(out / "boxes.csv")
    assert list(rows[0]) == ["image", "label", "score", "x1", "y1", "x2", "y2"]
    assert {r["label"] for r in rows} <= set(dm.class_names)
    report = {r["case"]: r for r in _read_csv(out / "report.csv")}
    assert len(report) == 7 and all(r["status"] == "ok" for r in report.values())
    for case, r in report.items():  # counts: detections with score >= the card's count_threshold (0.01)
        mine = [b for b in rows if b["image"] == case and float(b["score"]) >= 0.01]
        for name in dm.class_names:
            assert int(r[f"count_{name}"]) == sum(b["label"] == name for b in mine)
        assert int(r["count_total"]) == len(mine)
    # the head's boxes are the module's own detections on the zoomed image, scaled back to the original
    item = dm.val_dataloader().dataset[0]
    with torch.no_grad():
        reference = module(item["image"][None])[0]
    case = Path(dm.splits["val"][0].image).stem
    document = json.loads((out / "boxes.json").read_text())
    record = next(r for r in document["images"] if r["image"] == case)
    assert document["coordinates"] == "pixels" and document["box_mode"] == "xyxy"
    np.testing.assert_allclose(np.array(record["boxes"]) * 0.5, reference["boxes"].numpy(), atol=2e-3)
    np.testing.assert_allclose(record["scores"], reference["labels_scores"].numpy(), atol=1e-5)
    # resume: every case is done, the tables stay as they were
    before = (out / "boxes.csv").read_text()
    assert (
        main(["infer", "-c", str(path), "-i", str(voc / "JPEGImages"), "-o", str(out), "--device", "cpu"])
        == 0
    )
    assert {r["status"] for r in _read_csv(out / "report.csv")} == {"skipped"}
    assert (out / "boxes.csv").read_text() == before


def test_2d_boxes_are_the_voc_pixels_and_evaluate_scores_them(ckpt_2d, voc, tmp_path, oracle, capsys):
    path, _, dm = ckpt_2d
    from medfocal.card import update_card_file

    # without the zoom the oracle's boxes are exact; the card is all inference reads
    options = json.loads(json.dumps(torch.load(path, weights_only=True)["medfocal"]["task_options"]))
    options["boxes"]["zoom"] = None
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(path.read_bytes())
    update_card_file(plain, task_options=options)
    out = tmp_path / "out"
    assert (
        main(["infer", "-c", str(plain), "-i", str(voc / "JPEGImages"), "-o", str(out), "--device", "cpu"])
        == 0
    )
    rows = _read_csv(out / "boxes.csv")
    for rec in [r for split in dm.splits.values() for r in split]:
        found = sorted(
            ([float(b[k]) for k in ("x1", "y1", "x2", "y2")], b["label"])
            for b in rows
            if b["image"] == rec.id
        )
        truth = sorted(
            (list(map(float, box)), dm.class_names[lab]) for box, lab in zip(rec.boxes, rec.labels)
        )
        assert found == truth, rec.id
    capsys.readouterr()
    assert main(["evaluate", "--task", "detection", "-p", str(out / "boxes.csv"), "-g", str(voc)]) == 0
    printed = capsys.readouterr().out
    assert ["mean", "1.0000", "1.0000", "0.0000"] in [line.split() for line in printed.splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["map50"] == 1.0 and metrics["count_mae"] == 0.0 and "cpm" not in metrics


def test_overlays_show_the_counted_boxes(ckpt_2d, voc, tmp_path, oracle):
    import dataclasses

    from PIL import Image

    from medfocal.inference import Predictor

    predictor = Predictor.from_checkpoint(ckpt_2d[0], device="cpu")
    predictor.head.options = dataclasses.replace(predictor.head.options, overlays=True)
    result = predictor.predict_folder(voc / "JPEGImages", tmp_path / "out", progress=False)
    assert result.ok
    picture = np.asarray(Image.open(tmp_path / "out" / "overlays" / "img_000.png"))
    original = np.asarray(Image.open(voc / "JPEGImages" / "img_000.png").convert("RGB"))
    assert picture.shape == original.shape
    box = json.loads((tmp_path / "out" / "boxes" / "img_000.json").read_text())["boxes"][0]
    x1, y1 = int(box[0]), int(box[1])
    assert (picture[y1 + 3, x1] != original[y1 + 3, x1]).any()  # the left edge is drawn
    assert (picture[-1, -1] == original[-1, -1]).all()


def test_evaluate_refuses_images_without_ground_truth(tmp_path, voc, capsys):
    (tmp_path / "boxes.csv").write_text("image,label,score,x1,y1,x2,y2\nnot_there,red_disc,0.9,1,1,5,5\n")
    assert main(["evaluate", "--task", "detection", "-p", str(tmp_path / "boxes.csv"), "-g", str(voc)]) == 2
    assert "no ground truth for predicted image(s) ['not_there']" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- 3D
def test_infer_3d_boxes_are_world_mm_on_oblique_volumes(ckpt_3d, nodules, tmp_path, oracle, capsys):
    """Oblique, x-flipped volumes reoriented to RAS and resampled: boxes.csv is in the volumes' world."""
    out = tmp_path / "out"
    assert (
        main(["infer", "-c", str(ckpt_3d), "-i", str(nodules / "images"), "-o", str(out), "--device", "cpu"])
        == 0
    )
    rows = _read_csv(out / "boxes.csv")
    assert list(rows[0]) == ["image", "label", "score", "x1", "y1", "z1", "x2", "y2", "z2"]
    truth = json.loads((nodules / "dataset.json").read_text())
    n_truth = 0
    for entry in truth["training"] + truth["test"]:
        case = Path(entry["image"]).name.replace(".nii.gz", "")
        found = np.array(
            [[float(r[k]) for k in ("x1", "y1", "z1", "x2", "y2", "z2")] for r in rows if r["image"] == case]
        )
        assert len(found) == len(entry["box"]), case
        for c in entry["box"]:
            corners = np.r_[np.subtract(c[:3], np.divide(c[3:], 2)), np.add(c[:3], np.divide(c[3:], 2))]
            err = np.abs(found - corners).max(1)
            best = found[err.argmin()]
            # centres within a voxel fraction, extents within a voxel (the sphere is drawn in voxels)
            np.testing.assert_allclose((best[:3] + best[3:]) / 2, c[:3], atol=0.8)
            assert err.min() < 1.7, (case, best, corners)
            n_truth += 1
    assert n_truth >= 4
    luna = _read_csv(out / "luna16_submission.csv")
    assert list(luna[0]) == ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
    first = rows[0]
    match = next(r for r in luna if r["seriesuid"] == first["image"] and r["probability"] == first["score"])
    assert float(match["coordX"]) == pytest.approx(-(float(first["x1"]) + float(first["x2"])) / 2, abs=6e-3)
    capsys.readouterr()
    gt = nodules / "dataset.json"
    assert main(["evaluate", "--task", "detection", "-p", str(out), "-g", str(gt), "--split", "test"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["map50"] == pytest.approx(1.0) and metrics["cpm"] == pytest.approx(1.0)
    assert "CPM 1.0000" in capsys.readouterr().out


def test_evaluate_converts_lps_ground_truth(tmp_path):
    from medfocal.inference.evaluate_detection import _lps_to_ras

    lps = np.array([[-10.0, 5.0, 1.0, -4.0, 9.0, 3.0]])
    np.testing.assert_array_equal(_lps_to_ras(lps), [[4.0, -9.0, 1.0, 10.0, -5.0, 3.0]])


def test_head_refuses_a_card_without_detector_settings():
    from medfocal.card import ModelCard
    from medfocal.inference.heads import HeadOptions

    card = ModelCard(task="detection", class_names=["a"], num_classes=1, in_channels=1, spatial_dims=2)
    with pytest.raises(ValueError, match="task_options lacks 'detector'"):
        DetectionHead(card, HeadOptions())


def test_finalize_rebuilds_the_tables_from_the_per_case_files(ckpt_2d, voc, tmp_path, oracle):
    from medfocal.inference import Predictor

    predictor = Predictor.from_checkpoint(ckpt_2d[0], device="cpu")
    result = predictor.predict_folder(voc / "JPEGImages", tmp_path / "out", progress=False)
    table = (tmp_path / "out" / "boxes.csv").read_text()
    (tmp_path / "out" / "boxes.csv").unlink()
    (tmp_path / "out" / "boxes" / "img_006.json").unlink()  # a case whose record is gone is left out
    paths = predictor.head.finalize(tmp_path / "out", result.rows)
    assert [p.name for p in paths] == ["boxes.csv", "boxes.json"]
    rebuilt = (tmp_path / "out" / "boxes.csv").read_text()
    assert rebuilt == "".join(line for line in table.splitlines(True) if not line.startswith("img_006,"))
    assert "img_006" in table and len(rebuilt) < len(table)
