"""Lesion-wise validation metrics of SegmentationModule on hand-made masks (exact expected values)."""

from __future__ import annotations

import math

import pytest
import torch
from tasks_standins import CrossEntropy, _Dicts
from torch import nn
from torch.utils.data import DataLoader

from medfocal.metrics.lesion import normalised_surface_dice
from medfocal.tasks import SegmentationModule


class MaskAsPrediction(nn.Module):
    """Logits whose argmax is the input mask: foreground where the image is 1."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x[:, :1] > 0.5).float() * 20.0 - 10.0
        return torch.cat([torch.zeros_like(fg), fg], dim=1) + 0.0 * self.dummy


def _cases() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 16x16 cases. Case 0: a 2x2 lesion missed, a 3x4 lesion found exactly. Case 1: a 4x5 lesion
    predicted as two 2x5 parts (a split: detected once, no false positive) and a 3-pixel false positive.
    """
    pred = torch.zeros(2, 1, 16, 16)
    gt = torch.zeros(2, 1, 16, 16)
    gt[0, 0, 1:3, 1:3] = 1  # 4 px, missed
    gt[0, 0, 8:11, 8:12] = 1  # 12 px
    pred[0, 0, 8:11, 8:12] = 1
    gt[1, 0, 2:6, 2:7] = 1  # 20 px
    pred[1, 0, 2:4, 2:7] = 1  # 10 px
    pred[1, 0, 5:7, 2:7] = 1  # 10 px (row 4 empty: two components; row 6 outside the lesion)
    pred[1, 0, 12, 10:13] = 1  # 3 px false positive
    return pred, gt


def _validate(make_trainer, **kwargs) -> dict[str, float]:
    pred, gt = _cases()
    module = SegmentationModule(
        MaskAsPrediction(), CrossEntropy(), class_names=["background", "lesion"], compute_hd95=False, **kwargs
    )
    trainer = make_trainer()
    trainer.validate(module, DataLoader(_Dicts(pred, gt), batch_size=2))
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_lesion_metrics_of_a_missed_a_split_and_a_false_positive_lesion(make_trainer):
    m = _validate(make_trainer)
    # 3 lesions, 2 detected; 4 predicted components, 3 on a lesion; 1 false positive over 2 cases
    assert m["val/lesion_sensitivity"] == pytest.approx(2 / 3)
    assert m["val/lesion_precision"] == pytest.approx(3 / 4)
    assert m["val/lesion_f1"] == pytest.approx(12 / 17)
    assert m["val/lesion_fp_per_case"] == pytest.approx(0.5)
    # < 10 voxels: the missed 4-px lesion and the 3-px false positive
    assert m["val/lesion_sensitivity_lt10"] == 0.0
    assert m["val/lesion_f1_lt10"] == 0.0
    assert m["val/lesion_fp_per_case_lt10"] == pytest.approx(0.5)
    # 10-100: the 12-px and 20-px lesions, the 12-px and two 10-px components
    assert m["val/lesion_sensitivity_10_100"] == 1.0
    assert m["val/lesion_f1_10_100"] == 1.0
    assert m["val/lesion_fp_per_case_10_100"] == 0.0
    # >= 100: nothing
    assert math.isnan(m["val/lesion_sensitivity_ge100"]) and math.isnan(m["val/lesion_f1_ge100"])
    assert m["val/lesion_fp_per_case_ge100"] == 0.0
    assert "val/nsd" not in m


def test_lesion_bins_and_nsd_options(make_trainer):
    m = _validate(make_trainer, lesion_size_bins=(5.0,), nsd_tolerance_mm=1.0)
    assert m["val/lesion_sensitivity_lt5"] == 0.0  # the missed 4-px lesion
    assert m["val/lesion_sensitivity_ge5"] == 1.0
    assert m["val/lesion_fp_per_case_lt5"] == pytest.approx(0.5)
    pred, gt = _cases()
    expected = [normalised_surface_dice(pred[b, 0], gt[b, 0], 1.0) for b in range(2)]
    assert 0.0 < expected[1] < 1.0
    assert m["val/nsd"] == pytest.approx(sum(expected) / 2, abs=1e-6)


def test_lesion_metrics_off(make_trainer):
    m = _validate(make_trainer, lesion_metrics=False)
    assert not any(k.startswith("val/lesion_") for k in m)
    assert m["val/dice"] > 0


def test_bad_lesion_options():
    with pytest.raises(
        ValueError, match=r"size bins: expected increasing positive edges, got \[100.0, 10.0\]"
    ):
        SegmentationModule(MaskAsPrediction(), CrossEntropy(), lesion_size_bins=(100, 10))
    with pytest.raises(ValueError, match="nsd_tolerance_mm must be >= 0 or None, not -1"):
        SegmentationModule(MaskAsPrediction(), CrossEntropy(), nsd_tolerance_mm=-1)


