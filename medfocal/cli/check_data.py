"""``medfocal check-data``: validate a dataset before training and print what it holds.

Usage::

    medfocal check-data --config stroke_isles [--data.init_args.KEY VALUE ...]   # a preset's data: section
    medfocal check-data --dataset-json path/dataset.json
    medfocal check-data PATH [--data.KEY VALUE ...]   # Decathlon folder, images/+masks/, .csv, .npz
    medfocal check-data kvasir/ --data.preprocessing.label_threshold 127

The datamodule is built by the parser machinery of ``medfocal fit`` (a ``LightningArgumentParser`` with
the ``data`` group in subclass mode), so ``--data.*`` overrides mean what they mean there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfocal.cli._options import add_signature_options, new_parser

__all__ = ["HELP", "check_dataset", "main", "parser"]

HELP = "Validate and describe a dataset before training."


def check_dataset(datamodule: Any, quick: bool = False, max_rows: int = 40) -> list[str]:
    """Validate every case of ``datamodule`` (never raises for data problems), print a table; the problems.

    Args:
        datamodule: a medfocal datamodule (``validate``, ``describe``, ``class_names``, ...).
        quick: headers only (no NaN / label value checks).
        max_rows: cases shown in the table.
    """
    summaries, problems = datamodule.validate(full=not quick, raise_on_error=False)
    _print_report(datamodule, summaries, problems, max_rows)
    return problems


def _print_report(datamodule: Any, summaries: list[Any], problems: list[str], max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    names = datamodule.class_names
    table = Table(title=f"{datamodule.describe()}  ({len(summaries)} cases)")
    for column in ("case", "split", "channels", "shape", "spacing", "label / class voxel %"):
        table.add_column(column)
    for s in summaries[:max_rows]:
        if s.label_counts is not None and s.label_counts.sum() > 0:
            frac = 100.0 * s.label_counts / s.label_counts.sum()
            parts = [f"{i}:{f:.2f}" for i, f in enumerate(frac) if s.label_counts[i] > 0]
            label = " ".join(parts if len(parts) <= 8 else [*parts[:6], f"... ({len(parts)} values)"])
        else:
            label = "" if s.label is None else str(s.label)
        table.add_row(s.case, str(s.split or ""), str(s.channels), str(s.shape), str(s.spacing or ""), label)
    if len(summaries) > max_rows:
        table.add_row(f"... {len(summaries) - max_rows} more", "", "", "", "", "")
    console.print(table)
    totals = [s.label_counts for s in summaries if s.label_counts is not None]
    if totals:
        size = max(len(t) for t in totals)
        total = sum(np.pad(t, (0, size - len(t))) for t in totals)
        fractions = ", ".join(
            f"{names[i] if i < len(names) else i}: {100.0 * c / total.sum():.3f}%"
            for i, c in enumerate(total)
        )
        console.print(f"class voxel fractions (all cases): {fractions}")
    elif summaries and isinstance(summaries[0].label, (int, np.integer)):
        for split in ("train", "val", "test", None):
            labels = [int(s.label) for s in summaries if s.split == split and s.label is not None]
            if labels:
                counts = np.bincount(labels, minlength=len(names))
                text = ", ".join(f"{names[i] if i < len(names) else i}: {c}" for i, c in enumerate(counts))
                console.print(f"class counts ({split or 'unsplit'}, {len(labels)} cases): {text}")
    shown = names if len(names) <= 12 else [*names[:10], "...", names[-1]]
    console.print(
        f"classes ({len(names)}): {shown}  in_channels: {datamodule.in_channels}  "
        f"spatial_dims: {datamodule.spatial_dims}"
    )
    if problems:
        console.print(f"[bold red]{len(problems)} problem(s):[/bold red]")
        for p in problems:
            console.print(f"  - {p}", markup=False, soft_wrap=True)
    else:
        console.print("[bold green]no problems found[/bold green]")


def parser() -> argparse.ArgumentParser:
    """The ``medfocal check-data`` parser; ``--data.*`` options are left for the datamodule parser."""
    from medfocal.presets import list_presets

    p = new_parser(
        "check-data",
        "Validate a dataset (files, shapes, affines, labels, NaN) and describe it.",
        f"presets for --config: {', '.join(list_presets())}\n"
        "--data.KEY VALUE: any datamodule argument, as in `medfocal fit` (after PATH or --config)\n"
        "exit status: 0 no problems, 1 problems found (listed).",
    )
    p.add_argument("path", nargs="?", help="dataset folder, dataset.json, .csv or .npz")
    p.add_argument("--config", "-c", help="preset name or LightningCLI YAML; only its data: section is used")
    p.add_argument("--dataset-json", help="a Decathlon dataset.json")
    add_signature_options(p, check_dataset, skip=("datamodule",))
    return p


def _data_parser() -> Any:
    from pytorch_lightning import LightningDataModule
    from pytorch_lightning.cli import LightningArgumentParser

    data_parser = LightningArgumentParser(prog="medfocal check-data", exit_on_error=False)
    data_parser.add_lightning_class_args(LightningDataModule, "data", subclass_mode=True, required=True)
    return data_parser


def datamodule_from_config(data: dict[str, Any], overrides: Sequence[str] = ()) -> Any:
    """The datamodule of a ``data:`` section (``class_path`` optional) with ``--data.*`` overrides.

    Raises:
        ValueError: an argument the datamodule does not accept (jsonargparse's message).
    """
    if "class_path" not in data:
        data = {"class_path": "medfocal.data.SegmentationDataModule", "init_args": data}
    data_parser = _data_parser()
    cfg = data_parser.parse_args([f"--data={json.dumps(data)}", *overrides])
    return data_parser.instantiate_classes(cfg).data


def _config_data(config: str) -> dict[str, Any]:
    import yaml

    loaded = yaml.safe_load(Path(config).read_text()) or {}
    if not isinstance(loaded, dict) or loaded.get("data") is None:
        raise ValueError(f"{config}: expected a 'data:' section")
    return loaded["data"]


def _path_data(path: str) -> dict[str, Any]:
    """A ``data:`` section for a bare path: classification for ``.npz``/class folders/CSV of class labels."""
    from medfocal.data.layouts import ImageFolderLayout, MedMNISTLayout, detect_layout

    layout = detect_layout(path)
    classification = isinstance(layout, (MedMNISTLayout, ImageFolderLayout))
    if not classification:
        records = layout.records()
        label = records[0].get("label") if records else None
        classification = (
            bool(records) and "label" in records[0] and not isinstance(label, (str, list, tuple, Path))
        )
    module = "ClassificationDataModule" if classification else "SegmentationDataModule"
    return {
        "class_path": f"medfocal.data.{module}",
        "init_args": {"layout": str(path), "num_workers": 0, "check": "none"},
    }


def _join_data_options(argv: list[str]) -> list[str]:
    """``--data.x 3`` as ``--data.x=3``, so that argparse leaves the value with its option (not PATH)."""
    out: list[str] = []
    for token in argv:
        last = out[-1] if out else ""
        if last.startswith("--data.") and "=" not in last and not token.startswith("-"):
            out[-1] = f"{last}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``medfocal check-data``: validate a dataset and print a table; 0 when clean, 1 on problems."""
    from medfocal.cli import expand_presets

    p = parser()
    args, overrides = p.parse_known_args(
        _join_data_options(expand_presets(list(sys.argv[1:] if argv is None else argv)))
    )
    unknown = [token for token in overrides if not token.startswith("--data.")]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)} (datamodule options start with --data.)")
    try:
        if args.config:
            data = _config_data(args.config)
        elif args.dataset_json or args.path:
            data = _path_data(args.dataset_json or args.path)
        else:
            p.error("give --config, --dataset-json or a dataset PATH")
        datamodule = datamodule_from_config(data, overrides)
        problems = check_dataset(datamodule, quick=args.quick, max_rows=args.max_rows)
    except (ValueError, FileNotFoundError) as err:
        print(f"check-data: {err}", file=sys.stderr)
        return 1
    return 1 if problems else 0
