"""Issue 20 evidence: `medfocal plan` + `fit` + `test` on every shared MedMNIST file, against plain CE.

For each MedMNIST file and seed, two arms trained for the same epochs (the plan's, from one budget):

- **planned**: the YAML written by ``medfocal plan FILE --budget MINUTES`` unchanged (its network, loss,
  augmentation, AdamW + cosine, checkpoint on ``val/auroc``, temperature scaling and, binary, the
  operating point chosen on validation);
- **ce**: the same plan with ``ce.yaml`` on top: plain cross-entropy (``FocalLoss(gamma=0)``, no alpha),
  Adam 1e-3 without weight decay or schedule, no augmentation, no post-hoc callbacks (argmax, raw
  probabilities): the baseline a user would try first (same network, same epochs).

Everything runs through the command line (``plan``, ``fit``, ``test``), one thread per run, ``--jobs``
runs at once. Each finished run appends one JSON line to ``--out`` (durable: a killed bench resumes
with ``--resume``); ``--report`` renders the markdown table (mean ± std over seeds) from that file.
The test split is evaluated once per run, after training; nothing is chosen on it.

    python bench/classification_plan.py --budget 5 --seeds 0 1 2 --jobs 2 --resume
    python bench/classification_plan.py --report
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from accuracy_medmnist import PUBLISHED, PUBLISHED_SOURCE  # noqa: E402
from plan_runs import append_record, done_keys, mean_std, medfocal  # noqa: E402

DATA = Path(os.environ.get("MEDFOCAL_DATA", HERE.parent.parent / "shared" / "data")) / "medmnist"
SETS = {
    "breastmnist": "BreastMNIST.npz",
    "retinamnist": "retinamnist.npz",
    "adrenalmnist3d": "adrenalmnist3d.npz",
}
ARMS = ("planned", "ce")
CE_YAML = """\
# plain cross-entropy baseline on top of a plan: same network and epochs, nothing else of the recipe
trainer:
  callbacks: []
model:
  init_args:
    loss:
      class_path: medfocal.losses.FocalLoss
      init_args: {activation: softmax, gamma: 0.0, alpha: null}
    optimizer:
      class_path: torch.optim.Adam
      init_args: {lr: 0.001}
    lr_scheduler: null
data:
  init_args:
    augmentation: {flip_prob: 0.0, rot90_prob: 0.0, affine_prob: 0.0, noise_prob: 0.0,
                   contrast_prob: 0.0, histogram_shift_prob: 0.0, intensity_prob: 0.0, colour_prob: 0.0}
