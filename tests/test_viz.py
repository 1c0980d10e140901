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


@pytest.mark.parametrize("channels", [0, 2])
def test_load_canonical_reorients_to_ras(tmp_path, channels):
    """Stored axes (S, L, A) at (2.5, 1.2, 0.9) mm come back as (R, A, S) at (1.2, 0.9, 2.5) mm.

    The expected array is written by hand: RAS axis 0 is stored axis 1 reversed (L -> R), axis 1 is
    stored axis 2, axis 2 is stored axis 0. Every voxel has its own value, so any other permutation or
    flip fails.
    """
    import nibabel as nib

    stored = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    affine = np.array(
        [
            [0.0, -1.2, 0.0, 10.0],  # stored axis 1 points left
            [0.0, 0.0, 0.9, -4.0],  # stored axis 2 points anterior
            [2.5, 0.0, 0.0, 7.0],  # stored axis 0 points superior
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    data = np.stack([stored, stored + 1000], -1) if channels else stored
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "x.nii.gz")
    out, spacing = load_canonical(tmp_path / "x.nii.gz")
    expected = np.flip(stored, 1).transpose(1, 2, 0)
    assert out.shape == (4, 3, 5)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(spacing, (1.2, 0.9, 2.5), rtol=1e-6)


def test_save_overlay_png_reads_nifti_in_ras(lesion_dataset, tmp_path):
    img_path = lesion_dataset / "imagesTr/case_000.nii.gz"
    lbl_path = lesion_dataset / "labelsTr/case_000.nii.gz"
    out = save_overlay_png(img_path, tmp_path / "o.png", label_path=lbl_path, prediction_path=lbl_path)
    assert out.stat().st_size > 1000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
