"""Issue 21 evidence: the DRIVE folds trained from `medfocal plan`, validation Dice against training minutes.

Reads run folders made by ``medfocal fit`` (each with ``runs/plan/lightning_logs/version_*/metrics.csv``
and a ``log.txt``), named ``f<k>`` (the planned config, fold k) and ``base<k>`` (the same plan with
``--config baselines/unet_dicece``), prints a markdown table (best and last validation Dice and
sensitivity per fold, wall minutes) and draws the curve of validation Dice against wall-clock training
minutes (epoch x minutes per epoch of that run, since the runs had different loads).

    python bench/drive_cv_report.py /tmp/drive --png bench/results/drive_cv_curve.png
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np


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
    done = "max_epochs=" in (folder / "log.txt").read_text() if (folder / "log.txt").exists() else False
    total = epochs[-1]
    minutes = (end - start) / 60
    return {
        "name": folder.name,
        "fold": int(re.sub(r"\D", "", folder.name)),
        "arm": "baseline" if folder.name.startswith("base") else "planned",
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
    for arm in ("planned", "baseline"):
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


def curve(runs: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in sorted(runs, key=lambda r: (r["arm"], r["fold"])):
        style = "-" if r["arm"] == "planned" else "--"
        colour = f"C{r['fold']}"
        ax.plot(
            r["minutes"],
            r["dice"],
            style,
            marker="o",
            ms=3,
            color=colour,
            label=f"{r['arm']} fold {r['fold']}",
        )
    ax.axhline(0.82, color="k", lw=0.8, ls=":", label="goal 0.82")
    ax.axhline(0.8142, color="grey", lw=0.8, ls="-.", label="published U-Net F1 0.814")
    ax.set_xlabel("wall-clock training minutes (shared 2-core CPU, 1 thread per run, loaded)")
    ax.set_ylabel("validation Dice (vessel, whole image)")
    ax.set_title("DRIVE, 4-fold CV: medfocal plan vs MONAI UNet + DiceCE")
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
    args = parser.parse_args()
    runs = [r for d in sorted(args.root.iterdir()) if d.is_dir() and (r := read_run(d))]
    print(table(runs))
    unfinished = [r["name"] for r in runs if not r["finished"]]
    if unfinished:
        print(f"\nnot finished: {', '.join(unfinished)}")
    if args.png:
        curve(runs, args.png)
        print(f"\ncurve: {args.png}")


if __name__ == "__main__":
    main()
