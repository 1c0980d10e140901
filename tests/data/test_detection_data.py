"""Detection data: VOC / COCO / box-JSON parsing, box checks, box-aware transforms, world <-> image boxes."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from medfocal.data.boxes import (
    BoxPreprocessing,
    DetectionDataModule,
    box_summary,
    detection_collate,
    detection_transforms,
    read_box_json,
    read_coco,
    read_voc,
    validate_boxes,
)
from medfocal.data.boxes.geometry import WorldBoxToImaged, image_boxes_to_world, world_boxes_to_image
from medfocal.synthetic import make_box_images_2d, make_nodule_volumes, oblique_affine

warnings.filterwarnings("ignore", category=UserWarning)

RED = (220, 20, 20)


def _tiny_voc(root, xml_box=(4, 3, 8, 6), name="cell", size=(20, 10)):
    """One 20x10 image, red pixels in columns 3..7 and rows 2..5, i.e. VOC xmin=4 ymin=3 xmax=8 ymax=6."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    img = np.full((size[1], size[0], 3), 240, dtype=np.uint8)
    img[2:6, 3:8] = RED
    Image.fromarray(img).save(root / "JPEGImages" / "a.png")
    x1, y1, x2, y2 = xml_box
    (root / "Annotations" / "a.xml").write_text(
        f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height></size><object><name>{name}</name>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        "</annotation>"
    )
    (root / "ImageSets/Main/train.txt").write_text("a\n")
    return root


def test_voc_box_is_continuous_zero_based_and_indexes_the_loaded_image(tmp_path):
    layout = read_voc(_tiny_voc(tmp_path))
    rec = layout.splits["train"][0]
    np.testing.assert_array_equal(rec.boxes, [[3, 2, 8, 6]])
    assert layout.class_names == ["cell"] and rec.labels.tolist() == [0] and rec.size == (20, 10)
    data = detection_transforms(BoxPreprocessing(modality="rgb"))(rec.as_dict())
    image = data["image"]
    assert tuple(image.shape) == (3, 20, 10)  # (C, x, y): axis 0 is x
    x1, y1, x2, y2 = data["boxes"][0].int().tolist()
    red = (image[0] > 0.8) & (image[1] < 0.2)
    assert bool(red[x1:x2, y1:y2].all()) and int(red.sum()) == (x2 - x1) * (y2 - y1)


def test_voc_unknown_class_and_missing_file(tmp_path):
    root = _tiny_voc(tmp_path)
    with pytest.raises(ValueError, match=r"a\.xml: class 'cell' is not in class_names \['RBC'\]"):
        read_voc(root, class_names=["RBC"])
    (root / "ImageSets/Main/val.txt").write_text("b\n")
    with pytest.raises(FileNotFoundError, match=r"b\.xml: listed in ImageSets/Main but missing"):
        read_voc(root)


def test_coco_boxes_and_category_order(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "x.png", "width": 20, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [3, 2, 5, 4]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [10, 1, 2, 2]},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 20, 10], "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "wbc"}, {"id": 3, "name": "rbc"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    layout = read_coco(path)
    rec = layout.splits["train"][0]
    assert layout.class_names == ["rbc", "wbc"]  # by category id
    np.testing.assert_array_equal(rec.boxes, [[3, 2, 8, 6], [10, 1, 12, 3]])
    assert rec.labels.tolist() == [1, 0] and rec.image == str(tmp_path / "x.png")
    coco["annotations"][0]["category_id"] = 9
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="annotation 1 has unknown category_id 9"):
        read_coco(path)


