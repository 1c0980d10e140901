"""Issue 21 evidence: the focal-family losses against Dice + CE inside the planned segmentation recipe.

For each dataset, ``medfocal plan --network dynunet`` writes one recipe (network, patches, sampling,
augmentation, epochs, optimiser: nothing tuned by hand; the DynUNet with deep supervision, the CPU default
when these records were made); every arm is that plan with only the loss swapped (an overlay YAML
inside the plan's deep-supervision wrapper), trained with ``medfocal fit`` for the same epochs and seeds:

- ``dice_ce``: Dice + CE (``DiceFocalLoss`` with gamma 0, what the plan picks for DRIVE);
- ``dice_focal``: Dice + focal, gamma 2 (what the plan picks for BraTS, classes under 1% of the voxels);
- ``jaccard_focal``: Jaccard + focal, gamma 2;
- ``unified_focal``: unified focal (Yeung et al.; weight 0.5, delta 0.6, gamma 0.5);
- ``automated_focal``: automated focal (Weber et al.; gamma adapted during training, voxel-wise only);
- ``planned_unet`` (not a loss arm): the CPU plan as ``medfocal plan`` writes it today (``--network
  unet``: MONAI's residual UNet, Dice + CE, the epochs its cost model gives for the same budget);
- ``baseline_on_planned_unet`` (not a loss arm): ``configs/baselines/unet_dicece.yaml`` on that plan (its
  epochs; on BraTS the same network, so the same training time: only the loss and augmentation differ);
- ``baseline_unet_dicece`` (not a loss arm): ``configs/baselines/unet_dicece.yaml`` on the same plan, a
  plain MONAI ``UNet`` + ``DiceCELoss`` with MONAI's tutorial augmentation, the same epochs.

Datasets: ``drive`` (``plan --budget 10``; fold 0 of 4 on the 20 training images; scored by the
validation pass of ``fit`` at the best checkpoint: Dice, sensitivity, specificity, HD95) and ``brats``
(``plan`` default budget; trained on ``train/``, scored on the 2 ``validation/`` cases by ``medfocal
infer`` + ``medfocal evaluate --regions WT=1,2,3,4 TC=1,3,4 ET=4``: Dice, HD95 and lesion-wise
sensitivity / false positives by lesion size). One thread per run, ``--jobs`` at once; each finished run
appends one JSON line to ``--out`` (a killed bench resumes with ``--resume``); ``--report`` prints the
tables (mean ± std over seeds).

    python bench/segmentation_losses.py --sets drive --seeds 0 1 2 --jobs 2 --resume
    python bench/segmentation_losses.py --report
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from plan_runs import append_record, mean_std, medfocal  # noqa: E402

DATA = Path(os.environ.get("MEDFOCAL_DATA", HERE.parent.parent / "shared" / "data"))
FOLD0 = ["--data.init_args.fold=0", "--data.init_args.num_folds=4"]
SETS = {
    "drive": {"path": "drive/training", "budget": "10", "fit": FOLD0},
    "brats": {"path": "brats2013", "budget": "cpu", "fit": []},
}
REGION = {"activation": "softmax", "include_background": False}
LOSSES = {
    "dice_ce": ("medfocal.losses.DiceFocalLoss", {**REGION, "gamma": 0.0}),
    "dice_focal": ("medfocal.losses.DiceFocalLoss", {**REGION, "gamma": 2.0}),
    "jaccard_focal": ("medfocal.losses.JaccardFocalLoss", {**REGION, "gamma": 2.0}),
    "unified_focal": (
        "medfocal.losses.UnifiedFocalLoss",
        {"activation": "softmax", "weight": 0.5, "delta": 0.6, "gamma": 0.5},
    ),
    "automated_focal": (
        "medfocal.losses.AutomatedFocalLoss",
        {"activation": "softmax", "include_background": True, "alpha": None},
    ),
}
# Every argument an arm shares with the plan's loss is given: LightningCLI keeps the earlier config's
# init_args of the same name when the class changes (an unset gamma of UnifiedFocalLoss became the plan's
# 0.0, AutomatedFocalLoss got include_background false and predicted vessel everywhere).
BASELINE = "baseline_unet_dicece"  # not a loss arm: configs/baselines/unet_dicece.yaml on top of the plan
# not a loss arm: the CPU plan as `medfocal plan` now writes it (MONAI's residual UNet, Dice + CE, its own
# epochs for the same budget), to compare the new default with the DynUNet recipe and the baseline
PLANNED_UNET = "planned_unet"
# not a loss arm: the baseline on that plan (same network on BraTS, same epochs: the same training time)
BASELINE_ON_UNET_PLAN = "baseline_on_planned_unet"
BASELINE_YAML = HERE.parent / "configs" / "baselines" / "unet_dicece.yaml"
# Recipe ablations (Dice + CE, one change to the plan each): which part of the planned recipe costs it
# against the baseline at the same epochs: deep supervision, or nnU-Net's heavier augmentation.
ABLATIONS = {
    "dice_ce_no_deep_supervision": "model:\n  init_args:\n    model:\n      init_args:\n"
    "        deep_supervision: false\n",
    "dice_ce_monai_augmentation": None,  # the baseline's data.init_args.augmentation, read from its YAML
}
BRATS_REGIONS = ["WT=1,2,3,4", "TC=1,3,4", "ET=4"]
SIZE_BINS = ["100", "1000"]  # mm³: < 0.1 ml, 0.1-1 ml, >= 1 ml
BRATS_EVALUATE = ["--labels", "1", "2", "3", "4", "--regions", *BRATS_REGIONS, "--size-bins", *SIZE_BINS]


def overlay(arm: str, wrapped: bool = True) -> str:
    """The loss of ``arm`` as a YAML overlay: inside the plan's deep-supervision wrapper (the DynUNet
    recipe), or alone (``wrapped=False``: the UNet recipe, no deep supervision)."""
    class_path, init_args = LOSSES[arm]
    inner = json.dumps({"class_path": class_path, "init_args": init_args})
    head = f"# {arm}: only the loss differs from the plan\nmodel:\n  init_args:\n"
    if not wrapped:
        return head + f"    loss: {inner}\n"
    return head + (
        f"    loss:\n      class_path: medfocal.nets.DeepSupervisionLoss\n      init_args:\n"
        f"        loss: {inner}\n"
    )


def recipe_of(record: dict[str, Any]) -> str:
    """``"unet"`` (the UNet plan: its own arms and loss arms run with ``--recipe unet``) or ``"dynunet"``."""
    return job_recipe(record["arm"], record.get("recipe") or "dynunet")


def job_recipe(arm: str, recipe: str) -> str:
    """The recipe a run of ``arm`` under ``--recipe recipe`` belongs to: the UNet plan's own arms always
    ``"unet"``, a loss arm the one asked for, the others ``"dynunet"``."""
    if arm in (PLANNED_UNET, BASELINE_ON_UNET_PLAN):
        return "unet"
    return recipe if arm in LOSSES else "dynunet"


def ablation_overlay(arm: str) -> str:
    """The one recipe change of an ablation arm, as a YAML overlay given after the Dice + CE loss."""
    text = ABLATIONS[arm]
    if text is None:
        import yaml

        augmentation = yaml.safe_load(BASELINE_YAML.read_text())["data"]["init_args"]["augmentation"]
        text = yaml.safe_dump({"data": {"init_args": {"augmentation": augmentation}}}, sort_keys=False)
    return f"# {arm}: Dice + CE (loss.yaml) and this one change to the plan\n{text}"


def val_row_at_best(run_dir: Path, best: Path) -> tuple[dict[str, float], int]:
    """The validation metrics logged at the best checkpoint's epoch, and the number of epochs run."""
    rows: list[dict[str, str]] = []
    for path in sorted(run_dir.glob("runs/plan/**/metrics.csv")):
        with path.open() as f:
            rows += [r for r in csv.DictReader(f) if r.get("val/dice")]
    epoch = int(best.stem.split("epoch")[-1])
    row = next(r for r in rows if int(float(r["epoch"])) == epoch)
    epochs = max(int(float(r["epoch"])) for r in rows) + 1
    return {k: float(v) for k, v in row.items() if k.startswith("val/") and v != ""}, epochs


