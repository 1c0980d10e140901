"""Lesion matching: ``medfocal.metrics.lesion.lesion_counts`` (sparse lesion x component pairs) against the
dense lesions x components overlap table it replaced, on one 3D case, side by side with the ratio.

A trained-like prediction has a few components; a noisy one (an early or bad network, scored by
``medfocal evaluate`` or the validation pass) tens of thousands, and the dense table grows as lesions x
components. Prints wall time (best of 3) and peak traced memory of both; same counts (checked here and
in ``tests/metrics/test_lesion.py``).

    python bench/lesion_matching.py
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
from scipy import ndimage

from medfocal.metrics.lesion import lesion_counts


def dense_hits(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The previous implementation's core: a dense (lesions x components) overlap table."""
    structure = ndimage.generate_binary_structure(gt.ndim, gt.ndim)
    g_lab, n_g = ndimage.label(gt, structure)
    p_lab, n_p = ndimage.label(pred, structure)
    both = (g_lab > 0) & (p_lab > 0)
    overlap = np.zeros((n_g, n_p))
    np.add.at(overlap, (g_lab[both] - 1, p_lab[both] - 1), 1.0)
    return (overlap > 0).any(axis=1), (overlap > 0).any(axis=0)


def timed(fn, repeats: int = 3) -> tuple[float, float, object]:
    """Best wall time of ``repeats`` calls, peak traced memory (MB, numpy included), the result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return best, peak, out


def main() -> None:
    rng = np.random.default_rng(0)
    gt = np.zeros((120, 120, 78), bool)  # BraTS at 2 mm
    gt[40:70, 40:75, 30:50] = True
    gt[rng.integers(0, 120, 60), rng.integers(0, 120, 60), rng.integers(0, 78, 60)] = True
    fragments = gt.copy()  # plus 3000 one-voxel ground-truth fragments, as BraTS label maps have
    fragments[rng.integers(0, 120, 3000), rng.integers(0, 120, 3000), rng.integers(0, 78, 3000)] = True
    noisy = rng.random(gt.shape) > 0.97
    cases = {
        "trained-like": (gt.copy(), gt),
        "noisy (3% of voxels)": (noisy, gt),
        "noisy, fragmented gt": (noisy, fragments),
    }
    print(f"{'prediction':<22}{'lesions x components':>22}{'dense s':>9}{'sparse s':>9}{'time ratio':>11}"
          f"{'dense MB':>10}{'sparse MB':>10}")  # fmt: skip
    structure = ndimage.generate_binary_structure(3, 3)
    for name, (pred, target) in cases.items():
        size = f"{ndimage.label(target, structure)[1]} x {ndimage.label(pred, structure)[1]}"
        t_dense, m_dense, (g_hit, _) = timed(lambda pred=pred, target=target: dense_hits(pred, target))
        t_sparse, m_sparse, counts = timed(
            lambda pred=pred, target=target: lesion_counts(pred, target, size_bins=[])
        )
        assert sum(counts.gt_detected.values()) == int(g_hit.sum())
        print(f"{name:<22}{size:>22}{t_dense:>9.3f}{t_sparse:>9.3f}{t_sparse / t_dense:>10.2f}x"
              f"{m_dense:>10.0f}{m_sparse:>10.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
