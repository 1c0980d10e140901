"""``medfocal check-data`` on detection data: box problems found, per-class box counts and sizes shown."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from medfocal.cli import main
from medfocal.data import DetectionDataModule
from medfocal.synthetic import make_box_images_2d, make_nodule_volumes

warnings.filterwarnings("ignore", category=UserWarning)
CLASSES = ("RBC", "WBC", "Platelets")


@pytest.fixture
def voc(tmp_path):
    return make_box_images_2d(tmp_path / "voc", n=(3, 2, 1), size=(64, 48), classes=CLASSES, seed=5)


def _check(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["check-data", *args])
    return code, capsys.readouterr().out


def test_clean_voc_passes_and_describes_boxes_per_class(voc, capsys):
    code, out = _check(capsys, "--config", "cells_bccd", f"--data.init_args.layout={voc}")
    assert code == 0 and "no problems found" in out
    dm = DetectionDataModule(voc, class_names=list(CLASSES))
    summaries, problems = dm.validate(full=True, raise_on_error=False)
    assert problems == [] and len(summaries) == 6
    assert {s.split for s in summaries} == {"train", "val", "test"} and summaries[0].shape == (64, 48)
    # the description: boxes per class and the median / min / max of their mean side, from the XML files
    sides: dict[str, list[float]] = {n: [] for n in CLASSES}
    for rec in (r for split in dm.splits.values() for r in split):
        for box, label in zip(rec.boxes, rec.labels):
            sides[CLASSES[label]].append(float(np.mean(box[2:] - box[:2])))
    text = dm.describe()
    assert text.startswith(f"2D detection data {voc} (images: train 3, val 2, test 1); boxes: ")
    for name, values in sides.items():
        expected = (
            f"{name} {len(values)}, side {np.median(values):.1f} px ({min(values):.1f}-{max(values):.1f})"
        )
        assert expected in text
    # each row of the table counts the image's boxes per class
    first = summaries[0]
    counts = np.bincount(dm.splits["train"][0].labels, minlength=3)
    assert first.label == ", ".join(f"{n} {c}" for n, c in zip(CLASSES, counts) if c)


def test_boxes_outside_flat_or_with_a_wrong_size_are_reported(voc, capsys):
    xml = voc / "Annotations" / "img_000.xml"
    text = xml.read_text()
    boxes = re.findall(r"<xmin>(\d+)</xmin><ymin>(\d+)</ymin><xmax>(\d+)</xmax>", text)
    xmin, ymin, xmax = (int(v) for v in boxes[0])
    text = text.replace(f"<xmax>{xmax}</xmax>", "<xmax>70</xmax>", 1)  # past the 64 px width
    xmin2, ymin2, xmax2 = (int(v) for v in boxes[1])
    text = text.replace(f"<xmin>{xmin2}</xmin>", f"<xmin>{xmax2 + 1}</xmin>", 1)  # flat box
    xml.write_text(text)
    other = voc / "Annotations" / "img_001.xml"
    other.write_text(other.read_text().replace("<width>64</width>", "<width>80</width>"))
    code, out = _check(capsys, "--config", "cells_bccd", f"--data.init_args.layout={voc}")
    assert code == 1
    image = voc / "JPEGImages" / "img_000.png"
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "3 problem(s):" in lines
    # boxes are 0-based continuous: VOC xmin 1-based -> xmin - 1
    assert f"- {image}: box 0 [{xmin - 1}.0, {ymin - 1}.0, 70.0, " in out
    assert "leaves the image on axis 0 (size 64)" in out
    assert f"{image}: box 1 [{xmax2}.0, {ymin2 - 1}.0, {xmax2}.0, " in out
    assert f"has non-positive size on axis 0 (min {float(xmax2)} >= max {float(xmax2)})" in out
    assert (
        f"{voc / 'JPEGImages' / 'img_001.png'}: the annotation gives size [80, 48], the image is [64, 48]"
        in out
    )


def test_world_boxes_are_checked_against_the_volume(tmp_path, capsys):
    root = make_nodule_volumes(tmp_path / "ct", n=(2, 1, 0), shape=(32, 32, 16), seed=1)
    args = ("--config", "nodule_det_ct", f"--data.init_args.layout={root / 'dataset.json'}")
    code, out = _check(capsys, *args, "--data.init_args.affine_lps_to_ras=false")
    assert code == 0 and "nodule" in out
    data = json.loads((root / "dataset.json").read_text())
    data["training"][0]["box"][0][0] += 100.0  # 10 cm to the side: outside the 3 cm volume
    (root / "dataset.json").write_text(json.dumps(data))
    code, out = _check(capsys, *args, "--data.init_args.affine_lps_to_ras=false")
    # oblique volume: one world axis crosses several voxel axes, each is reported
    assert code == 1 and re.search(r"\b[1-3] problem\(s\):", out)
    assert f"{root / 'images' / 'vol_000.nii.gz'}: box 0 [" in out and "leaves the image on axis" in out
    # the quick check reads no headers: world boxes are then only checked for size and labels
    dm = DetectionDataModule(root / "dataset.json", modality="ct")
    assert dm.validate(full=False, raise_on_error=False)[1] == []
    with pytest.raises(ValueError, match=r"dataset.json: [1-3] box problem\(s\): .*vol_000.nii.gz: box 0"):
        dm.validate(full=True)


def test_a_bare_voc_path_is_checked_as_detection_data(voc, capsys):
    """`medfocal check-data <VOC folder>` without --config: boxes per class and size for each split."""
    assert main(["check-data", str(voc)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"boxes \(train, \d+ images\):", out)
    assert "size med" in out and "no problems found" in out