def test_lesion_sizes_in_mm_from_the_affine_and_classes_pooled(make_trainer):
    """2 mm x 2 mm pixels: every lesion and component is then 12-80 mm², all in the 10-100 bin; a second
    foreground class counts its own lesions in the same case."""
    from monai.data import DataLoader as MonaiLoader
    from monai.data import MetaTensor

    pred, gt = _cases()
    gt[1, 0, 12, 0] = 2  # a 1-px lesion of class 2, missed (4 mm², below 10)
    affine = torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0]))
    items = [
        {"image": MetaTensor(pred[b], affine=affine), "label": MetaTensor(gt[b], affine=affine)}
        for b in range(2)
    ]

    class ThreeClass(MaskAsPrediction):
        def forward(self, x):
            return torch.cat([super().forward(x), torch.full_like(x[:, :1], -10.0)], dim=1)

    module = SegmentationModule(
        ThreeClass(), CrossEntropy(), class_names=["background", "a", "b"], compute_hd95=False
    )
    trainer = make_trainer()
    trainer.validate(module, MonaiLoader(items, batch_size=2))
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["val/lesion_sensitivity_10_100"] == pytest.approx(2 / 3)  # the 16 mm² lesion is missed now
    assert m["val/lesion_fp_per_case_10_100"] == pytest.approx(0.5)  # the 12 mm² false positive
    assert m["val/lesion_sensitivity_lt10"] == 0.0  # the class-2 pixel
    assert m["val/lesion_sensitivity"] == pytest.approx(2 / 4)
    assert m["val/lesion_fp_per_case"] == pytest.approx(0.5)


def test_background_is_never_a_lesion_and_multilabel_channels_all_count(make_trainer):
    """include_background=True changes the voxel metrics, not the lesions; with C sigmoid channels the
    first channel is a label like the others."""
    m = _validate(make_trainer, include_background=True)
    assert m["val/lesion_sensitivity"] == pytest.approx(2 / 3) and m["val/lesion_fp_per_case"] == 0.5

    class TwoLabels(nn.Module):  # channel 0: the mask of _cases(); channel 1: nothing
        def __init__(self) -> None:
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            fg = (x[:, :1] > 0.5).float() * 20.0 - 10.0
            return torch.cat([fg, torch.full_like(fg, -10.0)], dim=1) + 0.0 * self.dummy

    class BCE(nn.Module):
        def forward(self, logits, target):
            return nn.functional.binary_cross_entropy_with_logits(logits, target.float())

    pred, gt = _cases()
    labels = torch.cat([gt, torch.zeros_like(gt)], dim=1)
    module = SegmentationModule(
        TwoLabels(), BCE(), activation="sigmoid", class_names=["a", "b"], compute_hd95=False
    )
    trainer = make_trainer()
    trainer.validate(module, DataLoader(_Dicts(pred, labels), batch_size=2))
    metrics = trainer.callback_metrics
    assert float(metrics["val/lesion_sensitivity"]) == pytest.approx(2 / 3)
    assert float(metrics["val/lesion_f1"]) == pytest.approx(12 / 17)


class _WithRegion(_Dicts):
    def __init__(self, images, labels, region):
        super().__init__(images, labels)
        self.region = region

    def __getitem__(self, i):
        return {**super().__getitem__(i), "fov": self.region[i]}


def test_metric_mask_key_scores_inside_the_region_only(make_trainer):
    """``metric_mask_key="fov"``: counts over the voxels inside the field of view only (hand counts);
    without the key the same batches are scored whole."""
    pred, gt = _cases()
    region = torch.ones(2, 1, 16, 16)
    region[1, 0, 10:, :] = 0  # case 1: the 3 px false positive (row 12) falls outside
    region[0, 0, 0:3, 0:3] = 0  # case 0: the missed 2x2 lesion too

    def validate(**kwargs):
        module = SegmentationModule(
            MaskAsPrediction(), CrossEntropy(), class_names=["background", "lesion"], compute_hd95=False,
            **kwargs,
        )  # fmt: skip
        trainer = make_trainer()
        trainer.validate(module, DataLoader(_WithRegion(pred, gt, region), batch_size=2))
        return {k: float(v) for k, v in trainer.callback_metrics.items()}

    whole, inside = validate(), validate(metric_mask_key="fov")
    # case 0: gt 16 px, pred 12 (all on the 12 px lesion); case 1: gt 20, pred 23, 15 shared (row 6 and
    # the 3 px false positive are not lesion). Inside: case 0 gt 12; case 1 pred 20 (no false positive)
    assert whole["val/dice"] == pytest.approx((24 / 28 + 30 / 43) / 2)
    assert inside["val/dice"] == pytest.approx((1.0 + 30 / 40) / 2)
    # sensitivity and specificity pool the confusion counts over the cases (MONAI ConfusionMatrixMetric)
    assert whole["val/sensitivity"] == pytest.approx((12 + 15) / (16 + 20))
    assert inside["val/sensitivity"] == pytest.approx((12 + 15) / (12 + 20))
    # negatives: whole 240 + 236 with 8 predicted (row 6 and the false positive); inside 235 + 140
    # (the 9 px corner of case 0 and rows 10-15 of case 1 left out) with 5 predicted (row 6)
    assert whole["val/specificity"] == pytest.approx((240 + 236 - 8) / (240 + 236))
    assert inside["val/specificity"] == pytest.approx((235 + 140 - 5) / (235 + 140))
    # lesions: the missed one and the false positive lie outside the region
    assert whole["val/lesion_sensitivity"] == pytest.approx(2 / 3)
    assert inside["val/lesion_sensitivity"] == pytest.approx(1.0)
    assert inside["val/lesion_fp_per_case"] == pytest.approx(0.0)


def test_metric_mask_key_without_masks_in_the_batches_warns_once(make_trainer):
    pred, gt = _cases()
    module = SegmentationModule(
        MaskAsPrediction(), CrossEntropy(), class_names=["background", "lesion"], compute_hd95=False,
        metric_mask_key="fov",
    )  # fmt: skip
    with pytest.warns(UserWarning, match="carry no 'fov' masks, so whole images are scored") as record:
        make_trainer().validate(module, DataLoader(_Dicts(pred, gt), batch_size=1))
    assert sum("carry no 'fov'" in str(w.message) for w in record) == 1
