"""Surface metrics of ``medfocal evaluate``: HD95, ASD and NSD from one shared edge-distance pass
(``medfocal.metrics.lesion.surface_metrics``) against MONAI's three functions called one after another
(what ``evaluate`` did before), on BraTS-sized masks (240 x 240 x 155, 1 mm), side by side with the
ratio. Same values (checked here and in ``tests/metrics/test_surface_metrics.py``).

Cases: a trained-like prediction (the ground truth shifted by 2 voxels, a few false positives) and a
noisy one (an early network: 1% of the voxels scattered), one label each. One torch thread.

    python bench/surface_metrics.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

from medfocal.metrics.lesion import surface_metrics

SHAPE = (240, 240, 155)
TOL = 1.0


def separate(p: np.ndarray, g: np.ndarray) -> dict[str, float]:
    """MONAI's three functions, as ``evaluate_case`` called them before the shared pass."""
    pt, gt = torch.from_numpy(p)[None, None].float(), torch.from_numpy(g)[None, None].float()
    spacing = [1.0, 1.0, 1.0]
    hd95 = compute_hausdorff_distance(pt, gt, include_background=True, percentile=95, spacing=spacing)
    asd = compute_average_surface_distance(pt, gt, include_background=True, symmetric=True, spacing=spacing)

    def onehot(m: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(m.astype(np.float32))
        return torch.stack([1 - t, t])[None]

    nsd = compute_surface_dice(onehot(p), onehot(g), [TOL], include_background=False, spacing=spacing)
    return {"hd95": hd95.item(), "asd": asd.item(), "nsd": nsd.item()}


def cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    gt = ((zz - 120) ** 2 / 30**2 + (yy - 110) ** 2 / 25**2 + (xx - 70) ** 2 / 20**2) < 1  # ~60 ml tumour
    trained = np.roll(gt, 2, axis=0)
    trained[rng.integers(0, 240, 5), rng.integers(0, 240, 5), rng.integers(0, 155, 5)] = True
    noisy = gt | (rng.random(SHAPE) < 0.01)
    return {"trained-like": (trained, gt), "noisy (1% scattered)": (noisy, gt)}


def timed(fn, repeats: int = 3) -> tuple[float, dict[str, float]]:
    best, out = float("inf"), {}
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    torch.set_num_threads(1)
    print(f"{'case':<24}{'separate s':>12}{'shared s':>10}{'ratio':>8}   values (hd95, asd, nsd)")
    for name, (p, g) in cases().items():
        t_sep, v_sep = timed(lambda p=p, g=g: separate(p, g))
        t_one, v_one = timed(lambda p=p, g=g: surface_metrics(p, g, TOL, spacing=(1.0, 1.0, 1.0)))
        for k in v_sep:
            assert np.isclose(v_sep[k], v_one[k], rtol=1e-5), (name, k, v_sep[k], v_one[k])
        values = ", ".join(f"{v_one[k]:.3f}" for k in ("hd95", "asd", "nsd"))
        print(f"{name:<24}{t_sep:>12.2f}{t_one:>10.2f}{t_sep / t_one:>7.2f}x   {values} (equal)")


if __name__ == "__main__":
    main()
