"""A checkpoint written by the real Lightning module (2 training steps) runs through ``medfocal infer``."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest


@pytest.mark.slow
def test_lightning_checkpoint_round_trip(tmp_path):
    import pytorch_lightning as pl
    import torch

    from medfocal.data import PreprocessingSpec, SegmentationDataModule
    from medfocal.inference.commands import main_infer
    from medfocal.losses import DiceCELoss
    from medfocal.nets import create_model
    from medfocal.synthetic import make_lesion_dataset
    from medfocal.tasks import SegmentationModule

    torch.manual_seed(0)
    root = make_lesion_dataset(tmp_path / "data", n_train=4, n_test=1, shape=(32, 32, 20))
    data = SegmentationDataModule(
        str(root),
        preprocessing=PreprocessingSpec(modality="mri", spacing=(1.5, 1.5, 2.0)),
        roi_size=[16, 16, 16],
        batch_size=2,
        num_workers=0,
        check="none",
    )
    net = create_model("unet", spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    module = SegmentationModule(net, DiceCELoss(), compute_hd95=False)
    trainer = pl.Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)

    out = tmp_path / "out"
    assert main_infer(["-c", str(ckpt), "-i", str(root / "imagesTs"), "-o", str(out), "--no-progress"]) == 0
    for image in (root / "imagesTs").glob("*.nii.gz"):
        src, mask = nib.load(image), nib.load(out / image.name)
        assert mask.shape == src.shape and np.allclose(mask.affine, src.affine)
        assert mask.get_data_dtype() == np.uint8