"""


def read_metrics(root: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(root.glob("runs/plan/**/metrics.csv")):
        with path.open() as f:
            rows += list(csv.DictReader(f))
    return rows


def minority_index(npz: Path) -> int:
    labels = np.load(npz)["train_labels"].reshape(-1)
    return int(np.argmin(np.bincount(labels)))


def run_one(
    name: str, arm: str, seed: int, work: Path, budget: float, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    npz = DATA / SETS[name]
    root = work / name
    plan = root / "plan.yaml"
    run_dir = root / f"{arm}_seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "log.txt"
    configs = ["--config", str(plan)] + (["--config", str(work / "ce.yaml")] if arm == "ce" else [])
    common = [*configs, f"--seed_everything={seed}", "--trainer.enable_progress_bar=false", *extra]
    start = time.perf_counter()
    medfocal("fit", *common, cwd=run_dir, log=log)
    fit_s = time.perf_counter() - start
    best = sorted(run_dir.glob("runs/plan/**/checkpoints/best-*.ckpt"))
    if len(best) != 1:
        raise RuntimeError(f"{run_dir}: expected one best-*.ckpt, found {[str(b) for b in best]}")
    fit_rows = read_metrics(run_dir)
    medfocal("test", *common, f"--ckpt_path={best[0].resolve()}", cwd=run_dir, log=log)
    rows = read_metrics(run_dir)
    test = next(r for r in rows if r.get("test/accuracy"))
    val = [r for r in fit_rows if r.get("val/auroc")]
    best_epoch = int(best[0].stem.split("epoch")[-1])
    val_at_best = next((r for r in val if int(float(r["epoch"])) == best_epoch), {})
    epochs = max(int(float(r["epoch"])) for r in val) + 1
    minority = minority_index(npz)
    keys = sorted(k for k in test if k.startswith("test/") and test[k] != "")
    record: dict[str, Any] = {
        "set": name, "arm": arm, "seed": seed, "budget_min": budget, "epochs": epochs,
        "best_epoch": best_epoch, "fit_min": round(fit_s / 60, 2),
        "val_auroc": float(val_at_best.get("val/auroc", "nan")), "minority": minority,
        **{k: float(test[k]) for k in keys},
    }  # fmt: skip
    # the minority class's recall at the deployed decision (operating point where one was chosen)
    record["rare_recall_argmax"] = record[f"test/recall_{minority}"]
    if "test/op/sensitivity" in record:
        record["rare_recall_op"] = record["test/op/sensitivity" if minority == 1 else "test/op/specificity"]
    return record


def bench(args: argparse.Namespace) -> None:
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "ce.yaml").write_text(CE_YAML)
    for name in args.sets:
        plan = work / name / "plan.yaml"
        if not plan.exists():
            plan.parent.mkdir(parents=True, exist_ok=True)
            medfocal("plan", str(DATA / SETS[name]), "--budget", str(args.budget), "-o", str(plan),
                     cwd=plan.parent, log=plan.parent / "plan_log.txt")  # fmt: skip
    done = done_keys(args.out) if args.resume else set()
    jobs = [
        (name, arm, seed)
        for seed in args.seeds
        for name in args.sets
        for arm in ARMS
        if (name, arm, seed) not in done
    ]
    print(f"{len(jobs)} runs to do, {args.jobs} at a time; records -> {args.out}", flush=True)

    def one(job: tuple[str, str, int]) -> None:
        try:
            record = run_one(*job, work=work, budget=args.budget, extra=tuple(args.extra))
        except Exception as exc:  # one failed run is reported, the others go on
            print(f"FAILED {job}: {exc}", flush=True)
            return
        append_record(args.out, record)
        print(f"done {job}: test acc {record['test/accuracy']:.3f} auc {record['test/auroc']:.3f} "
              f"({record['fit_min']:.1f} min)", flush=True)  # fmt: skip

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, jobs))


def report(out: Path) -> str:
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    head = (
        "| set | arm | seeds | epochs | fit min | val AUC | test ACC | test AUC | test bal. ACC | "
        "ACC at op. point | bal. ACC at op. point | rare-class recall (deployed) | ECE | kappa |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in SETS:
        for arm in ARMS:
            rs = [r for r in records if r["set"] == name and r["arm"] == arm]
            if not rs:
                continue

            def col(key: str, rs: list[dict[str, Any]] = rs) -> str:
                return mean_std([r.get(key, float("nan")) for r in rs])

            rare = [r.get("rare_recall_op", r["rare_recall_argmax"]) for r in rs]
            lines.append(
                f"| {name} | {arm} | {len(rs)} | {rs[0]['epochs']} | {col('fit_min')} | {col('val_auroc')} | "
                f"{col('test/accuracy')} | {col('test/auroc')} | {col('test/balanced_accuracy')} | "
                f"{col('test/op/accuracy')} | {col('test/op/balanced_accuracy')} | {mean_std(rare)} | "
                f"{col('test/ece')} | {col('test/kappa_quadratic')} |"
            )
        pub = PUBLISHED.get(name)
        if pub:
            lines.append(
                f"| {name} | published {pub['model']} | | 100 | | | {pub['acc']:.3f} | {pub['auc']:.3f} "
                "| | | | | | |"
            )
    return "\n".join(lines) + f"\n\nPublished: {PUBLISHED_SOURCE}.\n"


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=5.0, help="plan budget, minutes (same for both arms)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/clsbench"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "classification_plan_runs.jsonl")
    parser.add_argument("--resume", action="store_true", help="skip runs already recorded in --out")
    parser.add_argument("--report", action="store_true", help="print the table of --out and exit")
    parser.add_argument(
        "--extra", action="append", default=[], help="one more fit/test option, repeatable (--extra=--a=1)"
    )
    args = parser.parse_args()
    if args.report:
        print(report(args.out))
        return
    bench(args)
    print(report(args.out))


if __name__ == "__main__":
    main()
