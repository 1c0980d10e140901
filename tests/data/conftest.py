"""Fixtures of tests/data: small generated files (helpers in ``_data_files.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# the test modules import the file writers of ``_data_files.py`` under any pytest import mode
sys.path.insert(0, str(Path(__file__).parent))

from _data_files import lesion_case, write_nifti

torch.set_num_threads(1)


@pytest.fixture
def case_folders(tmp_path: Path) -> Path:
    """BraTS-style: ``root/<case>/{flair,t1c,seg}.nii.gz``, labels stored as float {0..2}."""
    root = tmp_path / "cases"
    for i in range(3):
        image, label = lesion_case(seed=i)
        write_nifti(root / f"pat{i}" / "Flair_x.nii.gz", image)
        write_nifti(root / f"pat{i}" / "T1c_x.nii.gz", image * 2 + 1)
        write_nifti(root / f"pat{i}" / "seg.nii.gz", label.astype(np.float32))
    return root
