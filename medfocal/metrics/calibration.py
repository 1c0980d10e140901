"""Calibration metrics: ECE (top-label, class-wise, voxel-wise) and reliability diagrams.

Only what MONAI, torchmetrics and scikit-learn lack: torchmetrics has a top-label ECE for
``(N, C)`` classification, but no class-wise ECE, no voxel-wise ECE that works on ``(B, C, *spatial)``
segmentation probabilities without copying them, no streaming histogram to feed AdaFocal and no
reliability diagram.

All functions take *probabilities* (after softmax or sigmoid), never logits, and bin with
``torch.bincount`` into equal-width bins ``[0, 1/M), [1/M, 2/M), ..., [(M-1)/M, 1]`` (a confidence of
exactly 1 falls in the last bin). Accumulation is in float64.

References:
    Guo et al., "On Calibration of Modern Neural Networks", ICML 2017 (ECE, reliability diagrams).
    Kull et al., "Beyond temperature scaling", NeurIPS 2019 (class-wise ECE).
    Naeini et al., "Obtaining well calibrated probabilities using Bayesian binning", AAAI 2015.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CalibrationBins",
    "calibration_bins",
    "classwise_ece",
    "expected_calibration_error",
    "reliability_diagram",
    "voxelwise_ece",
]

_NORMS = ("l1", "l2", "max")


@dataclass(frozen=True)
class CalibrationBins:
    """Per-bin sample counts, summed confidences and summed correctness of a top-label histogram.

    Sums (not means) so that histograms of several batches add up exactly: ``bins_a + bins_b``.

    Attributes:
        counts: ``(n_bins,)`` float64, samples (or voxels) per bin.
        confidence_sum: ``(n_bins,)`` float64, sum of the top-label probability per bin.
        accuracy_sum: ``(n_bins,)`` float64, number of correct top-label predictions per bin.
    """

    counts: Tensor
    confidence_sum: Tensor
    accuracy_sum: Tensor

    @property
    def n_bins(self) -> int:
        """Number of equal-width bins."""
        return int(self.counts.numel())

    @property
    def total(self) -> Tensor:
        """Total number of samples in the histogram (0-dim tensor)."""
        return self.counts.sum()

    @property
    def edges(self) -> Tensor:
        """Bin edges, ``(n_bins + 1,)`` from 0 to 1."""
        return torch.linspace(0.0, 1.0, self.n_bins + 1, dtype=torch.float64)

    def _mean(self, sums: Tensor) -> Tensor:
        centres = (self.edges[:-1] + self.edges[1:]) / 2
        centres = centres.to(sums.device)
        return torch.where(self.counts > 0, sums / self.counts.clamp_min(1), centres)

    def bin_confidence(self) -> Tensor:
        """Mean confidence per bin, ``(n_bins,)``; an empty bin reports its centre."""
        return self._mean(self.confidence_sum)

    def bin_accuracy(self) -> Tensor:
        """Accuracy per bin, ``(n_bins,)``; an empty bin reports its centre (so its gap is 0)."""
        return self._mean(self.accuracy_sum)

    def ece(self, norm: str = "l1") -> Tensor:
        """Calibration error of the histogram.

        ``l1``: ``sum_b |acc_b - conf_b| * n_b / N`` (ECE); ``l2``: ``sum_b (acc_b - conf_b)^2 n_b / N``
        (no square root, as torchmetrics); ``max``: ``max_b |acc_b - conf_b|`` over non-empty bins (MCE).

        Raises:
            ValueError: unknown ``norm`` or an empty histogram.
        """
        if norm not in _NORMS:
            raise ValueError(f"norm: expected one of {_NORMS}, got {norm!r}")
        total = self.total
        if total <= 0:
            raise ValueError("calibration error of an empty histogram (no samples were binned)")
        gap = (self.bin_accuracy() - self.bin_confidence()).abs()
        if norm == "l1":
            return (gap * self.counts).sum() / total
        if norm == "l2":
            return (gap.square() * self.counts).sum() / total
        return gap[self.counts > 0].max()

    def __add__(self, other: CalibrationBins) -> CalibrationBins:
        if not isinstance(other, CalibrationBins):
            return NotImplemented
        if other.n_bins != self.n_bins:
            raise ValueError(f"cannot add histograms of {self.n_bins} and {other.n_bins} bins")
        return CalibrationBins(
            self.counts + other.counts.to(self.counts.device),
            self.confidence_sum + other.confidence_sum.to(self.counts.device),
            self.accuracy_sum + other.accuracy_sum.to(self.counts.device),
        )

    @classmethod
    def empty(cls, n_bins: int = 15, device: torch.device | str | None = None) -> CalibrationBins:
        """An all-zero histogram to accumulate into."""
        zeros = torch.zeros(n_bins, dtype=torch.float64, device=device)
        return cls(zeros, zeros.clone(), zeros.clone())


def _check_n_bins(n_bins: int) -> None:
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive int, got {n_bins!r}")


def _as_class_probs(probs: Tensor) -> Tensor:
    """Return ``(N, C, *spatial)`` class probabilities; a binary ``(N,)`` or ``(N, 1, ...)`` input
    (probability of the positive class) becomes two channels ``[1 - p, p]``."""
    if not torch.is_tensor(probs):
        probs = torch.as_tensor(probs)
    if not probs.is_floating_point():
        raise ValueError(f"probs: expected floating-point probabilities, got dtype {probs.dtype}")
    if probs.ndim == 1:
        probs = probs[:, None]
    if probs.shape[1] == 1:
        probs = torch.cat([1 - probs, probs], dim=1)
    return probs


def _as_index_labels(labels: Tensor, probs: Tensor) -> Tensor:
    """Return ``(N, *spatial)`` integer class indices matching ``probs`` ``(N, C, *spatial)``.

    Accepts ``(N, *spatial)`` indices, ``(N, 1, *spatial)`` indices (MONAI) or ``(N, C, *spatial)``
    one-hot labels.
    """
    if not torch.is_tensor(labels):
        labels = torch.as_tensor(labels)
    labels = labels.to(probs.device)
    expected = (probs.shape[0], *probs.shape[2:])
    if labels.ndim == probs.ndim and labels.shape == probs.shape and probs.shape[1] > 1:
        labels = labels.argmax(dim=1)
    elif labels.ndim == probs.ndim and labels.shape[1] == 1:
        labels = labels[:, 0]
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels: expected shape {expected} (or {(probs.shape[0], 1, *probs.shape[2:])} or one-hot "
            f"{tuple(probs.shape)}) for probs of shape {tuple(probs.shape)}, got {tuple(labels.shape)}"
        )
    return labels.long()


def _as_mask(mask: Tensor | None, labels: Tensor) -> Tensor | None:
    if mask is None:
        return None
    mask = torch.as_tensor(mask, device=labels.device)
    if mask.ndim == labels.ndim + 1 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.shape != labels.shape:
        raise ValueError(f"mask: expected shape {tuple(labels.shape)}, got {tuple(mask.shape)}")
    return mask.bool()


def _bin_index(values: Tensor, n_bins: int) -> Tensor:
    return (values.double() * n_bins).floor().long().clamp_(0, n_bins - 1)


def calibration_bins(
    probs: Tensor,
    labels: Tensor,
    n_bins: int = 15,
    *,
    mask: Tensor | None = None,
    max_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> CalibrationBins:
    """Top-label calibration histogram of classification or segmentation probabilities.

    The confidence of a sample (or voxel) is ``max_c p_c``; it is correct when ``argmax_c p_c`` equals
    the label. Only ``(N, *spatial)`` confidence/correctness tensors are formed, never a copy of the
    ``(N, C, *spatial)`` probabilities.

    Args:
        probs: ``(N, C)`` or ``(N, C, *spatial)`` probabilities summing to 1 over ``C``; ``(N,)`` or
            ``(N, 1, *spatial)`` is read as the probability of the positive class of a binary problem.
        labels: class indices ``(N, *spatial)`` or ``(N, 1, *spatial)``, or one-hot ``(N, C, *spatial)``.
        n_bins: number of equal-width bins on ``[0, 1]``.
        mask: optional boolean ``(N, *spatial)`` or ``(N, 1, *spatial)``: only ``True`` voxels count
            (e.g. the field of view of a fundus image or a brain mask).
        max_samples: if set and more samples/voxels remain, bin a uniform random subset (with
            replacement) of this size: an unbiased estimate of the histogram's proportions.
        generator: random generator for the subset (reproducibility).

    Returns:
        :class:`CalibrationBins` (float64 on the device of ``probs``).

    Raises:
        ValueError: non-float probabilities, mismatched shapes or a non-positive ``n_bins``.

    Example:
        >>> p = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
        >>> round(calibration_bins(p, torch.tensor([0, 0]), n_bins=10).ece().item(), 6)  # (0.1 + 0.7) / 2
        0.4
    """
    _check_n_bins(n_bins)
    probs = _as_class_probs(probs)
    labels = _as_index_labels(labels, probs)
    mask_ = _as_mask(mask, labels)
    with torch.no_grad():
        confidence, prediction = probs.detach().max(dim=1)
        correct = prediction == labels
        if mask_ is not None:
            confidence, correct = confidence[mask_], correct[mask_]
        confidence, correct = confidence.reshape(-1), correct.reshape(-1)
        if max_samples is not None and confidence.numel() > max_samples:
            device = generator.device if generator is not None else confidence.device
            pick = torch.randint(confidence.numel(), (int(max_samples),), generator=generator, device=device)
            pick = pick.to(confidence.device)
            confidence, correct = confidence[pick], correct[pick]
        index = _bin_index(confidence, n_bins)
        counts = torch.bincount(index, minlength=n_bins).double()
        conf_sum = torch.bincount(index, weights=confidence.double(), minlength=n_bins)
        acc_sum = torch.bincount(index, weights=correct.double(), minlength=n_bins)
    return CalibrationBins(counts, conf_sum, acc_sum)


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15, norm: str = "l1") -> Tensor:
    """Expected calibration error (top-label, equal-width bins) of classification probabilities.

    ``ECE = sum_b (n_b / N) |acc_b - conf_b|`` over ``n_bins`` equal-width confidence bins, where
    ``conf_b`` is the mean top-label probability and ``acc_b`` the accuracy of the samples in bin ``b``
    (Guo et al., ICML 2017). Agrees with ``torchmetrics.classification.MulticlassCalibrationError(
    num_classes=C, n_bins=n_bins, norm="l1")`` (up to confidences of exactly 1.0, which torchmetrics puts
    in an extra bin).

    Args:
        probs: ``(N, C)`` probabilities, or ``(N,)`` probability of the positive class (binary).
            ``(N, C, *spatial)`` also works (see :func:`voxelwise_ece` for masks and subsampling).
        labels: ``(N,)`` class indices (or ``(N, C)`` one-hot).
        n_bins: number of bins (15, as in Guo et al.).
        norm: ``"l1"`` (ECE), ``"l2"`` or ``"max"`` (maximum calibration error).

    Returns:
        0-dim float64 tensor in ``[0, 1]``.

    Example:
        >>> p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]])
        >>> round(expected_calibration_error(p, torch.tensor([0, 1, 1]), n_bins=5).item(), 4)
        0.3667
    """
    return calibration_bins(probs, labels, n_bins).ece(norm)


def voxelwise_ece(
    probs: Tensor,
    labels: Tensor,
    n_bins: int = 15,
    *,
    mask: Tensor | None = None,
    max_voxels: int | None = None,
    generator: torch.Generator | None = None,
    norm: str = "l1",
) -> Tensor:
    """Voxel-wise expected calibration error of segmentation probabilities.

    Every voxel is one top-label prediction; equals :func:`expected_calibration_error` of the
    flattened voxels ``probs.movedim(1, -1).reshape(-1, C)`` but never builds that copy. For many
    volumes, accumulate :func:`calibration_bins` (``bins_a + bins_b``) and call ``.ece()``.

    Args:
        probs: ``(B, C, *spatial)`` softmax probabilities (2D or 3D), or ``(B, 1, *spatial)``
            foreground probability of a binary sigmoid output.
        labels: ``(B, 1, *spatial)`` or ``(B, *spatial)`` class indices, or ``(B, C, *spatial)``
            one-hot.
        n_bins: number of equal-width bins.
        mask: optional boolean region (field of view, brain mask) of the label's shape.
        max_voxels: bin a uniform random subset of at most this many voxels (memory/time bound).
        generator: random generator for the subset.
        norm: ``"l1"``, ``"l2"`` or ``"max"``.

    Returns:
        0-dim float64 tensor.

    Example:
        >>> p = torch.softmax(torch.randn(2, 3, 8, 8, 4), dim=1)
        >>> y = torch.randint(0, 3, (2, 1, 8, 8, 4))
        >>> bool(voxelwise_ece(p, y) >= 0)
        True

    Reference:
        Mehrtash et al., "Confidence calibration and predictive uncertainty estimation for deep medical
        image segmentation", IEEE TMI 2020.
    """
    if torch.as_tensor(probs).ndim < 3:
        raise ValueError(
            f"probs: expected (B, C, *spatial) segmentation probabilities, got shape {tuple(probs.shape)}"
        )
    bins = calibration_bins(probs, labels, n_bins, mask=mask, max_samples=max_voxels, generator=generator)
    return bins.ece(norm)


def classwise_ece(probs: Tensor, labels: Tensor, n_bins: int = 15, reduction: str = "mean") -> Tensor:
    """Class-wise expected calibration error (Kull et al., NeurIPS 2019).

    For each class ``k``, bin the samples by ``p_k`` and compare the mean ``p_k`` with the frequency of
    class ``k`` in each bin: ``ECE_k = sum_b (n_b / N) |freq_b(y = k) - mean_b(p_k)|``. Sensitive to the
    calibration of rare classes, which the top-label ECE hardly sees.

    Args:
        probs: ``(N, C)`` probabilities (``(N,)`` binary positive-class probability) or
            ``(N, C, *spatial)``.
        labels: class indices ``(N, *spatial)`` / ``(N, 1, *spatial)`` or one-hot.
        n_bins: number of equal-width bins.
        reduction: ``"mean"`` (class-wise ECE, a 0-dim tensor) or ``"none"`` (``(C,)`` per class).

    Example:
        >>> p = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
        >>> classwise_ece(p, torch.tensor([0, 1]), n_bins=10, reduction="none")
        tensor([0.2000, 0.2000], dtype=torch.float64)
    """
    _check_n_bins(n_bins)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
    probs = _as_class_probs(probs)
    labels = _as_index_labels(labels, probs)
    n_classes = probs.shape[1]
    with torch.no_grad():
        per_class = []
        for k in range(n_classes):
            p_k = probs[:, k].detach().reshape(-1).double()
            is_k = (labels.reshape(-1) == k).double()
            index = _bin_index(p_k, n_bins)
            conf = torch.bincount(index, weights=p_k, minlength=n_bins)
            freq = torch.bincount(index, weights=is_k, minlength=n_bins)
            per_class.append((freq - conf).abs().sum() / p_k.numel())
        result = torch.stack(per_class)
    return result.mean() if reduction == "mean" else result


def reliability_diagram(
    probs: Tensor | CalibrationBins,
    labels: Tensor | None = None,
    n_bins: int = 15,
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the gap shaded.

    Draws one bar per bin (empty bins have height 0) in ``ax.containers[0]`` and the gap to perfect
    calibration in ``ax.containers[1]``; the legend carries the ECE. Builds a
    ``matplotlib.figure.Figure`` without pyplot, so it works headless (Agg) and leaks no global state.

    Args:
        probs: ``(N, C)`` / ``(N,)`` / ``(N, C, *spatial)`` probabilities, or a ready
            :class:`CalibrationBins` (then ``labels`` is ignored).
        labels: class indices as in :func:`calibration_bins`.
        n_bins: number of bins.
        ax: draw into this axes instead of a new figure.
        title: axes title.

    Returns:
        The ``Figure`` (``fig.savefig("reliability.png")``).

    Example:
        >>> fig = reliability_diagram(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0]), n_bins=5)
        >>> len(fig.axes[0].containers[0])
        5
    """
    from matplotlib.figure import Figure

    if isinstance(probs, CalibrationBins):
        bins = probs
    else:
        if labels is None:
            raise ValueError("labels: required unless probs is a CalibrationBins histogram")
        bins = calibration_bins(probs, labels, n_bins)
    if ax is None:
        fig = Figure(figsize=(4.2, 4.2), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    edges = bins.edges.numpy()
    width = edges[1] - edges[0]
    counts = bins.counts.cpu()
    accuracy = torch.where(counts > 0, bins.bin_accuracy().cpu(), torch.zeros_like(counts)).numpy()
    confidence = torch.where(counts > 0, bins.bin_confidence().cpu(), torch.zeros_like(counts)).numpy()
    ece = bins.ece().item() if bins.total > 0 else float("nan")
    ax.bar(
        edges[:-1],
        accuracy,
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="black",
        label=f"accuracy (ECE {ece:.3f})",
    )
    ax.bar(
        edges[:-1],
        confidence - accuracy,
        bottom=accuracy,
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        label="gap",
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize="small")
    if title:
        ax.set_title(title)
    return fig
