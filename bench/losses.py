"""Benchmark: medfocal DiceFocalLoss (softmax) vs MONAI DiceFocalLoss(softmax=True, to_onehot_y=True).

Forward + backward time and memory on float32 logits, repetitions interleaved (MONAI, medfocal, MONAI, ...)
and medians reported, since the machines are shared and noisy.

Memory: on CPU, the bytes of the tensors autograd saves for backward (distinct storages, counted through
``torch.autograd.graph.saved_tensors_hooks``; this is what a loss keeps alive between forward and backward,
on top of the logits). On CUDA, ``torch.cuda.max_memory_allocated`` during forward + backward minus the
memory allocated before (logits, target).

Run: ``python bench/losses.py [--reps 7] [--device cpu|cuda|all] [--threads N]``.
Note: MONAI's softmax=True DiceFocalLoss uses a *sigmoid* focal term (MONAI issue 8242), so the two losses
do not compute the same value; the comparison is of what each library offers for "Dice + focal, softmax".
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.losses import DiceFocalLoss as MonaiDiceFocalLoss

from medfocal.losses import DiceFocalLoss

CASES = [(2, 3, 64, 64, 64), (16, 2, 256, 256)]
# a GPU also gets volumes of the size it trains on, where the work is memory-bound rather than launch-bound
CUDA_CASES = [*CASES, (2, 4, 128, 128, 128), (2, 4, 192, 192, 192)]


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


def step(loss, x, t, device):
    x.grad = None
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss(x, t).backward()
    if device == "cuda":
        torch.cuda.synchronize()
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


def run_case(shape, device: str, reps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device).requires_grad_()
    t = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g).to(device)
    ours = DiceFocalLoss("softmax", gamma=2.0)
    monai = MonaiDiceFocalLoss(softmax=True, to_onehot_y=True, gamma=2.0)
    for loss in (monai, ours):  # warm-up
        step(loss, x, t, device)
    times: dict[str, list[float]] = {"monai": [], "ours": []}
    for _ in range(reps):
        times["monai"].append(step(monai, x, t, device))
        times["ours"].append(step(ours, x, t, device))
    return {
        "case": f"{tuple(shape)} {device}",
        "monai_s": statistics.median(times["monai"]),
        "ours_s": statistics.median(times["ours"]),
        "monai_mb": memory(monai, x, t, device) / 2**20,
        "ours_mb": memory(ours, x, t, device) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    memory_kind = "saved-for-backward MiB (CPU) / peak allocated MiB (CUDA)"
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.reps} interleaved reps, medians"
    )
    header = (
        f"{'case':<28}{'MONAI ms':>10}{'medfocal ms':>13}{'ratio':>8}{'MONAI MiB':>11}{'medfocal MiB':>14}"
    )
    print(header)
    print("-" * len(header))
    for device in devices:
        for shape in CUDA_CASES if device == "cuda" else CASES:
            r = run_case(shape, device, args.reps)
            print(
                f"{r['case']:<28}{r['monai_s'] * 1e3:>10.1f}{r['ours_s'] * 1e3:>13.1f}"
                f"{r['monai_s'] / r['ours_s']:>7.1f}x{r['monai_mb']:>11.1f}{r['ours_mb']:>14.1f}"
            )
    print(f"memory: {memory_kind}")


if __name__ == "__main__":
    main()