def score_brats(run_dir: Path, best: Path, log: Path) -> dict[str, float]:
    """``medfocal infer`` on the validation cases of ``splits.json``, then ``medfocal evaluate``."""
    splits = json.loads(next(run_dir.glob("runs/plan/**/splits.json")).read_text())
    table = run_dir / "val_cases.csv"
    gt = run_dir / "gt"
    gt.mkdir(exist_ok=True)
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "image"])
        for r in splits["val"]:
            w.writerow([r["case"], ";".join(r["image"]) if isinstance(r["image"], list) else r["image"]])
            link = gt / f"{r['case']}.nii.gz"  # evaluate pairs files by name: links, no copies
            if not link.exists():
                link.symlink_to(r["label"])
    pred = run_dir / "pred"
    medfocal("infer", "-c", str(best), "-i", str(table), "-o", str(pred), "--overlap", "0.25",
             "--no-progress", "--threads", "1", "--num-workers", "0", cwd=run_dir, log=log)  # fmt: skip
    out = run_dir / "eval" / "evaluation.csv"
    medfocal(
        "evaluate", "-p", str(pred), "-g", str(gt), *BRATS_EVALUATE, "-o", str(out), "--no-plot", "--cleanup",
        cwd=run_dir, log=log,
    )  # fmt: skip
    record: dict[str, float] = cleanup_record(out)
    with out.with_name("evaluation_summary.csv").open() as f:
        for r in csv.DictReader(f):
            if r["metric"] in ("dice", "hd95_mm", "nsd"):
                record[f"{r['label']}/{r['metric']}"] = float(r["mean"])
    with out.with_name("evaluation_lesions.csv").open() as f:
        for r in csv.DictReader(f):
            for key in ("lesions", "sensitivity", "fp_per_case"):
                record[f"{r['label']}/lesion_{key}_{r['size']}"] = float(r[key])
    return record


