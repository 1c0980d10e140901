"""Overlay figures: panels, focus on the lesion, PNG written, shape errors."""

from __future__ import annotations

import numpy as np
import pytest

from medfocal.viz import _focus_index, load_canonical, overlay_slices, save_overlay_png


def test_overlay_has_one_panel_per_view_and_2d_works():
    img = np.random.default_rng(0).random((20, 18, 10))
    lbl = np.zeros(img.shape, np.uint8)
    lbl[5:8, 6:9, 4:6] = 1
    fig = overlay_slices(img, label=lbl, prediction=lbl, spacing=(1, 1, 3), views=("axial", "sagittal"))
    assert len(fig.axes) == 2
    fig2 = overlay_slices(img[..., 0], label=lbl[..., 4])
    assert len(fig2.axes) == 1


def test_focus_is_inside_the_lesion():
    lbl = np.zeros((20, 20, 20), np.uint8)
    lbl[12:15, 3:6, 7:9] = 1
    idx = _focus_index(lbl.shape, (None, lbl))
    assert lbl[idx] == 1


def test_errors_name_the_problem():
    img = np.zeros((8, 8, 8))
    with pytest.raises(ValueError, match=r"label shape \(8, 8\) differs"):
        overlay_slices(img, label=np.zeros((8, 8)))
    with pytest.raises(ValueError, match="unknown view"):
        overlay_slices(img, views=("oblique",))


def test_save_overlay_png_reads_nifti_in_ras(lesion_dataset, tmp_path):
    import nibabel as nib

    img_path = lesion_dataset / "imagesTr/case_000.nii.gz"
    lbl_path = lesion_dataset / "labelsTr/case_000.nii.gz"
    data, spacing = load_canonical(img_path)
    assert nib.aff2axcodes(nib.as_closest_canonical(nib.load(img_path)).affine) == ("R", "A", "S")
    np.testing.assert_allclose(sorted(spacing), sorted((1.2, 0.9, 2.5)), rtol=1e-5)
    assert sorted(data.shape) == sorted((32, 32, 24))
    out = save_overlay_png(img_path, tmp_path / "o.png", label_path=lbl_path, prediction_path=lbl_path)
    assert out.stat().st_size > 1000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
