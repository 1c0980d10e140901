"""Issue 21 evidence: the DRIVE folds trained from `medfocal plan`, validation Dice against training minutes.

Reads run folders made by ``medfocal fit`` (each with ``runs/plan/lightning_logs/version_*/metrics.csv``
and a ``log.txt``), named ``u<k>`` (the planned config, fold k, as ``plan`` writes it today: MONAI's
residual UNet on a CPU budget), ``f<k>`` (the earlier planned config, ``plan --network dynunet``) and
``base<k>`` (that plan with ``--config baselines/unet_dicece``), prints a markdown table (best and last
validation Dice and sensitivity per fold, wall minutes) and draws the curve of validation Dice against
wall-clock training minutes (epoch x minutes per epoch of that run, since the runs had different loads).

    python bench/drive_cv_report.py /tmp/drive --png bench/results/drive_cv_curve.png
    python bench/drive_cv_report.py /tmp/drive --score     # + infer and evaluate --roi on each fold

``--score`` scores each finished run as a user would, through ``medfocal infer`` and ``medfocal evaluate``:
the last checkpoint (not selected on the fold), on the validation images that ``splits.json`` names,
with and without mirroring TTA, Dice and sensitivity inside DRIVE's field of view (``evaluate --roi``,
the protocol of the published figures) and over the whole image, and AUROC of the vessel probability
inside the field of view (scikit-learn, from ``infer --save-probabilities npz``).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_runs import medfocal

# run-folder prefix -> arm, in table order
ARMS = {"u": "planned UNet", "f": "planned DynUNet", "base": "baseline"}


def arm_of(name: str) -> str:
    """The arm of a run folder: its name's letters (``u2`` -> ``planned UNet``)."""
    return ARMS[re.sub(r"\d", "", name)]


def read_run(folder: Path) -> dict | None:
    metrics = sorted(folder.glob("runs/plan/lightning_logs/version_*/metrics.csv"))
    if not metrics:
        return None
    rows = [r for r in csv.DictReader(metrics[-1].open()) if r.get("val/dice")]
    if not rows:
        return None
    version = metrics[-1].parent
    start = (version / "hparams.yaml").stat().st_mtime
    end = max(p.stat().st_mtime for p in version.glob("checkpoints/*.ckpt"))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    logs = [folder / name for name in ("log.txt", "fit.log") if (folder / name).exists()]
    done = any("max_epochs=" in log.read_text() for log in logs)
    total = epochs[-1]
    minutes = (end - start) / 60
    return {
        "name": folder.name,
        "fold": int(re.sub(r"\D", "", folder.name)),
        "arm": arm_of(folder.name),
        "epochs": np.asarray(epochs),
        "minutes": np.asarray(epochs) * minutes / total,
        "dice": np.asarray([float(r["val/dice"]) for r in rows]),
        "sens": np.asarray([float(r.get("val/sensitivity") or "nan") for r in rows]),
        "wall_min": minutes,
        "finished": done,
    }


def table(runs: list[dict]) -> str:
    lines = [
        "| arm | fold | epochs | wall min | best val Dice (epoch) | sensitivity there | last val Dice |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS.values():
        mine = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["fold"])
        for r in mine:
            i = int(np.argmax(r["dice"]))
            lines.append(
                f"| {arm} | {r['fold']} | {r['epochs'][-1]} | {r['wall_min']:.1f} | "
                f"{r['dice'][i]:.3f} ({r['epochs'][i]}) | {r['sens'][i]:.3f} | {r['dice'][-1]:.3f} |"
            )
        if len(mine) > 1:
            best = np.asarray([r["dice"].max() for r in mine])
            last = np.asarray([r["dice"][-1] for r in mine])
            lines.append(
                f"| **{arm}, mean of {len(mine)} folds** | | | | "
                f"**{best.mean():.3f} ± {best.std(ddof=1):.3f}** | | "
                f"{last.mean():.3f} ± {last.std(ddof=1):.3f} |"
            )
    return "\n".join(lines)


