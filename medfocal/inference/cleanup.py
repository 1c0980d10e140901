"""Connected-component clean-up of a label map: what ``medfocal infer --keep-largest --min-size`` applies
and ``medfocal evaluate --cleanup`` measures on validation predictions.

scipy's labelling (full connectivity: 8 in 2D, 26 in 3D) rather than MONAI's
``KeepLargestConnectedComponent`` / ``RemoveSmallObjects``, which need scikit-image (not a medfocal
dependency).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["clean_labels"]


def clean_labels(
    label: np.ndarray, labels: Iterable[int], keep_largest: bool = False, min_size: int = 0
) -> np.ndarray:
    """Per label of ``labels``: keep only its largest component and/or drop components < ``min_size`` voxels
    (set to 0). ``label`` is changed in place and returned."""
    if not (keep_largest or min_size > 0) or not label.any():
        return label
    from scipy import ndimage

    structure = np.ones((3,) * label.ndim, dtype=bool)
    for k in labels:
        comps, n = ndimage.label(label == k, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(comps.ravel())
        sizes[0] = 0
        drop = np.zeros(n + 1, dtype=bool)
        if keep_largest:
            drop[1:] = True
            drop[int(sizes.argmax())] = False
        if min_size > 0:
            drop |= sizes < min_size
        drop[0] = False
        label[drop[comps]] = 0
    return label
