"""``surface_metrics``: HD95, ASD and NSD from one surface pass equal MONAI's three separate functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage

from medfocal.metrics.lesion import normalised_surface_dice, surface_metrics


def _blobs(rng, shape, n):
    mask = np.zeros(shape, bool)
    for _ in range(n):
        centre = [rng.integers(0, s) for s in shape]
        mask[tuple(slice(max(c - 3, 0), c + rng.integers(1, 5)) for c in centre)] = True
    return ndimage.binary_dilation(mask, iterations=int(rng.integers(0, 2)))


@pytest.mark.parametrize(
    ("shape", "spacing"), [((40, 36), None), ((40, 36), (0.7, 1.3)), ((24, 20, 16), (1.0, 1.0, 3.0))]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_monai_functions(shape, spacing, seed):
    rng = np.random.default_rng(seed)
    p, g = _blobs(rng, shape, 6), _blobs(rng, shape, 4)
    tol = 1.5
    got = surface_metrics(p, g, tol, spacing=spacing)
    pt, gt = torch.from_numpy(p)[None, None].float(), torch.from_numpy(g)[None, None].float()
    sp = None if spacing is None else list(spacing)
    hd95 = compute_hausdorff_distance(pt, gt, include_background=True, percentile=95, spacing=sp).item()
    asd = compute_average_surface_distance(pt, gt, include_background=True, symmetric=True, spacing=sp).item()

    def onehot(m):
        t = torch.from_numpy(m.astype(np.float32))
        return torch.stack([1 - t, t])[None]

    nsd = compute_surface_dice(onehot(p), onehot(g), [tol], include_background=False, spacing=sp).item()
    assert got["hd95"] == pytest.approx(hd95, rel=1e-5)
    assert got["asd"] == pytest.approx(asd, rel=1e-5)
    assert got["nsd"] == pytest.approx(nsd, rel=1e-6)
    assert got["nsd"] == pytest.approx(normalised_surface_dice(p, g, tol, spacing=spacing), rel=1e-6)


def test_empty_sides():
    g = np.zeros((10, 10), bool)
    g[2:5, 2:5] = True
    one = surface_metrics(np.zeros_like(g), g, 1.0)
    assert math.isnan(one["hd95"]) and math.isnan(one["asd"]) and one["nsd"] == 0.0
    none = surface_metrics(np.zeros_like(g), np.zeros_like(g), 1.0)
    assert none["nsd"] == 1.0 and math.isnan(none["hd95"])
    with pytest.raises(ValueError, match="shape"):
        surface_metrics(g, g[:5], 1.0)
    with pytest.raises(ValueError, match="tolerance"):
        surface_metrics(g, g, -1.0)
