"""Benchmark: medfocal's focal-family losses against their MONAI counterparts, forward + backward.

Pairs (softmax, class-index targets ``(B, 1, *spatial)``, float32 logits):

- ``DiceFocalLoss`` vs MONAI ``DiceFocalLoss(softmax=True, to_onehot_y=True)`` (goal >= 4x on CPU with
  2 threads, aim 6x; issue 19). MONAI's softmax=True uses a *sigmoid* focal term (MONAI issue 8242), so the
  two do not compute the same value: the comparison is of what each library offers for "Dice + focal".
- ``DiceFocalLoss("sigmoid")`` vs MONAI ``DiceFocalLoss(sigmoid=True, to_onehot_y=True)`` (the same value:
  one-vs-rest channels from the class indices).
- ``JaccardFocalLoss`` vs MONAI ``DiceLoss(jaccard=True) + FocalLoss(use_softmax=True)``.
- ``FocalTverskyLoss`` (gamma 0.75) vs MONAI ``TverskyLoss(reduction="none") ** 0.75`` averaged.
- ``UnifiedFocalLoss`` vs MONAI ``AsymmetricUnifiedFocalLoss`` on softmax probabilities (2 classes only:
  MONAI supports no more).

Times: repetitions interleaved (MONAI, medfocal, medfocal eager, MONAI, ...), medians reported, since the
machines are shared and noisy; the load average before and after is printed. ``ours`` is the default
path (on the CPU, the compiled one-pass kernels of ``medfocal/losses/_compiled.py`` where they apply),
``eager`` the same loss with ``MEDFOCAL_COMPILED_LOSS=off`` (the eager fused path), ``compile s`` the
first call (compilation, or loading inductor's on-disk cache) of the default path. ``bound`` is the
memory-bandwidth floor: the bytes a loss must move at least (read the logits and the target, write the
gradient) divided by the bandwidth of a large ``torch`` copy measured in the same run with the same
threads.

Memory: on CPU, the bytes of the tensors autograd saves for backward (distinct storages, counted through
``torch.autograd.graph.saved_tensors_hooks``). On CUDA, ``torch.cuda.max_memory_allocated`` during
forward + backward minus the memory allocated before (logits, target).

Run: ``python bench/losses.py [--reps 9] [--device cpu|cuda|all] [--threads 2] [--only dice_focal]
[--compiled-devices cpu,cuda]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from monai.losses import AsymmetricUnifiedFocalLoss, DiceLoss, TverskyLoss
from monai.losses import DiceFocalLoss as MonaiDiceFocalLoss
from monai.losses import FocalLoss as MonaiFocalLoss
from torch import nn

from medfocal.losses import DiceFocalLoss, FocalTverskyLoss, JaccardFocalLoss, UnifiedFocalLoss, _compiled

CASES = [(2, 3, 64, 64, 64), (16, 2, 256, 256)]
# a GPU also gets volumes of the size it trains on, where the work is memory-bound rather than launch-bound
CUDA_CASES = [*CASES, (2, 4, 128, 128, 128), (2, 4, 192, 192, 192)]


class _MonaiJaccardFocal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.jaccard = DiceLoss(softmax=True, to_onehot_y=True, jaccard=True)
        self.focal = MonaiFocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.jaccard(x, t) + self.focal(x, t)


class _MonaiFocalTversky(nn.Module):
    def __init__(self, gamma: float = 0.75) -> None:
        super().__init__()
        self.tversky = TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7, reduction="none")
        self.gamma = gamma

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.tversky(x, t).pow(self.gamma).mean()


class _MonaiUnified(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.loss = AsymmetricUnifiedFocalLoss(to_onehot_y=True, num_classes=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.loss(torch.softmax(x, 1), t)  # MONAI's takes probabilities


class _Eager(nn.Module):
    """A medfocal loss with the compiled kernels switched off (the eager fused path)."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _compiled.set_mode("off")
        try:
            return self.loss(x, t)
        finally:
            _compiled.set_mode(None)


@dataclass(frozen=True)
class Pair:
    """A medfocal loss, its MONAI counterpart, the goal ratio (or None) and the class counts it supports."""

    name: str
    ours: Callable[[], nn.Module]
    monai: Callable[[], nn.Module]
    goal: str = "-"
    classes: tuple[int, ...] | None = None


