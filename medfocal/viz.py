"""Slice views with label and prediction overlays, for the demo, reports and notebooks.

Volumes are shown in the closest canonical (RAS) orientation, with each view's aspect ratio taken
from the voxel spacing, so a 1 x 1 x 5 mm volume does not look squashed.

Example:
    >>> import numpy as np
    >>> from medfocal.viz import overlay_slices
    >>> img = np.random.rand(32, 32, 16); lbl = np.zeros_like(img, dtype=np.uint8); lbl[10:14, 10:14, 8] = 1
    >>> fig = overlay_slices(img, label=lbl, spacing=(1.0, 1.0, 2.5))
    >>> len(fig.axes)
    3
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["load_canonical", "overlay_slices", "save_overlay_png"]

_VIEWS = {"sagittal": 0, "coronal": 1, "axial": 2}


def load_canonical(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Load a NIfTI file reoriented to RAS; return ``(array, spacing)`` (first channel of a 4D image)."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    return np.asarray(data), tuple(float(z) for z in img.header.get_zooms()[:3])


def _focus_index(volume_shape: Sequence[int], masks: Sequence[np.ndarray | None]) -> tuple[int, ...]:
    """The voxel to slice through: the foreground voxel nearest the centroid of the first non-empty mask."""
    for mask in masks:
        if mask is not None and np.any(mask > 0):
            coords = np.argwhere(mask > 0)
            centre = coords.mean(0)
            return tuple(int(v) for v in coords[np.argmin(((coords - centre) ** 2).sum(1))])
    return tuple(s // 2 for s in volume_shape)


def _take(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    # transpose so the displayed image has anterior/superior up (RAS arrays, origin="lower")
    return np.take(volume, index, axis=axis).T


def overlay_slices(
    image: np.ndarray,
    label: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    index: Sequence[int] | None = None,
    views: Sequence[str] = ("axial", "coronal", "sagittal"),
    title: str | None = None,
):
    """A matplotlib figure with one panel per view: image in grey, label in green, prediction in red.

    Args:
        image: ``(X, Y, Z)`` array in RAS order (see :func:`load_canonical`), or ``(H, W)`` for 2D.
        label, prediction: integer masks of the same shape; classes > 0 are drawn as contours.
        spacing: voxel size, sets each panel's aspect ratio.
        index: voxel the three planes pass through; default: centre of the label (else prediction).
        views: any of ``"axial"``, ``"coronal"``, ``"sagittal"`` (ignored for 2D).
        title: figure title.

    Raises:
        ValueError: if label/prediction shapes differ from the image, or a view name is unknown.
    """
    # a bare Figure (no pyplot): works headless, leaves the notebook's backend alone, needs no close()
    from matplotlib.figure import Figure

    image = np.asarray(image, dtype=np.float32)
    for name, mask in (("label", label), ("prediction", prediction)):
        if mask is not None and np.shape(mask) != image.shape:
            raise ValueError(f"{name} shape {np.shape(mask)} differs from image shape {image.shape}")
    lo, hi = np.percentile(image, [1, 99.5])
    if image.ndim == 2:
        panels = [(None, image, label, prediction, 1.0)]
    else:
        unknown = [v for v in views if v not in _VIEWS]
        if unknown:
            raise ValueError(f"unknown view(s) {unknown}; expected some of {sorted(_VIEWS)}")
        focus = tuple(index) if index is not None else _focus_index(image.shape, (label, prediction))
        panels = []
        for view in views:
            axis = _VIEWS[view]
            rest = [d for d in range(3) if d != axis]
            aspect = spacing[rest[1]] / spacing[rest[0]]
            masks = [
                None if m is None else _take(np.asarray(m), axis, focus[axis]) for m in (label, prediction)
            ]
            panels.append((f"{view} {focus[axis]}", _take(image, axis, focus[axis]), *masks, aspect))
    fig = Figure(figsize=(4 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, img2d, lbl2d, pred2d, aspect) in zip(axes[0], panels):
        ax.imshow(
            img2d, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest"
        )
        for mask, colour in ((lbl2d, "lime"), (pred2d, "red")):
            if mask is not None and np.any(mask > 0):
                ax.contour(mask > 0, levels=[0.5], colors=colour, linewidths=1.2, origin="lower")
        ax.set_axis_off()
        if name:
            ax.set_title(name, fontsize=9)
    legend = [("label", "lime")] * (label is not None) + [("prediction", "red")] * (prediction is not None)
    if legend:
        from matplotlib.lines import Line2D

        handles = [Line2D([0], [0], color=c, lw=2) for _, c in legend]
        fig.legend(handles, [n for n, _ in legend], loc="lower center", ncol=len(legend), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def save_overlay_png(
    image_path: str | Path,
    out_png: str | Path,
    label_path: str | Path | None = None,
    prediction_path: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Write a three-view overlay PNG of NIfTI files (all read in RAS); returns the PNG path."""
    image, spacing = load_canonical(image_path)
    label = load_canonical(label_path)[0].astype(np.int16) if label_path else None
    prediction = load_canonical(prediction_path)[0].astype(np.int16) if prediction_path else None
    fig = overlay_slices(image, label=label, prediction=prediction, spacing=spacing, title=title)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png