def test_box_json_splits_and_errors(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(
        json.dumps(
            {
                "training": [{"image": "a.nii.gz", "box": [[1, 2, 3, 4, 5, 6]], "label": [0]}],
                "validation": [{"image": "/abs/b.nii.gz", "box": [], "label": []}],
            }
        )
    )
    layout = read_box_json(path)
    assert layout.spatial_dims == 3 and layout.world_coordinates and layout.box_mode == "cccwhd"
    assert layout.class_names == ["nodule"]
    tr, va = layout.splits["train"][0], layout.splits["val"][0]
    np.testing.assert_array_equal(tr.boxes, [[1, 2, 3, 4, 5, 6]])
    assert tr.image == str(tmp_path / "a.nii.gz") and tr.id == "a" and va.boxes.shape == (0, 6)
    path.write_text(json.dumps({"training": [{"image": "a.nii.gz"}]}))
    with pytest.raises(ValueError, match=re.escape("training[0] needs 'image' and 'box'")):
        read_box_json(path)


def test_validate_boxes_messages():
    problems = validate_boxes(
        np.array([[1, 1, 4, 4], [5, 5, 3, 9], [-3, 0, 5, 5]], dtype=float),
        np.array([0, 1, 4]),
        3,
        (10, 10),
        "a.jpg",
    )
    assert problems == [
        "a.jpg: box 1 [5.0, 5.0, 3.0, 9.0] has non-positive size on axis 0 (min 5.0 >= max 3.0)",
        "a.jpg: box 2 [-3.0, 0.0, 5.0, 5.0] leaves the image on axis 0 (size 10)",
        "a.jpg: label 4 of box 2 is not a class index in [0, 3)",
    ]
    assert validate_boxes(np.array([[0, 0, 10, 10.0]]), np.array([0]), 1, (10, 10)) == []


def test_box_summary_counts_and_sizes(tmp_path):
    layout = read_voc(make_box_images_2d(tmp_path, n=(6, 0, 0), seed=1))
    summary = box_summary(layout.splits["train"], layout.class_names)
    all_labels = np.concatenate([r.labels for r in layout.splits["train"]])
    for k, name in enumerate(layout.class_names):
        assert summary[name]["boxes"] == int((all_labels == k).sum())
        assert summary[name]["images"] == sum(int(k in r.labels) for r in layout.splits["train"])
    # blue dots are drawn with radius 3-4.5 px: tight boxes 5-10 px wide
    assert 5 <= summary["blue_dot"]["size_min"] <= summary["blue_dot"]["size_max"] <= 10


def _components(mask: np.ndarray) -> list[np.ndarray]:
    labelled, _ = ndimage.label(mask)
    out = []
    for sl in ndimage.find_objects(labelled):
        out.append(np.array([s.start for s in sl] + [s.stop for s in sl], dtype=float))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_train_transforms_keep_boxes_on_their_objects(tmp_path, seed):
    """After random crops and flips every box is the tight box of a drawn object (clipped by the crop)."""
    layout = read_voc(make_box_images_2d(tmp_path, n=(3, 0, 0), size=(96, 80), seed=seed))
    transform = detection_transforms(
        BoxPreprocessing(modality="rgb"), train=True, patch_size=[48, 40], num_samples=3, flip_prob=0.5
    )
    transform.set_random_state(seed)
    for rec in layout.splits["train"]:
        for sample in transform(rec.as_dict()):
            image = sample["image"].numpy()
            assert image.shape == (3, 48, 40)
            # objects are saturated colours on a pale background
            objects = (image.max(0) - image.min(0)) > 0.35
            found = _components(objects)
            boxes = sample["boxes"].numpy()
            assert len(boxes) == len(sample["labels"])
            size = np.array([48, 40, 48, 40])
            for box in boxes:
                cut = bool((box[:2] <= 0).any() or (box[2:] >= size[2:]).any())
                if not cut:  # a whole object: its tight box
                    assert any(np.abs(np.asarray(f) - box).max() <= 1.0 for f in found), (box, found)
                else:  # an object cut by the crop: the visible part lies inside the clipped box
                    inside = [
                        f for f in found if (f[:2] >= box[:2] - 1).all() and (f[2:] <= box[2:] + 1).all()
                    ]
                    assert inside, (box, found)
            assert (boxes[:, 2:] > boxes[:, :2]).all()
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= [48, 40]).all()


def test_flips_move_boxes_exactly(tmp_path):
    rec = read_voc(_tiny_voc(tmp_path)).splits["train"][0]
    transform = detection_transforms(BoxPreprocessing(modality="rgb"), train=True, flip_prob=1.0)
    data = transform(rec.as_dict())
    # both axes flipped: x' = 20 - x, y' = 10 - y
    np.testing.assert_allclose(data["boxes"].numpy(), [[20 - 8, 10 - 6, 20 - 3, 10 - 2]])