def cleanup_record(evaluation_csv: Path) -> dict[str, float]:
    """``<label>/<metric>_keep_largest`` from ``evaluate --cleanup``'s table (mean over the cases)."""
    path = evaluation_csv.with_name("evaluation_cleanup.csv")
    with path.open() as f:
        return {
            f"{r['label']}/{r['metric']}_keep_largest": float(r["keep_largest"]) for r in csv.DictReader(f)
        }


def add_cleanup(out: Path, work: Path) -> None:
    """Score the BraTS records of ``out`` that lack the clean-up columns (``evaluate --cleanup`` on their
    saved predictions) and rewrite ``out`` atomically."""
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    for r in records:
        if r["set"] != "brats" or "WT/dice_keep_largest" in r:
            continue
        run_dir = work / "brats" / f"{r['arm']}_seed{r['seed']}"
        csv_path = run_dir / "eval_cleanup" / "evaluation.csv"
        medfocal("evaluate", "-p", str(run_dir / "pred"), "-g", str(run_dir / "gt"), *BRATS_EVALUATE, "-o",
                 str(csv_path), "--no-plot", "--cleanup", cwd=run_dir, log=run_dir / "log.txt")  # fmt: skip
        r.update(cleanup_record(csv_path))
        print(f"clean-up scored: {r['arm']} seed {r['seed']}", flush=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, out)


def fit_finished(run_dir: Path, log: Path) -> bool:
    """A fit of this run already ended (a resumed benchmark scores it instead of training again)."""
    if not log.exists():
        return False
    text = log.read_text()
    last_fit = text.rfind("$ medfocal fit")
    stopped = last_fit >= 0 and "`Trainer.fit` stopped" in text[last_fit:]
    return stopped and any(run_dir.glob("runs/plan/**/best*.ckpt"))


def fit_minutes(run_dir: Path) -> float:
    """Wall minutes of the fit: its log folder's creation to its last checkpoint."""
    version = sorted(run_dir.glob("runs/plan/lightning_logs/version_*"))[-1]
    end = max(p.stat().st_mtime for p in version.glob("checkpoints/*.ckpt"))
    return (end - (version / "hparams.yaml").stat().st_mtime) / 60


def arm_configs(arm: str, root: Path, run_dir: Path, recipe: str = "dynunet") -> list[str]:
    """The ``--config`` arguments of ``arm``: ``root``'s plan and the arm's overlays (written to
    ``run_dir``); the planned-UNet arm is ``root/plan_unet.yaml`` as ``plan --network unet`` wrote it,
    and with ``recipe="unet"`` a loss arm is that plan with its loss alone swapped."""
    if recipe == "unet" and arm in LOSSES:
        (run_dir / "loss.yaml").write_text(overlay(arm, wrapped=False))
        return ["--config", str(root / "plan_unet.yaml"), "--config", "loss.yaml"]
    if recipe == "unet" and arm not in (PLANNED_UNET, BASELINE_ON_UNET_PLAN):
        raise ValueError(f"{arm}: not an arm of the UNet recipe")
    if arm == PLANNED_UNET:
        return ["--config", str(root / "plan_unet.yaml")]
    if arm == BASELINE_ON_UNET_PLAN:
        return ["--config", str(root / "plan_unet.yaml"), "--config", "baselines/unet_dicece"]
    if arm == BASELINE:  # MONAI UNet + DiceCELoss + MONAI-tutorial augmentation on the same plan
        overlays = ["--config", "baselines/unet_dicece"]
    elif arm in ABLATIONS:
        (run_dir / "loss.yaml").write_text(overlay("dice_ce"))
        (run_dir / "ablation.yaml").write_text(ablation_overlay(arm))
        overlays = ["--config", "loss.yaml", "--config", "ablation.yaml"]
    else:
        (run_dir / "loss.yaml").write_text(overlay(arm))
        overlays = ["--config", "loss.yaml"]
    return ["--config", str(root / "plan.yaml"), *overlays]


