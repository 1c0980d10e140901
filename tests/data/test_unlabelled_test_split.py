"""``trainer.test`` on a Decathlon folder whose test split has no labels (issue 18, "Broken" 1)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from medfocal.data import PreprocessingSpec, SegmentationDataModule
from medfocal.nets import UNet
from medfocal.tasks import SegmentationModule


class _CE(torch.nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, target[:, 0].long())


def test_test_on_an_unlabelled_split_says_so(lesion_dataset, tmp_path):
    dm = SegmentationDataModule(
        str(lesion_dataset),
        preprocessing=PreprocessingSpec(modality="mri", orientation=""),
        roi_size=[16, 16, 16],
        num_workers=0,
        check="none",
    )
    module = SegmentationModule(
        UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0), _CE(), compute_hd95=False
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(ValueError, match=r"(?s)no labels.*infer"):
        trainer.test(module, dm)
