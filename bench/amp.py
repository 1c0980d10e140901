"""Mixed precision: every medfocal loss under fp16/bf16 autocast against float32, and AMP training speed.

Three parts, on one device (``--device cuda`` on a GPU machine; CPU autocast works too, slowly):

1. **Numerics.** For each registered loss x activation, logits at three scales (std 1, 10 and 40: at 40
   ``exp`` overflows float16) with a quarter of the voxels ignored; the loss and its gradient computed
   on float16/bfloat16 logits under ``torch.autocast`` against float32 on the *same* (rounded) values.
   Prints the relative loss error, the gradient error relative to the largest gradient, and whether
   everything is finite. Where torchvision is importable, ``FocalLoss(activation="sigmoid")`` is also
   compared with ``torchvision.ops.sigmoid_focal_loss`` (alpha 0.25, gamma 2) in both precisions. On a
   GPU, every loss is also compared with the CPU in float64 (the GPU takes its own code paths).
2. **Training.** A 3D U-Net (MONAI) trained ``--steps`` steps on a generated lesion batch
   (``medfocal.synthetic``) per loss with
   ``torch.amp.GradScaler`` under float16 autocast, beside the same run in float32: steps the scaler
   skipped (inf/NaN gradients), and the final loss in each precision.
3. **Speed.** Forward + backward of that U-Net + ``DiceFocalLoss`` on a (2, 1, 96, 96, 96) batch, float32
   vs float16 and bfloat16 autocast: median milliseconds and the ratio to float32 in one run.

Run: ``python bench/amp.py --device cuda`` (about a minute on an H100/H200).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import medfocal.losses as L
from medfocal.nets import UNet
from medfocal.synthetic import synthetic_lesion_volume

SCALES = (1.0, 10.0, 40.0)


def build(name: str, activation: str) -> torch.nn.Module:
    kwargs: dict = {"activation": activation, "ignore_index": 255}
    if name == "focal_tversky":
        kwargs["lambda_focal"] = 1.0
    return L.get(name, **kwargs)


def case(activation: str, scale: float, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = 1 if activation == "sigmoid" else 3
    x = scale * torch.randn((2, c, 16, 16, 8), generator=g)
    t = torch.randint(0, max(c, 2), (2, 16, 16, 8), generator=g)
    t.view(-1)[::4] = 255
    return x.to(device), t.to(device)


def value_and_grad(loss: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, dtype: torch.dtype | None):
    x = x.detach().clone().requires_grad_()
    if dtype is None:
        value = loss(x, t)
    else:
        with torch.autocast(x.device.type, dtype=dtype):
            value = loss(x, t)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach().float(), grad.float()


def numerics(device: str) -> bool:
    print("## 1. Numerics: autocast vs float32 on the same logits (worst over scales 1, 10, 40)\n")
    print("| loss | activation | dtype | rel. loss error | grad error / max grad | finite |")
    print("|---|---|---|---|---|---|")
    ok = True
    for name in L.names():
        for activation in ("softmax", "sigmoid"):
            for dtype in (torch.float16, torch.bfloat16):
                worst_v = worst_g = 0.0
                finite = True
                for scale in SCALES:
                    x, t = case(activation, scale, device)
                    x = x.to(dtype)  # the values both precisions see
                    v32, g32 = value_and_grad(build(name, activation).to(device), x.float(), t, None)
                    v16, g16 = value_and_grad(build(name, activation).to(device), x, t, dtype)
                    finite &= bool(torch.isfinite(v16)) and bool(torch.isfinite(g16).all())
                    worst_v = max(worst_v, float((v16 - v32).abs() / v32.abs().clamp_min(1e-6)))
                    worst_g = max(worst_g, float((g16 - g32).abs().max() / g32.abs().max().clamp_min(1e-12)))
                ok &= finite
                tag = str(dtype).removeprefix("torch.")
                print(f"| {name} | {activation} | {tag} | {worst_v:.1e} | {worst_g:.1e} | {finite} |")
    try:
        from torchvision.ops import sigmoid_focal_loss
    except Exception as error:  # torchvision is optional (not a dependency)
        print(f"\ntorchvision not importable ({type(error).__name__}): reference comparison skipped")
        return ok
    print("\n### FocalLoss(sigmoid, alpha 0.25, gamma 2) vs torchvision.ops.sigmoid_focal_loss\n")
    print("| scale | dtype | medfocal | torchvision | rel. difference |")
    print("|---|---|---|---|---|")
    ours = L.FocalLoss(activation="sigmoid", alpha=0.25, gamma=2.0).to(device)
    for scale in SCALES:
        g = torch.Generator().manual_seed(1)
        x = (scale * torch.randn((4, 3, 32, 32), generator=g)).to(device)
        y = (torch.rand((4, 3, 32, 32), generator=g) < 0.1).float().to(device)
        for dtype in (None, torch.float16, torch.bfloat16):
            xd = x if dtype is None else x.to(dtype)
            with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
                a = float(ours(xd, y))
                b = float(sigmoid_focal_loss(xd.float(), y, alpha=0.25, gamma=2.0, reduction="mean"))
            tag = "float32" if dtype is None else str(dtype).removeprefix("torch.")
            print(f"| {scale:g} | {tag} | {a:.6g} | {b:.6g} | {abs(a - b) / max(abs(b), 1e-12):.1e} |")
    return ok


def agreement(device: str) -> bool:
    """Every loss on ``device`` against the CPU in float64 (a GPU takes its own paths, e.g. class sums)."""
    print(f"\n## 1b. {device} against CPU, float64, same logits and targets\n")
    print("| loss | activation | rel. loss difference | grad difference / max grad |")
    print("|---|---|---|---|")
    ok = True
    for name in L.names():
        for activation in ("softmax", "sigmoid"):
            x, t = case(activation, 3.0, "cpu", seed=2)
            x = x.double()
            v_cpu, g_cpu = value_and_grad(build(name, activation), x, t, None)
            on_device = build(name, activation).to(device)
            v_dev, g_dev = value_and_grad(on_device, x.to(device), t.to(device), None)
            dv = float((v_dev.cpu() - v_cpu).abs() / v_cpu.abs().clamp_min(1e-12))
            dg = float((g_dev.cpu() - g_cpu).abs().max() / g_cpu.abs().max().clamp_min(1e-12))
            ok &= dv < 1e-6 and dg < 1e-6
            print(f"| {name} | {activation} | {dv:.1e} | {dg:.1e} |")
    return ok


def lesion_batch(device: str, size: int = 48, seed: int = 0):
    """Two generated MRI-like volumes with small lesions (``medfocal.synthetic``), z-scored, and labels."""
    rng = np.random.default_rng(seed)
    cases = [synthetic_lesion_volume((size, size, size), (1.0, 1.0, 1.0), rng) for _ in range(2)]
    image = torch.from_numpy(np.stack([img[..., 0] for img, _ in cases]))[:, None]
    image = (image - image.mean()) / image.std()
    label = torch.from_numpy(np.stack([lab for _, lab in cases]).astype(np.int64))
    return image.to(device), label.to(device)


def net(device: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                num_res_units=1).to(device)  # fmt: skip


def train(name: str, device: str, steps: int, amp: bool) -> tuple[float, int]:
    model = net(device)
    loss_fn = build(name, "softmax").to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler(device, enabled=amp)
    image, label = lesion_batch(device)
    skipped = 0
    value = torch.tensor(float("nan"))
    for _ in range(steps):
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.float16, enabled=amp):
            value = loss_fn(model(image), label)
        scale_before = scaler.get_scale() if amp else 1.0
        scaler.scale(value).backward()
        scaler.step(optimiser)
        scaler.update()
        skipped += int(amp and scaler.get_scale() < scale_before)
    return float(value.detach()), skipped


def training(device: str, steps: int) -> bool:
    print(f"\n## 2. Training: 3D U-Net, {steps} AdamW steps on a generated lesion batch, softmax\n")
    print("| loss | final loss float32 | final loss fp16 AMP | steps skipped by GradScaler |")
    print("|---|---|---|---|")
    ok = True
    for name in L.names():
        f32, _ = train(name, device, steps, amp=False)
        f16, skipped = train(name, device, steps, amp=True)
        ok &= bool(torch.isfinite(torch.tensor(f16))) and skipped <= steps // 10
        print(f"| {name} | {f32:.4f} | {f16:.4f} | {skipped} |")
    return ok


def speed(device: str, reps: int) -> None:
    shape = (2, 1, 96, 96, 96)
    print(f"\n## 3. Speed: 3D U-Net (16-128) + DiceFocalLoss, forward + backward, batch {shape}\n")
    model = net(device)
    loss_fn = L.DiceFocalLoss(activation="softmax").to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device)
    y = (torch.rand((shape[0], *shape[2:]), generator=g) < 0.02).long().to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {"float32": [], "float16": [], "bfloat16": []}
    for rep in range(reps + 2):  # interleaved; the first two rounds are warm-up
        for tag in times:
            dtype = getattr(torch, tag)
            sync()
            start = time.perf_counter()
            with torch.autocast(device, dtype=dtype, enabled=tag != "float32"):
                value = loss_fn(model(x), y)
            value.backward()
            sync()
            if rep >= 2:
                times[tag].append(1000 * (time.perf_counter() - start))
            model.zero_grad(set_to_none=True)
    base = statistics.median(times["float32"])
    print("| precision | median ms | speed-up vs float32 |")
    print("|---|---|---|")
    for tag, ts in times.items():
        print(f"| {tag} | {statistics.median(ts):.1f} | {base / statistics.median(ts):.2f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=60, help="training steps per loss and precision")
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions for the speed part")
    parser.add_argument("--parts", nargs="+", default=["numerics", "training", "speed"])
    args = parser.parse_args(argv)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"# medfocal AMP check on {name}, torch {torch.__version__}\n")
    ok = True
    if "numerics" in args.parts:
        ok &= numerics(args.device)
        if args.device != "cpu":
            ok &= agreement(args.device)
    if "training" in args.parts:
        ok &= training(args.device, args.steps)
    if "speed" in args.parts:
        speed(args.device, args.reps)
    print(f"\nall finite, trainable under AMP and equal to the CPU: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
