"""Accuracy benchmark report: tables (mean ± std beside the published figures), figures, accuracy.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from accuracy_brats import BRATS_PUBLISHED, brats_figure, brats_iou_table, brats_table
from accuracy_common import AUGMENT_TEXT, _mean_std, load_records
from accuracy_drive import DRIVE_FOLDS, DRIVE_PUBLISHED, drive_figure, drive_table
from accuracy_medmnist import DATASETS, LOSSES, PUBLISHED, PUBLISHED_SOURCE, SWEEPS


def sweep_table(records: list[dict[str, Any]], dataset: str) -> str | None:
    """Mean over seeds per sweep configuration; the one with the best validation AUC is marked."""
    rows = [r for r in records if r["dataset"] == dataset and r.get("config")]
    configs = [c for c in SWEEPS.get(dataset, {}) if any(r["config"] == c for r in rows)]
    if not configs:
        return None
    val = {c: float(np.mean([r["val_score"] for r in rows if r["config"] == c])) for c in configs}
    chosen = max(val, key=val.get)
    header = ["configuration (cross-entropy)", "seeds", "val AUC (selection)", "test ACC", "test AUC",
              "train s/run", "epochs (best)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in configs:
        rs = sorted((r for r in rows if r["config"] == config), key=lambda r: r["seed"])
        label = SWEEPS[dataset][config][0] + (" **(chosen on validation)**" if config == chosen else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    ",".join(str(r["seed"]) for r in rs),
                    _mean_std([r["val_score"] for r in rs]),
                    _mean_std([r["accuracy"] for r in rs]),
                    _mean_std([r["auroc"] for r in rs]),
                    f"{np.mean([r['fit_seconds'] for r in rs]):.0f}",
                    f"{rs[0]['epochs']} ({'/'.join(str(r['best_epoch']) for r in rs)})",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def dataset_table(records: list[dict[str, Any]], dataset: str) -> str:
    spec = DATASETS[dataset]
    rows = [r for r in records if r["dataset"] == dataset]
    losses_present = [name for name in LOSSES if any(r["loss"] == name for r in rows)]
    names = spec.class_names
    header = ["loss", "seeds", "ACC", "bal. ACC", "AUC (macro)", "F1 (macro)"]
    rarest = rows[0]["rarest_class"] if rows else 0
    header.append(f"recall rarest ({names[rarest]})")
    if spec.kappa:
        header.append("QW kappa")
    header += ["ECE", "ECE after TS", "T", "train s/run", "epochs (best)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in losses_present:
        rs = sorted((r for r in rows if r["loss"] == name), key=lambda r: r["seed"])
        cells = [
            LOSSES[name][0],
            ",".join(str(r["seed"]) for r in rs),
            _mean_std([r["accuracy"] for r in rs]),
            _mean_std([r["balanced_accuracy"] for r in rs]),
            _mean_std([r["auroc"] for r in rs]),
            _mean_std([r["f1_macro"] for r in rs]),
            _mean_std([r["recall_rarest"] for r in rs]),
        ]
        if spec.kappa:
            cells.append(_mean_std([r.get("kappa_quadratic") for r in rs]))
        cells += [
            _mean_std([r["ece_before"] for r in rs]),
            _mean_std([r["ece_after"] for r in rs]),
            _mean_std([r["temperature"] for r in rs]),
            f"{np.mean([r['fit_seconds'] for r in rs]):.0f}",
            f"{rs[0]['epochs']} ({'/'.join(str(r['best_epoch']) for r in rs)})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    pub = PUBLISHED.get(dataset)
    if pub:
        cells = [f"published: MedMNIST v2 {pub['model']}", "–", f"{pub['acc']:.3f}", "–", f"{pub['auc']:.3f}"]
        cells += ["–"] * (len(header) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_table(records: list[dict[str, Any]], dataset: str) -> str:
    spec = DATASETS[dataset]
    rows = [r for r in records if r["dataset"] == dataset]
    header = ["loss", *[f"recall {n}" for n in spec.class_names]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in LOSSES:
        rs = [r for r in rows if r["loss"] == name]
        if not rs:
            continue
        per = np.array([r["recall_per_class"] for r in rs])
        lines.append(
            "| "
            + " | ".join([LOSSES[name][0], *[_mean_std(list(per[:, k])) for k in range(per.shape[1])]])
            + " |"
        )
    return "\n".join(lines)


def dataset_figure(records: list[dict[str, Any]], dataset: str, work: Path, out: Path) -> Path | None:
    """Reliability diagrams (test, before temperature scaling, first seed) + per-class recall bars."""
    import torch
    from matplotlib.figure import Figure

    from medfocal.metrics import reliability_diagram

    rows = [r for r in records if r["dataset"] == dataset]
    names = [n for n in LOSSES if any(r["loss"] == n for r in rows)]
    if not names:
        return None
    fig = Figure(figsize=(3.3 * (len(names) + 1), 3.6), layout="constrained")
    axes = fig.subplots(1, len(names) + 1)
    for ax, name in zip(axes, names):
        first = min((r for r in rows if r["loss"] == name), key=lambda r: r["seed"])
        raw = work / f"{dataset}_{name}_s{first['seed']}" / "test_outputs.npz"
        if raw.is_file():
            data = np.load(raw)
            probs = torch.softmax(torch.as_tensor(data["logits"]).double(), 1)
            reliability_diagram(
                probs, torch.as_tensor(data["labels"]), ax=ax, title=f"{name} (seed {first['seed']})"
            )
        else:
            ax.set_title(f"{name}: test outputs not kept")
            ax.axis("off")
    ax = axes[-1]
    spec = DATASETS[dataset]
    width = 0.8 / len(names)
    x = np.arange(len(spec.class_names))
    for i, name in enumerate(names):
        per = np.mean([r["recall_per_class"] for r in rows if r["loss"] == name], axis=0)
        ax.bar(x + i * width, per, width=width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, spec.class_names, rotation=30, fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test recall (mean over seeds)")
    ax.legend(fontsize="x-small")
    fig.suptitle(
        f"{spec.title}: test reliability (before temperature scaling) and per-class recall", fontsize="small"
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"accuracy_{dataset}.png"
    fig.savefig(path, dpi=90)
    return path


def write_report(records: list[dict[str, Any]], out: Path, work: Path, notes: str = "") -> Path:
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in records)]
    parts = [
        "# Accuracy and calibration on real data: focal-family losses vs cross-entropy / Dice+CE",
        "",
        "Generated by `python bench/accuracy.py` (raw records: `accuracy_runs.jsonl`; the findings below "
        "come from `accuracy_notes.md`). Every run goes through the package's own code paths: the "
        "datamodules (official splits), `medfocal.nets`, `medfocal.losses`, the task modules under a "
        "Lightning `Trainer`, `TemperatureScaling` and, for BraTS, `medfocal.inference.Predictor`.",
        "",
        "MedMNIST: the epoch is selected on validation AUC (as MedMNIST v2 does), a temperature is fitted on "
        "the validation split by the `TemperatureScaling` callback, and the test split is evaluated once. "
        "Metrics (scikit-learn on the test split): ACC, balanced ACC (mean recall), macro one-vs-rest AUROC, "
        "macro F1, recall of the rarest training class, quadratic-weighted kappa (RetinaMNIST, ordinal), "
        "top-label ECE (15 equal-width bins, `medfocal.metrics`) before and after temperature scaling, the "
        "fitted T, and the wall time of `trainer.fit` (CPU, 1 thread per run, two runs side by side on a "
        "2-core machine). Values are mean ± sample std over the listed seeds.",
        "",
        f"Published figures: {PUBLISHED_SOURCE}.",
        "",
    ]
    notes_file = out / "accuracy_notes.md"
    if not notes and notes_file.is_file():
        notes = notes_file.read_text().strip()
    if notes:
        parts += [notes, ""]
    for dataset in datasets:
        spec = DATASETS[dataset]
        example = next(r for r in records if r["dataset"] == dataset)
        parts += [
            f"## {spec.title}",
            "",
            f"train/val/test = {example['n_train']}/{example['n_val']}/{example['n_test']}; network "
            f"`resnet18` {json.dumps({k: v for k, v in example['net'].items() if k != 'name'})} "
            f"(MONAI ResNet-18 at reduced width for the CPU budget), AdamW lr {spec.lr}, cosine schedule, "
            f"batch {spec.batch_size}, augmentation: {AUGMENT_TEXT[spec.augment]}.",
            "",
            dataset_table(records, dataset),
            "",
            "Per-class test recall:",
            "",
            per_class_table(records, dataset),
            "",
        ]
        figure = dataset_figure(records, dataset, work, out)
        if figure is not None:
            parts += [f"![{dataset}]({figure.name})", ""]
        sweep = sweep_table(load_records(out / "accuracy_sweep.jsonl"), dataset)
        if sweep is not None:
            parts += [
                "Training configurations tried with cross-entropy (`--sweep`, records in "
                "`accuracy_sweep.jsonl`), compared on the validation AUC of the selected epoch only; "
                "the test columns are shown, not used to choose. Times were taken under varying load.",
                "",
                sweep,
                "",
            ]
    if any(r["dataset"] == "drive" and "fold" in r for r in records):
        example = next(r for r in records if r["dataset"] == "drive" and "fold" in r)
        parts += [
            "## DRIVE (retinal vessels, 2D binary segmentation, 584x565 RGB)",
            "",
            f"{DRIVE_FOLDS}-fold cross-validation over the 20 DRIVE training images: each outer fold "
            f"holds out 5 images for evaluation; of the other 15, {example['n_val']} are an inner "
            "validation set (epoch selection on `val/dice` every 5 epochs, and the temperature fit, inside "
            f'the field of view: `TemperatureScaling(mask_key="fov")`) and {example["n_train"]} train. '
            "Metrics on the held-out images inside the field of view, pixels pooled per fold (Dice/F1 and "
            "AUROC as in the DRIVE literature), HD95 per image in pixels (vessel map inside the FOV, "
            "MONAI). Cross-validated figure = mean over the folds of one seed; the table gives mean ± std "
            "of that over the seeds (one seed: mean ± std over the 4 folds). MONAI UNet "
            "(16-32-64-128, 1 residual unit), 96x96 patches (4 per image, 50% vessel-centred), AdamW lr "
            f"3e-3, cosine, {example['epochs']} epochs, sliding-window inference, threshold 0.5.",
            "",
            drive_table(records),
            "",
            f"Published: {DRIVE_PUBLISHED}.",
            "",
        ]
        figure = drive_figure(records, work, out)
        if figure is not None:
            parts += [f"![drive]({figure.name})", ""]
    if any(r["dataset"] == "brats" for r in records):
        example = next(r for r in records if r["dataset"] == "brats")
        parts += [
            "## BraTS 2013 (brain tumour MRI, Flair + T1c, 5 labels, 3D)",
            "",
            f"Trained on the {example['n_train']} cases of `train/`, scored once on the {example['n_eval']} "
            f"cases of `validation/` ({', '.join(example['eval_cases'])}); no model selection (the last of "
            f"{example['epochs']} epochs is kept) and no temperature scaling (there is no third set to fit "
            "it on). Resampled to 2 mm for the CPU budget and cropped to the non-zero (brain) box "
            "(`PreprocessingSpec(crop_foreground=True)`), MONAI UNet (16-32-64-128, 1 residual unit), "
            "48^3 patches centred on background for half of them and on each tumour label equally for the "
            "rest (`crop: label_classes`, ratios 4:1:1:1:1), flips, AdamW lr 3e-3, "
            "cosine. Inference with `medfocal.inference.Predictor` (sliding window, overlap 0.5), which "
            "returns the labels on the native 1 mm grid where they are scored: Dice per label and per "
            "composite region (whole tumour 1-4, tumour core 1+3+4, enhancing 4), HD95 in mm (MONAI), "
            "top-label voxel ECE inside the brain mask. Mean over the 2 cases, then mean ± std over seeds. "
            "The stroke preset's network (`DenseUNet`) convolves at full resolution (dense blocks and "
            "decoder blocks at 48^3), about 24x the CPU cost per step of this UNet, whose first "
            "convolution is strided; the preset's loss is therefore used with the UNet.",
            "",
            brats_table(records),
            "",
            "IoU (Jaccard) per label and region:",
            "",
            brats_iou_table(records),
            "",
            f"Published: {BRATS_PUBLISHED}.",
            "",
        ]
        figure = brats_figure(records, out)
        if figure is not None:
            parts += [f"![brats]({figure.name})", ""]
    path = out / "accuracy.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path