def test_zoom_scales_boxes(tmp_path):
    rec = read_voc(_tiny_voc(tmp_path)).splits["train"][0]
    data = detection_transforms(BoxPreprocessing(modality="rgb", zoom=0.5))(rec.as_dict())
    assert tuple(data["image"].shape) == (3, 10, 5)
    np.testing.assert_allclose(data["boxes"].numpy(), [[1.5, 1.0, 4.0, 3.0]])


def test_boxes_leaving_the_image_are_clipped_or_dropped(tmp_path):
    rec = read_voc(_tiny_voc(tmp_path)).splits["train"][0]
    rec.boxes = np.array([[-4, 2, 8, 6], [25, 1, 30, 4], [3, 2, 3, 6]], dtype=np.float32)
    rec.labels = np.array([0, 0, 0])
    data = detection_transforms(BoxPreprocessing(modality="rgb"))(rec.as_dict())
    np.testing.assert_allclose(data["boxes"].numpy(), [[0, 2, 8, 6]])  # clipped; outside and empty dropped
    assert data["labels"].tolist() == [0]


def test_world_image_round_trip_is_exact_on_oblique_affines():
    affine = oblique_affine((0.8, 0.9, 1.7), (25.0, -10.0, 33.0), flip_x=True)
    world = np.array([[10.0, -5.0, 12.0, 18.0, 4.0, 20.0], [-3, -3, -3, 3, 3, 3]])
    vox = world_boxes_to_image(world, affine)
    np.testing.assert_allclose(image_boxes_to_world(vox, affine), world, atol=1e-9)
    # the centre goes through the inverse affine exactly
    centre = (vox[:, :3] + vox[:, 3:]) / 2
    np.testing.assert_allclose(
        (affine @ np.c_[centre, np.ones(2)].T).T[:, :3], (world[:, :3] + world[:, 3:]) / 2, atol=1e-9
    )
    # LPS world (LUNA16): x and y negated
    lps = world * np.array([-1, -1, 1, -1, -1, 1])
    lps = np.c_[np.minimum(lps[:, :3], lps[:, 3:]), np.maximum(lps[:, :3], lps[:, 3:])]
    np.testing.assert_allclose(world_boxes_to_image(lps, affine, lps=True), vox, atol=1e-9)


def test_world_boxes_equal_monai_on_axis_aligned_affines():
    from monai.apps.detection.transforms.dictionary import AffineBoxToImageCoordinated
    from monai.data import MetaTensor

    affine = np.array(
        [[-0.7, 0, 0, 30.0], [0, 0, 1.25, -4.0], [0, 0.8, 0, 11.0], [0, 0, 0, 1]]
    )  # flip + permute
    boxes = torch.tensor([[1.0, -8.0, 12.0, 9.0, 4.0, 20.0]])
    image = MetaTensor(torch.zeros(1, 8, 8, 8), affine=torch.as_tensor(affine))
    ours = WorldBoxToImaged("boxes", "image")({"image": image, "boxes": boxes})["boxes"]
    monai = AffineBoxToImageCoordinated("boxes", "image")({"image": image, "boxes": boxes})["boxes"]
    torch.testing.assert_close(
        torch.as_tensor(ours).float(), torch.as_tensor(monai).float(), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("oblique", [True, False])
def test_nodule_boxes_land_on_the_nodules_after_orientation_and_spacing(tmp_path, oblique):
    """Synthetic CT (oblique, x-flipped affine): the image-space box of each nodule after RAS + resampling."""
    root = make_nodule_volumes(
        tmp_path,
        n=(2, 0, 0),
        shape=(40, 40, 20),
        nodules_per_volume=(1, 1),
        radius_mm=(4.0, 5.0),
        oblique=oblique,
        seed=3,
    )
    dm = DetectionDataModule(root / "dataset.json", modality="ct", orientation="RAS", spacing=[1.0, 1.0, 1.5])
    transform = detection_transforms(dm.box_preprocessing)
    for rec in dm.layout.splits["train"]:
        data = transform(rec.as_dict())
        # +40 HU nodules in a -850 HU lung, window [-1000, 500] -> 0.69 and 0.1: threshold half-way
        nodule = data["image"][0].numpy() > 0.4
        labelled, n = ndimage.label(nodule)
        sizes = ndimage.sum(nodule, labelled, range(1, n + 1))
        sl = ndimage.find_objects(labelled)[int(np.argmax(sizes))]
        found = np.array([s.start for s in sl] + [s.stop for s in sl], dtype=float)
        box = data["boxes"][0].numpy()
        # a sphere's box; resampling blurs its edge by about one voxel
        np.testing.assert_allclose(box, found, atol=1.6)
        back = image_boxes_to_world(box, data["image"].affine)
        gt = np.c_[rec.boxes[:, :3] - rec.boxes[:, 3:] / 2, rec.boxes[:, :3] + rec.boxes[:, 3:] / 2]
        np.testing.assert_allclose(back, gt, atol=1e-3)


def test_datamodule_splits_counts_and_collate(tmp_path):
    root = make_box_images_2d(tmp_path, n=(10, 0, 0), size=(64, 48))
    dm = DetectionDataModule(root, val_fraction=0.3, batch_size=3, val_batch_size=2)
    assert (len(dm.splits["train"]), len(dm.splits["val"])) == (7, 3)
    assert {r.id for r in dm.splits["train"]}.isdisjoint({r.id for r in dm.splits["val"]})
    counts = np.zeros(dm.num_classes)
    for r in dm.splits["train"]:
        counts += np.bincount(r.labels, minlength=dm.num_classes)
    np.testing.assert_array_equal(dm.class_counts().numpy(), counts)
    assert dm.in_channels == 3 and dm.spatial_dims == 2
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 48) and type(batch["image"]) is torch.Tensor
    assert [b.shape[1] for b in batch["boxes"]] == [4, 4] and all(
        type(b) is torch.Tensor for b in batch["boxes"]
    )
    assert batch["affine"][0].shape == (3, 3) and batch["spatial_size"] == [[64, 48], [64, 48]]