PAIRS = [
    Pair(
        "dice_focal",
        lambda: DiceFocalLoss("softmax", gamma=2.0),
        lambda: MonaiDiceFocalLoss(softmax=True, to_onehot_y=True, gamma=2.0),
        ">=4x (6x)",
    ),
    Pair(
        "dice_focal_sig",
        lambda: DiceFocalLoss("sigmoid", gamma=2.0),
        lambda: MonaiDiceFocalLoss(sigmoid=True, to_onehot_y=True, gamma=2.0),
    ),
    Pair("jaccard_focal", lambda: JaccardFocalLoss("softmax", gamma=2.0), _MonaiJaccardFocal),
    Pair("focal_tversky", lambda: FocalTverskyLoss("softmax", gamma=0.75), _MonaiFocalTversky),
    Pair("unified_focal", lambda: UnifiedFocalLoss("softmax"), _MonaiUnified, classes=(2,)),
]


def saved_bytes(fn) -> int:
    """Run ``fn`` (a forward) and return the bytes of distinct storages autograd saves for backward."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.backward()
    return sum(seen.values())


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step(loss, x, t, device) -> float:
    x.grad = None
    _sync(device)
    start = time.perf_counter()
    loss(x, t).backward()
    _sync(device)
    return time.perf_counter() - start


def memory(loss, x, t, device) -> int:
    x.grad = None
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        loss(x, t).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    return saved_bytes(lambda: loss(x, t))


def bandwidth(device: str, reps: int = 9, mib: int = 256) -> float:
    """Bytes per second of a large ``dst.copy_(src)`` (read + write counted), median of ``reps``."""
    src = torch.ones(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / statistics.median(times)


def run_case(pair: Pair, shape, device: str, reps: int, bytes_per_s: float) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device).requires_grad_()
    t = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g).to(device)
    losses = {"monai": pair.monai().to(device), "ours": pair.ours().to(device)}
    losses["eager"] = _Eager(pair.ours().to(device))
    first = {name: step(loss, x, t, device) for name, loss in losses.items()}  # warm-up (and compile)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(reps):
        for name, loss in losses.items():
            times[name].append(step(loss, x, t, device))
    # at least: read the logits and the target, write the gradient of the logits
    must_move = 2 * x.numel() * x.element_size() + t.numel() * t.element_size()
    return {
        "loss": pair.name,
        "case": f"{tuple(shape)} {device}",
        **{f"{name}_s": statistics.median(v) for name, v in times.items()},
        "compile_s": first["ours"],
        "bound_s": must_move / bytes_per_s,
        "goal": pair.goal,
        "monai_mb": memory(losses["monai"], x, t, device) / 2**20,
        "ours_mb": memory(losses["ours"], x, t, device) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (issue 19: 2)")
    parser.add_argument("--only", nargs="*", default=None, help="loss names (default: all pairs)")
    parser.add_argument(
        "--compiled-devices",
        default=None,
        help="device types of the compiled kernels, e.g. cpu,cuda (default: $MEDFOCAL_COMPILED_LOSS_DEVICES "
        "or cpu); on a GPU, cpu,cuda makes 'ours' the Triton-compiled path and 'eager' the fused eager one",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compiled_devices:
        _compiled.set_devices([d.strip() for d in args.compiled_devices.split(",") if d.strip()])
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    pairs = [p for p in PAIRS if args.only is None or p.name in args.only]
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.reps} interleaved reps, "
        f"medians; compiled kernels on {','.join(_compiled.devices())}; "
        f"load average before: {os.getloadavg()[0]:.1f}"
    )
    header = (
        f"{'loss':<16}{'case':<24}{'MONAI ms':>9}{'ours ms':>8}{'ratio':>7}{'goal':>10}{'eager ms':>9}"
        f"{'ratio':>6}{'compile s':>10}{'bound ms':>9}{'ours/bound':>11}{'MONAI MiB':>10}{'ours MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for device in devices:
        bytes_per_s = bandwidth(device)
        for shape in CUDA_CASES if device == "cuda" else CASES:
            for pair in pairs:
                if pair.classes is not None and shape[1] not in pair.classes:
                    continue
                r = run_case(pair, shape, device, args.reps, bytes_per_s)
                print(
                    f"{r['loss']:<16}{r['case']:<24}{r['monai_s'] * 1e3:>9.1f}{r['ours_s'] * 1e3:>8.1f}"
                    f"{r['monai_s'] / r['ours_s']:>6.1f}x{r['goal']:>10}{r['eager_s'] * 1e3:>9.1f}"
                    f"{r['monai_s'] / r['eager_s']:>5.1f}x{r['compile_s']:>10.1f}{r['bound_s'] * 1e3:>9.2f}"
                    f"{r['ours_s'] / r['bound_s']:>10.1f}x{r['monai_mb']:>10.1f}{r['ours_mb']:>9.1f}"
                )
        print(f"{device}: copy bandwidth {bytes_per_s / 1e9:.1f} GB/s (read + write)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("memory: saved-for-backward MiB (CPU) / peak allocated MiB (CUDA)")


if __name__ == "__main__":
    main()
