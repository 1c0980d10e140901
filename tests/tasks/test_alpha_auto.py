"""``alpha: auto`` through a SegmentationModule and a real SegmentationDataModule (label files on disk)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytorch_lightning as pl
import torch

from medfocal.data import PreprocessingSpec, SegmentationDataModule
from medfocal.losses import FocalLoss
from medfocal.nets import UNet
from medfocal.tasks import SegmentationModule


def test_alpha_auto_is_resolved_from_the_training_labels_and_used_by_the_loss(lesion_dataset, tmp_path):
    torch.manual_seed(0)
    dm = SegmentationDataModule(
        str(lesion_dataset),
        preprocessing=PreprocessingSpec(modality="mri", orientation=""),  # native grid: counts = files
        roi_size=[16, 16, 16],
        batch_size=1,
        num_samples=1,
        num_workers=0,
        check="none",
    )
    loss = FocalLoss(gamma=2.0, alpha="auto")
    module = SegmentationModule(
        UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0), loss, compute_hd95=False
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, dm)
    # hand: voxel counts of the training split's label files, then Cui et al.'s effective number
    counts = np.zeros(2)
    for record in dm.splits["train"]:
        label = np.asarray(nib.load(record["label"]).dataobj)
        counts += np.bincount(label.ravel().astype(int), minlength=2)
    assert counts[1] > 0 and counts[0] > 20 * counts[1]
    beta = 0.999
    inv_effective = (1 - beta) / (1 - beta**counts)
    expected = 2 * inv_effective / inv_effective.sum()
    from medfocal.tasks._base import resolved_alphas

    (alpha,) = resolved_alphas(module.loss).values()  # the one alpha="auto" loss, as the card stores it
    np.testing.assert_allclose(alpha, expected, rtol=1e-5)
    # the loss now weighs with it: the same as a FocalLoss given that alpha explicitly
    logits = torch.randn(2, 2, 6, 6, 6)
    target = torch.randint(0, 2, (2, 1, 6, 6, 6)).float()
    explicit = FocalLoss(gamma=2.0, alpha=expected.tolist())
    torch.testing.assert_close(module.loss(logits, target), explicit(logits, target))


def test_alpha_auto_from_voxel_counts_is_uniform_and_the_module_says_so(monkeypatch):
    """Cui et al.'s effective number saturates above ~1 / (1 - beta) samples: with segmentation's voxel
    counts every class gets weight 1, so ``alpha: auto`` does nothing, and the module warns instead of
    staying silent; with classification-size counts the weights differ and nothing is said."""
    import pytest

    from medfocal.losses import DiceFocalLoss, set_class_counts
    from medfocal.tasks._base import resolved_alphas, uniform_auto_alpha

    voxels, samples = torch.tensor([9.0e6, 4.0e5]), torch.tensor([900.0, 100.0])
    loss = set_class_counts(DiceFocalLoss(alpha="auto"), voxels)
    (alpha,) = resolved_alphas(loss).values()
    np.testing.assert_allclose(alpha, [1.0, 1.0], atol=1e-4)
    assert uniform_auto_alpha(voxels, resolved_alphas(loss))
    assert not uniform_auto_alpha(
        samples, resolved_alphas(set_class_counts(DiceFocalLoss(alpha="auto"), samples))
    )
    assert not uniform_auto_alpha(torch.tensor([5e6, 4e6]), resolved_alphas(loss))  # balanced: nothing to say

    class Counts:
        def __init__(self, counts):
            self.counts = counts

        def class_counts(self):
            return self.counts

    module = SegmentationModule(
        UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0), DiceFocalLoss(alpha="auto")
    )
    monkeypatch.setattr(module, "_datamodule", lambda: Counts(voxels))
    with pytest.warns(UserWarning, match="alpha 'auto' has no effect here"):
        module._resolve_auto_alpha("fit")
    module = SegmentationModule(
        UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0), DiceFocalLoss(alpha="auto")
    )
    monkeypatch.setattr(module, "_datamodule", lambda: Counts(samples))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module._resolve_auto_alpha("fit")