def score_run(folder: Path, tta: bool) -> dict[str, float]:
    """Infer the fold's validation images with ``last.ckpt`` and score them (see the module docstring)."""
    import json

    from sklearn.metrics import roc_auc_score

    from medfocal.data.autolayout import find_layout

    version = sorted(folder.glob("runs/plan/lightning_logs/version_*"))[-1]
    val = json.loads((version / "splits.json").read_text())["val"]
    data = Path(val[0]["image"]).parents[1]  # drive/training
    fovs = {r["case"]: r["fov"] for r in find_layout(data).records()}
    work = folder / ("score_tta" if tta else "score")
    for sub in ("gt", "roi"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    table = work / "val_cases.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image"])
        for r in val:
            w.writerow([r["image"]])
            name = Path(r["image"]).stem + ".png"  # infer names a mask after its image; links, no copies
            for sub, target in (("gt", r["label"]), ("roi", fovs[r["case"]])):
                link = work / sub / name
                if not link.exists():
                    link.symlink_to(target)
    log = work / "score.log"
    pred = work / "pred"
    medfocal(
        "infer", "-c", str(version / "checkpoints" / "last.ckpt"), "-i", str(table), "-o", str(pred),
        "--save-probabilities", "npz", "--no-progress", *(["--tta"] if tta else []), cwd=folder, log=log,
    )  # fmt: skip
    out: dict[str, float] = {}
    for where, extra in (("fov", ["--roi", str(work / "roi")]), ("image", [])):
        csv_path = work / f"evaluation_{where}.csv"
        medfocal("evaluate", "-p", str(pred), "-g", str(work / "gt"), "--labels", "1", "-o", str(csv_path),
                 "--no-plot", *extra, cwd=folder, log=log)  # fmt: skip
        rows = list(csv.DictReader(csv_path.open()))
        tp = sum(float(r["dice"]) * (float(r["volume_pred_ml"]) + float(r["volume_gt_ml"])) / 2 for r in rows)
        pred_px = sum(float(r["volume_pred_ml"]) for r in rows)
        gt_px = sum(float(r["volume_gt_ml"]) for r in rows)
        out[f"dice_{where}"] = float(np.mean([float(r["dice"]) for r in rows]))
        out[f"dice_pooled_{where}"] = 2 * tp / (pred_px + gt_px)  # all pixels of the fold, as the papers
        out[f"sens_{where}"] = tp / gt_px
    pixels = _fov_pixels(work)
    y, p = np.concatenate([g for _, g in pixels]), np.concatenate([q for q, _ in pixels])
    out["auroc_fov"] = float(roc_auc_score(y, p))
    return out


