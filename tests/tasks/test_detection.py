"""DetectionModule: metrics against hand-computed values, 2D and 3D fits, predictions, checkpoints, presets"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from medfocal.card import ModelCard
from medfocal.data import DetectionDataModule, PreprocessingSpec
from medfocal.losses import FocalLoss
from medfocal.metrics.detection import count_errors, detection_metrics, froc_metrics
from medfocal.nets import DetectionRetinaNet
from medfocal.synthetic import make_box_images_2d, make_nodule_volumes
from medfocal.tasks import DetectionModule

warnings.filterwarnings("ignore", category=UserWarning)
TINY = {"layers": [1, 1, 1, 1], "block_inplanes": [16, 16, 32, 32], "fpn_channels": 16}


def _module_2d(**kwargs) -> DetectionModule:
    torch.manual_seed(0)
    net = DetectionRetinaNet(
        2, 3, num_classes=3, num_anchors=3, conv1_t_stride=1, returned_layers=[1, 2], **TINY
    )
    kwargs.setdefault("optimizer", lambda p: torch.optim.AdamW(p, lr=3e-3))
    return DetectionModule(net, anchor_shapes=[[6, 6], [10, 10], [16, 10]], **kwargs)


def _module_3d(**kwargs) -> DetectionModule:
    torch.manual_seed(0)
    net = DetectionRetinaNet(
        3, 1, num_classes=1, num_anchors=3, conv1_t_stride=1, returned_layers=[1, 2], **TINY
    )
    return DetectionModule(net, anchor_shapes=[[4, 4, 3], [6, 6, 4], [8, 8, 5]], **kwargs)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return make_box_images_2d(tmp_path_factory.mktemp("voc"), n=(6, 3, 0), size=(64, 48))


@pytest.fixture(scope="module")
def nodule_root(tmp_path_factory):
    return make_nodule_volumes(tmp_path_factory.mktemp("ct"), n=(2, 1, 0), shape=(32, 32, 16), seed=1)


# ----------------------------------------------------------------------------------------------- metrics
GT = [np.array([[0, 0, 10, 10], [20, 20, 30, 30.0]])]
# a hit (IoU 1), a miss, a hit with IoU 100 / 125 = 0.8
PRED = [np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 32.5]])]
SCORES = [np.array([0.9, 0.8, 0.7])]


def test_ap_against_hand_computation():
    m = detection_metrics(PRED, [np.zeros(3)], SCORES, GT, [np.zeros(2)], ["cell", "absent"])
    # precision 1 up to recall 0.5, then 2/3 up to recall 1: 101-point COCO interpolation
    ap_two_hits = (51 * 1.0 + 50 * 2 / 3) / 101
    # IoU thresholds 0.85, 0.9, 0.95: only the first detection is a hit, precision 1 up to recall 0.5
    ap_one_hit = 51 / 101
    assert m["ap50/cell"] == pytest.approx(ap_two_hits)
    assert m["ap/cell"] == pytest.approx((7 * ap_two_hits + 3 * ap_one_hit) / 10)
    # a class without ground truth is NaN and left out of the means (MONAI's own mean counts it as -1)
    assert math.isnan(m["ap50/absent"])
    assert m["map50"] == pytest.approx(ap_two_hits) and m["map"] == pytest.approx(m["ap/cell"])


def test_wrong_class_is_a_false_positive():
    m = detection_metrics(PRED, [np.array([0, 0, 1])], SCORES, GT, [np.zeros(2)], ["a", "b"])
    assert m["ap50/a"] == pytest.approx(51 / 101)


def test_froc_against_hand_computation():
    m = froc_metrics(PRED, [np.zeros(3)], SCORES, GT, [np.zeros(2)], iou_threshold=0.1)
    # operating points (FP per image, sensitivity):
    # score >= 0.9 -> (0, 0.5); >= 0.8 -> (1, 0.5); >= 0.7 -> (1, 1)
    assert [m[f"froc/{f:g}"] for f in (0.125, 0.25, 0.5)] == [0.5, 0.5, 0.5]
    assert [m[f"froc/{f:g}"] for f in (1, 2, 4, 8)] == [1.0, 1.0, 1.0, 1.0]
    assert m["cpm"] == pytest.approx((3 * 0.5 + 4 * 1.0) / 7)


def test_count_errors():
    labels = [np.array([0, 0, 1, 2]), np.array([1])]
    scores = [np.array([0.9, 0.6, 0.8, 0.3]), np.array([0.7])]
    gt = [np.array([0, 1, 1]), np.array([], dtype=int)]
    m = count_errors(labels, scores, gt, ["a", "b", "c"], score_threshold=0.5)
    # image 1: a 2 vs 1, b 1 vs 2, c 0 vs 0; image 2: b 1 vs 0
    assert (m["count_mae/a"], m["count_mae/b"], m["count_mae/c"]) == (0.5, 1.0, 0.0)
    assert m["count_mae"] == pytest.approx(1.5 / 3)


def test_evaluate_detections_combines_the_metrics():
    from medfocal.metrics.detection import evaluate_detections

    m = evaluate_detections(PRED, [np.zeros(3)], SCORES, GT, [np.zeros(2)], ["cell"], froc=True)
    assert m["map50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert m["cpm"] == pytest.approx(5.5 / 7)
    assert m["count_mae/cell"] == 1.0  # three detections above 0.5, two cells


def test_metrics_docstring_example():
    import doctest

    import medfocal.metrics.detection as mod

    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------------------------- module
def test_focal_loss_is_the_detector_classification_loss():
    module = _module_2d()
    assert module.detector.cls_loss_func is module.loss
    assert isinstance(module.loss, FocalLoss) and module.loss.activation == "sigmoid"
    calls = []
    module.loss.register_forward_hook(lambda m, inp, out: calls.append((inp[0].shape, inp[1].shape)))
    module.detector.training = True
    image = torch.rand(1, 3, 32, 32)
    module.detector(image, [{"boxes": torch.tensor([[4.0, 4.0, 14.0, 12.0]]), "labels": torch.tensor([2])}])
    # (sampled anchors, classes) logits against one-hot targets
    assert len(calls) == 1 and calls[0][0] == calls[0][1] and calls[0][0][1] == 3


def test_ddp_ranks_pool_their_detections_before_the_metrics(monkeypatch):
    """AP over all images, not the mean of per-rank APs: rank 0 holds image 1, the other rank image 2."""
    module = _module_2d()
    gt = np.array([[0, 0, 10, 10.0]])
    mine = (np.array([[0, 0, 10, 10.0]]), np.array([0]), np.array([0.9]), gt, np.array([0]))
    other = (np.array([[50, 50, 60, 60.0]]), np.array([0]), np.array([0.95]), gt, np.array([0]))
    module._outputs["val"] = [mine]
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(
        dist, "all_gather_object", lambda parts, obj: parts.__setitem__(slice(None), [obj, [other]])
    )
    module._gather_outputs("val")
    values = module.epoch_metrics("val")
    pooled = detection_metrics(*(list(c) for c in zip(mine, other)), ["x"])
    assert values["val/map50"] == pytest.approx(pooled["map50"])
    # FP at 0.95 first, then one of two cells found: precision 1/2 up to recall 1/2
    assert pooled["map50"] == pytest.approx(51 * 0.5 / 101)


def test_alpha_auto_is_refused_with_a_hint(voc_root, make_trainer):
    module = _module_2d(loss=FocalLoss(activation="sigmoid", alpha="auto"))
    dm = DetectionDataModule(voc_root)
    with pytest.raises(ValueError, match="alpha='auto' is not defined for detection"):
        make_trainer(max_steps=1, limit_val_batches=0).fit(module, dm)


def test_class_balanced_weights_from_box_counts(voc_root, make_trainer):
    from medfocal.losses.weights import class_balanced_alpha

    module = _module_2d(class_balanced=True)
    dm = DetectionDataModule(voc_root, batch_size=2)
    make_trainer(max_steps=1, limit_val_batches=0).fit(module, dm)
    torch.testing.assert_close(module.loss.weight, class_balanced_alpha(dm.class_counts(), 0.999))


def test_fit_2d_validates_predicts_and_checkpoints(voc_root, make_trainer, tmp_path):
    module = _module_2d()
    dm = DetectionDataModule(voc_root, batch_size=3, val_batch_size=3)
    trainer = make_trainer(max_epochs=1, limit_train_batches=2, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    metrics = trainer.callback_metrics
    for key in ("train/loss", "val/map50", "val/map", *(f"val/ap50_{n}" for n in dm.class_names)):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert "val/cpm" not in metrics  # FROC is for 3D by default
    predictions = [p for batch in trainer.predict(module, dm.val_dataloader()) for p in batch]
    assert len(predictions) == len(dm.splits["val"])
    for p in predictions:
        n = len(p["scores"])
        assert p["boxes"].shape == (n, 4) and p["labels"].shape == (n,) and n <= 100
        assert bool(((p["scores"] >= 0.02) & (p["scores"] <= 1)).all())
        assert bool((p["boxes"][:, 2:] <= torch.tensor([64.0, 48.0]) + 1e-4).all())
        # photos: identity affine, so the "world" boxes are the pixel boxes
        torch.testing.assert_close(p["boxes_world"].float(), p["boxes"])
    path = tmp_path / "det.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    card = ModelCard.from_dict(ckpt["medfocal"])
    assert card.task == "detection" and card.class_names == dm.class_names and card.num_classes == 3
    assert card.task_options["detector"]["anchor_shapes"] == [[6, 6], [10, 10], [16, 10]]
    assert card.task_options["boxes"]["box_mode"] == "xyxy" and card.task_options["count_threshold"] == 0.5
    # the card's image preprocessing is a PreprocessingSpec (what the unchanged Predictor applies)
    assert PreprocessingSpec.from_dict(card.preprocessing) == dm.preprocessing
    # inference rebuilds network and detector from the checkpoint alone and finds the same boxes
    from medfocal.nets import build_model
    from medfocal.tasks.detection import build_detector

    net = build_model(card.model)
    net.load_state_dict(
        {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    )
    detector = build_detector(net.eval(), **card.task_options["detector"]).eval()
    image = next(iter(dm.val_dataloader()))["image"][:1]
    with torch.no_grad():
        ours, reference = detector(image)[0], module.eval()(image)[0]
    for key in ("boxes", "labels", "labels_scores"):
        torch.testing.assert_close(ours[key], reference[key])
    assert card.model["class_path"] == "medfocal.nets.DetectionRetinaNet"
    assert {k.split(".")[0] for k in ckpt["state_dict"]} == {"model"}


def test_class_balanced_weights_are_restored_from_the_card(voc_root, make_trainer, tmp_path):
    from medfocal.losses.weights import class_balanced_alpha

    module = _module_2d(class_balanced=True)
    dm = DetectionDataModule(voc_root, batch_size=2)
    trainer = make_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(module, dm)
    trainer.save_checkpoint(tmp_path / "cb.ckpt")
    expected = class_balanced_alpha(dm.class_counts(), 0.999)
    card = ModelCard.from_dict(torch.load(tmp_path / "cb.ckpt", weights_only=True)["medfocal"])
    np.testing.assert_allclose(card.task_options["class_weights"], expected.numpy(), rtol=1e-6)
    fresh = _module_2d(class_balanced=True)
    assert fresh.loss.weight is None
    fresh.on_load_checkpoint(torch.load(tmp_path / "cb.ckpt", weights_only=True))
    torch.testing.assert_close(fresh.loss.weight, expected)


def test_fit_3d_logs_froc_and_cpm(nodule_root, make_trainer):
    module = _module_3d()
    dm = DetectionDataModule(
        nodule_root / "dataset.json",
        modality="ct",
        orientation="RAS",
        spacing=[1.0, 1.0, 1.5],
        patch_size=[24, 24, 16],
        num_samples=2,
        batch_size=1,
    )
    trainer = make_trainer(max_epochs=1, limit_train_batches=2, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    metrics = trainer.callback_metrics
    keys = ["val/cpm", "val/map50", *(f"val/froc_{f}" for f in ("0_125", "0_25", "0_5", "1", "2", "4", "8"))]
    for key in keys:
        assert key in metrics and 0.0 <= float(metrics[key]) <= 1.0, key
    froc = [float(metrics[k]) for k in keys[2:]]
    assert froc == sorted(froc)  # sensitivity never falls as more false positives are allowed
    assert float(metrics["val/cpm"]) == pytest.approx(np.mean(froc), abs=1e-6)
    p = trainer.predict(module, dm.val_dataloader())[0][0]
    from medfocal.data.boxes.geometry import image_boxes_to_world

    np.testing.assert_allclose(
        p["boxes_world"].numpy(), image_boxes_to_world(p["boxes"], p["affine"]), atol=1e-6
    )


def test_one_pass_losses_and_detections_equal_monai_forward_in_each_mode(voc_root):
    """Validation's single network pass gives MONAI's training-mode losses and eval-mode detections."""
    module = _module_2d(score_thresh=0.0)
    dm = DetectionDataModule(voc_root, batch_size=3, val_batch_size=3)
    batch = next(iter(dm.val_dataloader()))
    image, targets = batch["image"], module._targets(batch)
    detector = module.detector
    module.eval()
    with torch.no_grad():
        torch.manual_seed(5)
        losses, detections = detector.losses_and_detections(image, targets)
        torch.manual_seed(5)  # the hard-negative sampler draws from torch's generator
        detector.training = True
        reference_losses = detector(image, targets)
        detector.training = False
        reference_detections = detector(image)
    for key in (detector.cls_key, detector.box_reg_key):
        assert float(reference_losses[key]) > 0
        torch.testing.assert_close(losses[key], reference_losses[key])
    assert sum(len(d["boxes"]) for d in detections) > 0
    for ours, ref in zip(detections, reference_detections):
        for key in ("boxes", "labels", "labels_scores"):
            torch.testing.assert_close(ours[key], ref[key])


def test_validation_logs_val_loss_and_leaves_the_random_state_alone(voc_root, make_trainer):
    """val/loss is the detector loss on the validation images; a validation step leaves torch's random
    state as it found it (the hard-negative sampler's draws would otherwise shift training's)."""
    module = _module_2d()
    dm = DetectionDataModule(voc_root, batch_size=3, val_batch_size=3)
    trainer = make_trainer(max_epochs=1, limit_train_batches=2, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    metrics = trainer.callback_metrics
    for key in ("val/loss", "val/loss_cls", "val/loss_box"):
        assert key in metrics and torch.isfinite(metrics[key]) and float(metrics[key]) > 0, key
    torch.testing.assert_close(metrics["val/loss"], metrics["val/loss_cls"] + metrics["val/loss_box"])
    # the logged value is the loss of the validation images (batch means weighted by images); the
    # sampler is random: the same seed, each step drawing from the state after the loader's own draw
    torch.manual_seed(7)
    value = trainer.validate(module, dm, verbose=False)[0]["val/loss"]
    torch.manual_seed(7)
    detector, totals, n = module.eval().detector, [], 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            with torch.random.fork_rng(devices=[]):
                losses, _ = detector.losses_and_detections(batch["image"], module._targets(batch))
            totals.append(
                float(losses[detector.cls_key] + losses[detector.box_reg_key]) * len(batch["image"])
            )
            n += len(batch["image"])
        assert value == pytest.approx(sum(totals) / n, rel=1e-5)
        module.log = lambda *args, **kwargs: None  # outside a loop: only the random state is looked at
        state = torch.random.get_rng_state()
        module.validation_step(batch, 0)
    torch.testing.assert_close(torch.random.get_rng_state(), state)


def test_loss_decreases_on_synthetic_boxes(voc_root):
    """Twenty steps on one batch of the synthetic VOC data at least halve the detection loss."""
    module = _module_2d()
    dm = DetectionDataModule(voc_root, batch_size=4, flip_prob=0.0)
    batch = next(iter(dm.train_dataloader()))
    targets = module._targets(batch)
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    module.train()
    module.detector.training = True
    losses = []
    for _ in range(20):
        out = module.detector(batch["image"], targets)
        loss = out["classification"] + out["box_regression"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


# ----------------------------------------------------------------------------------------------- presets
def test_cells_bccd_preset_runs_on_generated_voc(tmp_path, monkeypatch):
    from medfocal.cli import main

    root = make_box_images_2d(
        tmp_path / "voc", n=(4, 2, 0), size=(96, 80), classes=("RBC", "WBC", "Platelets")
    )
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "fit",
            "--config",
            "cells_bccd",
            f"--data.init_args.layout={root}",
            "--trainer.fast_dev_run=true",
            "--trainer.logger=false",
        ]
    )
    assert code == 0
    assert not list(tmp_path.rglob("*.ckpt"))  # dry run: no checkpoint


@pytest.mark.slow
def test_nodule_preset_runs_on_synthetic_volumes(tmp_path, monkeypatch):
    from medfocal.cli import main

    root = make_nodule_volumes(tmp_path / "ct", n=(1, 1, 0), shape=(40, 40, 20), seed=2)
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "fit",
            "--config",
            "nodule_det_ct",
            f"--data.init_args.layout={root / 'dataset.json'}",
            "--data.init_args.affine_lps_to_ras=false",
            "--data.init_args.num_samples=1",
            "--data.init_args.patch_size=[48, 48, 24]",
            "--model.init_args.val_roi_size=null",
            "--trainer.fast_dev_run=true",
            "--trainer.logger=false",
        ]
    )
    assert code == 0