def run_one(
    name: str, arm: str, seed: int, work: Path, extra: tuple[str, ...] = (), recipe: str = "dynunet"
) -> dict[str, Any]:
    root = work / name
    loss_arm_of_unet = recipe == "unet" and arm in LOSSES
    run_dir = root / (f"{arm}_seed{seed}" + ("_unet" if loss_arm_of_unet else ""))
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "log.txt"
    common = [*arm_configs(arm, root, run_dir, recipe), f"--seed_everything={seed}",
              "--trainer.enable_progress_bar=false", *SETS[name]["fit"], *extra]  # fmt: skip
    if not fit_finished(run_dir, log):
        medfocal("fit", *common, cwd=run_dir, log=log)
    fit_min = fit_minutes(run_dir)
    best = sorted(run_dir.glob("runs/plan/**/checkpoints/best*.ckpt"))
    if len(best) != 1:
        raise RuntimeError(f"{run_dir}: expected one best*.ckpt, found {[str(b) for b in best]}")
    val, epochs = val_row_at_best(run_dir, best[0])
    record: dict[str, Any] = {"set": name, "arm": arm, "seed": seed, "epochs": epochs,
                              **({"recipe": "unet"} if loss_arm_of_unet else {}),
                              "best_epoch": int(best[0].stem.split("epoch")[-1]) + 1,
                              "fit_min": round(fit_min, 2), **val}  # fmt: skip
    if name == "brats":
        record.update(score_brats(run_dir, best[0].resolve(), log))
    return record


def bench(args: argparse.Namespace) -> None:
    work = args.work.resolve()
    for name in args.sets:
        # plan.yaml: the recipe of the loss arms' records (the DynUNet, the CPU default when they were
        # made); plan_unet.yaml: today's CPU default, for the planned_unet arm
        for file, network in (("plan.yaml", "dynunet"), ("plan_unet.yaml", "unet")):
            plan = work / name / file
            if not plan.exists():
                plan.parent.mkdir(parents=True, exist_ok=True)
                source, budget = str(DATA / SETS[name]["path"]), SETS[name]["budget"]
                medfocal("plan", source, "--budget", budget, "--network", network, "-o", str(plan),
                         cwd=plan.parent, log=plan.with_suffix(".log"))  # fmt: skip
    done = (
        {
            (r["set"], r["arm"], r["seed"], recipe_of(r))
            for r in map(json.loads, args.out.read_text().splitlines())
        }
        if args.resume and args.out.exists()
        else set()
    )
    arms = {"drive": args.arms, "brats": args.brats_arms}
    seeds = {"drive": args.seeds, "brats": args.brats_seeds}
    jobs = [
        (n, a, s)
        for s in sorted(set(args.seeds) | set(args.brats_seeds))
        for n in args.sets
        for a in arms[n]
        if s in seeds[n] and (n, a, s, job_recipe(a, args.recipe)) not in done
    ]
    print(f"{len(jobs)} runs to do, {args.jobs} at a time; records -> {args.out}", flush=True)

    def one(job: tuple[str, str, int]) -> None:
        try:
            record = run_one(*job, work=work, extra=tuple(args.extra), recipe=args.recipe)
        except Exception as exc:  # one failed run is reported, the others go on
            print(f"FAILED {job}: {exc}", flush=True)
            return
        append_record(args.out, record)
        print(f"done {job}: val Dice {record['val/dice']:.3f} ({record['fit_min']:.1f} min)", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, jobs))


def _table(
    records: list[dict[str, Any]], name: str, columns: list[tuple[str, str, int]], recipe: str = "dynunet"
) -> list[str]:
    """One row per arm of ``recipe`` on ``name`` (mean ± std over seeds); in the UNet recipe the
    planned_unet arm is its Dice + CE row."""
    head = "| loss | seeds | epochs | fit min | " + " | ".join(c[0] for c in columns) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for arm in [PLANNED_UNET, *LOSSES, *ABLATIONS, BASELINE_ON_UNET_PLAN, BASELINE]:
        rs = [r for r in records if r["set"] == name and r["arm"] == arm and recipe_of(r) == recipe]
        if rs:
            cells = [mean_std([r.get(key, float("nan")) for r in rs], d) for _, key, d in columns]
            seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
            minutes = mean_std([r["fit_min"] for r in rs], 1)
            label = f"{arm} (Dice + CE)" if arm == PLANNED_UNET else arm
            lines.append(f"| {label} | {seeds} | {rs[0]['epochs']} | {minutes} | " + " | ".join(cells) + " |")
    return lines