def _fov_pixels(work: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(vessel probability, label) inside the field of view, per validation image of a scoring folder
    (``score`` or ``score_tta`` of a run: ``gt/``, ``roi/`` and infer's ``pred/``)."""
    from PIL import Image

    out = []
    for link in sorted((work / "gt").iterdir()):
        fov = np.asarray(Image.open(work / "roi" / link.name)) > 0
        gt = np.asarray(Image.open(link)) > 0
        prob = np.load(work / "pred" / f"{link.stem}_probabilities.npz")["probabilities"][1]
        prob = prob.astype(np.float32)
        if prob.shape != gt.shape:
            prob = prob.T  # (W, H) grid of the PIL reader
        out.append((prob[fov], gt[fov]))
    return out


THRESHOLDS = np.round(np.arange(0.30, 0.81, 0.05), 2)


def threshold_table(runs: list[dict], root: Path) -> str:
    """Leave-one-fold-out operating point: for fold k the probability threshold that maximises the pooled
    Dice of the *other* folds' validation images (their own checkpoints' out-of-fold predictions), then
    fold k scored at it; nothing is chosen on the images it scores."""
    lines = [
        "| arm | thresholds chosen (fold 0-3) | Dice in FOV at 0.5 | at the out-of-fold threshold |",
        "|---|---|---|---|",
    ]
    for arm in ARMS.values():
        mine = sorted((r for r in runs if r["arm"] == arm and r["finished"]), key=lambda r: r["fold"])
        if len(mine) < 3:
            continue
        pixels = {r["fold"]: _fov_pixels(root / r["name"] / "score_tta") for r in mine}

        def counts(images: list[tuple[np.ndarray, np.ndarray]], t: float) -> tuple[float, float, float]:
            tp = sum(float(np.sum((p >= t) & g)) for p, g in images)
            return tp, sum(float(np.sum(p >= t)) for p, _ in images), sum(float(g.sum()) for _, g in images)

        def image_dice(images: list[tuple[np.ndarray, np.ndarray]], t: float) -> float:
            return float(
                np.mean([2 * np.sum((p >= t) & g) / max(np.sum(p >= t) + g.sum(), 1) for p, g in images])
            )

        chosen, at_half, at_chosen = [], [], []
        for k, images in pixels.items():
            others = [im for j, ims in pixels.items() if j != k for im in ims]
            pooled = [(lambda c: 2 * c[0] / (c[1] + c[2]))(counts(others, t)) for t in THRESHOLDS]
            t = float(THRESHOLDS[int(np.argmax(pooled))])
            chosen.append(t)
            at_half.append(image_dice(images, 0.5))
            at_chosen.append(image_dice(images, t))
        a, b = np.asarray(at_half), np.asarray(at_chosen)
        lines.append(
            f"| {arm} | {' / '.join(f'{t:.2f}' for t in chosen)} | {a.mean():.3f} ± {a.std(ddof=1):.3f} | "
            f"**{b.mean():.3f} ± {b.std(ddof=1):.3f}** |"
        )
    return "\n".join(lines)


def score_table(runs: list[dict], root: Path) -> str:
    lines = [
        "| arm | fold | TTA | Dice in FOV (mean of images) | pooled | sensitivity | AUROC in FOV | "
        "Dice whole image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by: dict[tuple[str, bool], list[dict[str, float]]] = {}
    order = list(ARMS.values())
    for r in sorted(runs, key=lambda r: (order.index(r["arm"]), r["fold"])):
        if not r["finished"]:
            continue
        for tta in (False, True):
            s = score_run(root / r["name"], tta)
            by.setdefault((r["arm"], tta), []).append(s)
            lines.append(
                f"| {r['arm']} | {r['fold']} | {'flips' if tta else '–'} | {s['dice_fov']:.3f} | "
                f"{s['dice_pooled_fov']:.3f} | {s['sens_fov']:.3f} | {s['auroc_fov']:.4f} | "
                f"{s['dice_image']:.3f} |"
            )
    for (arm, tta), scores in by.items():
        if len(scores) < 2:
            continue
        cell = {k: np.asarray([s[k] for s in scores]) for k in scores[0]}
        ms = {k: f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" for k, v in cell.items()}
        flips = "flips" if tta else "–"
        lines.append(
            f"| **{arm}, mean of {len(scores)} folds** | | {flips} | **{ms['dice_fov']}** | "
            f"{ms['dice_pooled_fov']} | {ms['sens_fov']} | {cell['auroc_fov'].mean():.4f} | "
            f"{ms['dice_image']} |"
        )
    return "\n".join(lines)


def curve(
    runs: list[dict], png: Path, baseline_cost: float | None = None, unet_cost: float | None = None
) -> None:
    """Validation Dice against training time: wall minutes, or with ``baseline_cost`` (the planned
    network's cost per epoch over the baseline's, measured side by side under the same load) the compute
    spent as a share of one planned run, which the machine's load does not change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    planned_epochs = max((r["epochs"][-1] for r in runs if r["arm"] == ARMS["f"]), default=1)
    styles = dict(zip(ARMS.values(), ("-", ":", "--")))
    markers = dict(zip(ARMS.values(), ("o", "s", "^")))
    for r in sorted(runs, key=lambda r: (r["arm"], r["fold"])):
        style = styles[r["arm"]]
        colour = f"C{r['fold']}"
        x = r["minutes"]
        if baseline_cost:
            cost = {ARMS["f"]: 1.0, ARMS["base"]: baseline_cost, ARMS["u"]: unet_cost or float("nan")}
            x = r["epochs"] / planned_epochs / cost[r["arm"]]
        ax.plot(
            x,
            r["dice"],
            style,
            marker=markers[r["arm"]],
            ms=3,
            color=colour,
            label=f"{r['arm']} fold {r['fold']}",
        )
    ax.axhline(0.82, color="k", lw=0.8, ls=":", label="goal 0.82")
    ax.axhline(0.8142, color="grey", lw=0.8, ls="-.", label="published U-Net F1 0.814")
    if baseline_cost:
        share = f"({planned_epochs} DynUNet epochs; baseline epochs / {baseline_cost:g}" + (
            f", UNet epochs / {unet_cost:g})" if unet_cost else ")"
        )
        ax.set_xlabel(f"training compute, share of one planned DynUNet run\n{share}")
    else:
        ax.set_xlabel("wall-clock training minutes (shared 2-core CPU, 1 thread per run, loaded)")
    ax.set_ylabel("validation Dice (vessel, during fit)")
    ax.set_title("DRIVE, 4-fold CV: medfocal plan (UNet / DynUNet) vs MONAI UNet + DiceCE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="folder holding f0..f3 and base0..base3")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--score", action="store_true", help="also infer + evaluate --roi each finished run")
    parser.add_argument(
        "--baseline-cost",
        type=float,
        default=None,
        help="planned cost per epoch / baseline's (side by side): the curve's x-axis becomes compute",
    )
    parser.add_argument(
        "--unet-cost",
        type=float,
        default=None,
        help="planned DynUNet's cost per epoch / the planned UNet's (side by side), with --baseline-cost",
    )
    args = parser.parse_args()
    runs = [r for d in sorted(args.root.iterdir()) if d.is_dir() and (r := read_run(d))]
    print(table(runs))
    if args.score:
        print()
        print(score_table(runs, args.root))
        print()
        print(threshold_table(runs, args.root))
    unfinished = [r["name"] for r in runs if not r["finished"]]
    if unfinished:
        print(f"\nnot finished: {', '.join(unfinished)}")
    if args.png:
        curve(runs, args.png, args.baseline_cost, args.unet_cost)
        print(f"\ncurve: {args.png}")


if __name__ == "__main__":
    main()
