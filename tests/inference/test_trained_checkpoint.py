"""A checkpoint written by the real Lightning module (2 training steps) runs through ``medfocal infer``."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest


@pytest.mark.slow
def test_lightning_checkpoint_round_trip(tmp_path):
    from helpers import trained_segmentation_checkpoint

    from medfocal.data import PreprocessingSpec
    from medfocal.inference.commands import main_infer
    from medfocal.synthetic import make_lesion_dataset

    root = make_lesion_dataset(tmp_path / "data", n_train=4, n_test=1, shape=(32, 32, 20))
    spec = PreprocessingSpec(modality="mri", spacing=(1.5, 1.5, 2.0))
    ckpt, _, _ = trained_segmentation_checkpoint(tmp_path, root, spec, steps=2)

    out = tmp_path / "out"
    assert main_infer(["-c", str(ckpt), "-i", str(root / "imagesTs"), "-o", str(out), "--no-progress"]) == 0
    for image in (root / "imagesTs").glob("*.nii.gz"):
        src, mask = nib.load(image), nib.load(out / image.name)
        assert mask.shape == src.shape and np.allclose(mask.affine, src.affine)
        assert mask.get_data_dtype() == np.uint8
