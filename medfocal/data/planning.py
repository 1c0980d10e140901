"""``medfocal plan``: a LightningCLI YAML derived from a dataset fingerprint, every choice with its reason.

Segmentation (nnU-Net's rules, fitted to a time budget): target spacing (median; on an axis more than 3x
coarser than the finest, its 10th percentile), patch and batch size from the budget, the network
(MONAI's residual ``UNet`` on a CPU budget, nnU-Net's ``DynUNet`` with deep supervision on a GPU; per-axis
strides from spacing and patch), normalisation by modality, foreground oversampling, Dice + CE,
augmentation, an in-memory cache when the cases fit, an epoch count from the budget
(``limit_train_batches`` caps long epochs) and a poly learning-rate schedule.
Classification: ResNet-18 stem (CIFAR-style 3x3 stride 1 for small images), width for the budget, batch
size, epochs, augmentation, loss (focal ``gamma`` and ``alpha`` from the class counts, or plain CE), and
checkpoint selection on validation AUROC.

Example::

    plan_dataset("drive/training", budget="cpu", out="plan.yaml")   # then: medfocal fit --config plan.yaml

Isensee et al., nnU-Net, Nature Methods 18:203-211, 2021; Yang et al., MedMNIST v2, Scientific Data
10:41, 2023 (ResNet-18 (28) stem and selection on validation AUC).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfocal.data.autolayout import find_layout
from medfocal.data.fingerprint import Fingerprint, compute_fingerprint, print_fingerprint
from medfocal.data.layouts import CSVLayout, Layout
from medfocal.data.plan_classification import classification_plan
from medfocal.data.plan_rules import segmentation_plan

__all__ = ["Budget", "Plan", "layout_spec", "make_plan", "parse_budget", "plan_dataset", "render_yaml"]

BUDGET_MINUTES = {"cpu": 30.0, "gpu": 120.0}


@dataclass(frozen=True)
class Budget:
    """Where and how long to train: ``device`` ``"cpu"`` or ``"gpu"``, ``minutes`` of training."""

    device: str
    minutes: float


def parse_budget(budget: str | float | Budget) -> Budget:
    """``"cpu"`` (30 min), ``"gpu"`` (120 min), or minutes (a number; device: CUDA if present, else CPU).

    Raises:
        ValueError: anything else, or minutes <= 0.
    """
    if isinstance(budget, Budget):
        return budget
    text = str(budget).strip().lower()
    if text in BUDGET_MINUTES:
        return Budget(text, BUDGET_MINUTES[text])
    try:
        minutes = float(text)
    except ValueError:
        raise ValueError(f"budget: expected 'cpu', 'gpu' or minutes (a number), got {budget!r}") from None
    if minutes <= 0:
        raise ValueError(f"budget: expected a positive number of minutes, got {budget!r}")
    import torch

    return Budget("gpu" if torch.cuda.is_available() else "cpu", minutes)


@dataclass
class Plan:
    """A planned config (``config``: the YAML as nested dicts) and ``reasons`` keyed by dotted path."""

    config: dict[str, Any]
    reasons: dict[str, str]
    header: list[str]


def layout_spec(layout: Layout, data: Any) -> Any:
    """The ``layout`` value of the datamodule: the path when ``detect_layout`` reads it, else class_path."""
    import inspect

    # a CSV stays a class_path: LightningCLI would read a plain path to a text file as the value itself
    # (the manifest's lines, not its path)
    plain_file = (
        Path(data).is_file() and Path(data).suffix.lower() != ".csv"
        if isinstance(data, (str, Path))
        else False
    )
    if plain_file or (isinstance(data, (str, Path)) and (Path(data) / "dataset.json").is_file()):
        return str(Path(data).resolve())
    cls = type(layout)
    if isinstance(layout, CSVLayout):
        args = {"csv": str(layout.csv), "image": layout.image_columns, "label": layout.label_column}
    else:
        args = {}
        for name in list(inspect.signature(cls.__init__).parameters)[1:]:
            value = getattr(layout, name, None)
            if value is not None:
                args[name] = str(value) if isinstance(value, Path) else value
    return {"class_path": f"medfocal.data.{cls.__name__}", "init_args": args}


def _preset_block(preset: str | None, task: str) -> tuple[dict | None, str]:
    if preset is None:
        return None, ""
    import yaml

    from medfocal.presets import find_config

    path = find_config(preset if preset.endswith(".yaml") else f"{preset}.yaml")
    config = yaml.safe_load(path.read_text())
    model = config.get("model", {})
    kind = "segmentation" if "Segmentation" in str(model.get("class_path", "")) else "classification"
    if kind != task:
        raise ValueError(f"preset {preset}: a {kind} preset, but the data is {task}; choose a {task} preset")
    return model.get("init_args", {}).get("loss"), path.name


def make_plan(
    fp: Fingerprint,
    layout_value: Any,
    preset: str | None = None,
    budget: Any = "cpu",
    network: str = "auto",
) -> Plan:
    """The planned config for a fingerprint (pure: reads no images).

    Args:
        fp: the dataset fingerprint.
        layout_value: what to write under ``data.init_args.layout`` (see :func:`layout_spec`).
        preset: a preset name of ``configs/`` whose loss is used instead of the planned one.
        budget: see :func:`parse_budget`.
        network: segmentation network, ``"auto"`` (MONAI's residual UNet on a CPU budget, nnU-Net's
            DynUNet on a GPU), ``"unet"`` or ``"dynunet"``.
    """
    budget = parse_budget(budget)
    preset_loss, preset_name = _preset_block(preset, fp.task)
    if fp.task == "segmentation":
        config, reasons = segmentation_plan(fp, layout_value, budget.device, budget.minutes * 60.0, network)
    else:
        if network != "auto":
            raise ValueError(f"network {network!r}: only for segmentation plans (the data is {fp.task})")
        config, reasons = classification_plan(fp, layout_value, budget.device, budget.minutes * 60.0)
    if preset_loss is not None:
        loss_key = "model.init_args.loss"
        if (
            fp.task == "segmentation"
            and "DeepSupervision" in config["model"]["init_args"]["loss"]["class_path"]
        ):
            config["model"]["init_args"]["loss"]["init_args"]["loss"] = preset_loss
            loss_key += ".init_args.loss"
        else:
            config["model"]["init_args"]["loss"] = preset_loss
        reasons[loss_key] = f"loss taken from the preset {preset_name}"
    header = [
        f"Planned by medfocal plan for {fp.source} ({fp.task}, {fp.spatial_dims}D, {fp.num_cases} cases).",
        f"Budget: {budget.device}, {budget.minutes:g} minutes of training. Fingerprint: beside this file.",
        "Run: medfocal fit --config <this file>   (every choice below carries its reason)",
    ]
    return Plan(config, reasons, header)


def _leaf(value: Any) -> str:
    import json

    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise ValueError(f"plan: non-finite value {value} cannot be written")
    return json.dumps(value)


def _emit(obj: dict[str, Any], reasons: dict[str, str], prefix: str, indent: int) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for key, value in obj.items():
        path = f"{prefix}.{key}" if prefix else key
        if path in reasons:
            lines.append(f"{pad}# {reasons[path]}")
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines += _emit(value, reasons, path, indent + 2)
        else:
            lines.append(f"{pad}{key}: {_leaf(value)}")
    return lines


def render_yaml(plan: Plan) -> str:
    """The plan as YAML text: block mappings, flow lists, a ``# reason`` line above every planned key."""
    return "\n".join([*(f"# {h}" for h in plan.header), *_emit(plan.config, plan.reasons, "", 0)]) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def plan_dataset(
    data: str | Path | Layout,
    preset: str | None = None,
    budget: str | float | Budget = "cpu",
    out: str | Path = "plan.yaml",
    task: str | None = None,
    show: bool = True,
    max_cases: int = 40,
    network: str = "auto",
) -> Path:
    """Fingerprint ``data``, plan a config and write ``out`` (+ ``<out stem>.fingerprint.json`` beside it).

    Args:
        data: a dataset path (layout auto-detected) or a layout object.
        preset: a ``configs/`` preset whose loss replaces the planned one.
        budget: ``"cpu"``, ``"gpu"`` or minutes.
        out: the YAML to write (atomically).
        task: force ``"segmentation"``/``"classification"`` (default: from the layout).
        show: print the fingerprint table (rich).
        max_cases: segmentation cases read for the fingerprint.
        network: segmentation network: ``auto`` (MONAI's residual UNet on a CPU budget, nnU-Net's
            DynUNet on a GPU), ``unet`` or ``dynunet``.

    Returns:
        the path of the YAML.

    Raises:
        FileNotFoundError / ValueError: undetectable or ambiguous layouts (the message names the option
            to add), a bad budget, a preset of the other task.
    """
    layout = find_layout(data)
    fp = compute_fingerprint(layout, task=task, max_cases=max_cases)
    if show:
        print_fingerprint(fp)
    plan = make_plan(fp, layout_spec(layout, data), preset, budget, network)
    out = Path(out)
    fp.save(out.with_name(f"{out.stem}.fingerprint.json"))
    _write_atomic(out, render_yaml(plan))
    return out