def test_collate_pads_at_the_end():
    a = {"image": torch.ones(1, 4, 6), "boxes": torch.tensor([[0, 0, 4, 6.0]]), "labels": torch.tensor([0])}
    b = {"image": torch.ones(1, 5, 3), "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    batch = detection_collate([[a], b])
    assert batch["image"].shape == (2, 1, 5, 6)
    assert batch["image"][1, 0, :, 3:].abs().sum() == 0 and batch["image"][0, 0, 4].abs().sum() == 0
    assert batch["spatial_size"] == [[4, 6], [5, 3]] and batch["boxes"][1].shape == (0, 4)


def test_docstring_examples():
    import doctest

    import medfocal.data.boxes.checks as mod

    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_images_smaller_than_the_patch_are_padded_at_the_end(tmp_path):
    rec = read_voc(_tiny_voc(tmp_path)).splits["train"][0]
    transform = detection_transforms(
        BoxPreprocessing(modality="rgb"), train=True, patch_size=[32, 16], flip_prob=0.0
    )
    (data,) = transform(rec.as_dict())
    assert tuple(data["image"].shape) == (3, 32, 16)
    np.testing.assert_allclose(data["boxes"].numpy(), [[3, 2, 8, 6]])
    assert float(data["image"][:, 20:].abs().sum()) == 0.0


def test_cache_rate_gives_the_same_samples_and_is_filled_once(tmp_path):
    root = make_box_images_2d(tmp_path, n=(6, 2, 0), size=(64, 48))
    kwargs = {"zoom": 0.5, "flip_prob": 0.5, "intensity_prob": 0.5}
    plain = DetectionDataModule(root, **kwargs)._dataset("train", True)
    cached_dm = DetectionDataModule(root, cache_rate=1.0, **kwargs)
    cached = cached_dm._dataset("train", True)
    assert cached is cached_dm._dataset("train", True)  # one cache per split, reused by every loader
    assert cached_dm.train_dataloader().dataset is cached
    for dataset in (plain, cached):
        dataset.transform.set_random_state(seed=3)
    for i in range(len(plain)):
        for _ in range(2):  # a second draw: the cache keeps the deterministic part only
            a, b = plain[i], cached[i]
            torch.testing.assert_close(b["image"].as_tensor(), a["image"].as_tensor())
            torch.testing.assert_close(torch.as_tensor(b["boxes"]), torch.as_tensor(a["boxes"]))
            torch.testing.assert_close(torch.as_tensor(b["labels"]), torch.as_tensor(a["labels"]))
    with pytest.raises(ValueError, match=r"cache_rate must be a share in \[0, 1\], not 1.5"):
        DetectionDataModule(root, cache_rate=1.5)