def report(out: Path) -> str:
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    drive = [
        ("val Dice", "val/dice", 3),
        ("sensitivity", "val/sensitivity", 3),
        ("specificity", "val/specificity", 3),
        ("HD95 px", "val/hd95", 1),
    ]
    brats = [(f"{r} Dice", f"{r}/dice", 3) for r in ("WT", "TC", "ET")]
    brats += [(f"{r} HD95 mm", f"{r}/hd95_mm", 1) for r in ("WT", "TC", "ET")]
    cleaned = [(f"{r} Dice", f"{r}/dice_keep_largest", 3) for r in ("WT", "TC", "ET")]
    cleaned += [(f"{r} HD95 mm", f"{r}/hd95_mm_keep_largest", 1) for r in ("WT", "TC", "ET")]
    names = ("necrosis", "oedema", "non-enh.", "enh.")
    brats += [(f"{n} ({k})", f"{k}/dice", 3) for k, n in enumerate(names, start=1)]
    lesions = []
    for region in ("ET", "TC", "WT"):
        for key, text in (("<100", "< 0.1 ml"), ("100-1000", "0.1-1 ml"), (">=1000", ">= 1 ml")):
            lesions.append((f"{region} {text} sens.", f"{region}/lesion_sensitivity_{key}", 2))
        lesions.append((f"{region} FP lesions/case", f"{region}/lesion_fp_per_case_all", 1))
    text = ["### DRIVE, fold 0 of 4 (5 validation images), `plan --budget 10`", ""]
    text += _table(records, "drive", drive)
    text += ["", "### BraTS 2013, 2 validation cases, `plan` (30-minute CPU budget)", ""]
    text += _table(records, "brats", brats)
    text += [
        "",
        "The same predictions after `infer --keep-largest` (largest component of each label; chosen and "
        "scored on the same 2 validation cases, so optimistic; `evaluate --cleanup`):",
        "",
    ]
    text += _table(records, "brats", cleaned)
    text += ["", "Lesion-wise (BraTS validation cases; a lesion is a connected component of the region):", ""]
    text += _table(records, "brats", lesions)
    if any(recipe_of(r) == "unet" and r["set"] == "brats" for r in records):
        text += [
            "",
            "### BraTS 2013 inside the UNet plan (`plan` now, 30-minute CPU budget: MONAI's UNet)",
            "",
        ]
        text += _table(records, "brats", brats, "unet")
        text += ["", "After `infer --keep-largest` (chosen and scored on the same 2 cases: optimistic):", ""]
        text += _table(records, "brats", cleaned, "unet")
        text += ["", "Lesion-wise:", ""]
        text += _table(records, "brats", lesions, "unet")
    return "\n".join(text) + "\n"


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument(
        "--arms",
        nargs="+",
        default=list(LOSSES),
        choices=[*LOSSES, *ABLATIONS, PLANNED_UNET, BASELINE_ON_UNET_PLAN, BASELINE],
        help="DRIVE arms",
    )
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="DRIVE seeds")
    parser.add_argument(
        "--brats-arms",
        nargs="+",
        default=["dice_ce", "dice_focal", BASELINE],
        choices=[*LOSSES, *ABLATIONS, PLANNED_UNET, BASELINE_ON_UNET_PLAN, BASELINE],
    )
    parser.add_argument("--brats-seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--recipe",
        choices=["dynunet", "unet"],
        default="dynunet",
        help="loss arms inside plan.yaml (the DynUNet recipe of the first records) or plan_unet.yaml",
    )
    parser.add_argument("--extra", action="append", default=[], help="one more fit option (smoke runs)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/seglosses"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "segmentation_losses_runs.jsonl")
    parser.add_argument("--resume", action="store_true", help="skip runs already recorded in --out")
    parser.add_argument("--report", action="store_true", help="print the tables of --out and exit")
    parser.add_argument(
        "--add-cleanup",
        action="store_true",
        help="score the clean-up of BraTS records that lack it, and exit",
    )
    args = parser.parse_args()
    if args.add_cleanup:
        add_cleanup(args.out, args.work.resolve())
        return
    if args.report:
        print(report(args.out))
        return
    bench(args)
    print(report(args.out))


if __name__ == "__main__":
    main()
