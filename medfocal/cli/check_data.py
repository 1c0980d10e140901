"""``medfocal check-data``: validate a dataset before training and print what it holds.

Usage::

    medfocal check-data --config stroke_isles [--data.init_args.KEY VALUE ...]   # a preset's data: section
    medfocal check-data --dataset-json path/dataset.json
    medfocal check-data PATH [--data.KEY VALUE ...]   # Decathlon folder, images/+masks/, .csv, .npz
    medfocal check-data kvasir/ --data.preprocessing.label_threshold 127

``--config`` files are parsed by ``MedfocalCLI(run=False)`` (the parser of ``medfocal fit``: a preset is
checked as ``fit`` checks it, several merge in order) and only the ``data`` part is instantiated; a bare
PATH gets a ``data`` section from its detected layout, parsed by the same ``LightningArgumentParser``
``data`` group, so ``--data.*`` overrides mean what they mean for ``fit``.
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

__all__ = [
    "HELP",
    "check_dataset",
    "datamodule_from_config",
    "datamodule_from_preset",
    "main",
    "parser",
]

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
    if hasattr(datamodule, "box_preprocessing"):  # detection data: boxes per class and size, per split
        from medfocal.data.boxes.checks import format_box_summary

        for split, records in getattr(datamodule, "splits", {}).items():
            if records:
                console.print(f"boxes ({split}, {len(records)} images):", markup=False)
                console.print(format_box_summary(datamodule.summary(split)), markup=False)
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
    p.add_argument(
        "--config",
        "-c",
        action="append",
        help="preset name or `medfocal fit` YAML (repeat to merge, as fit does); only data: is instantiated",
    )
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
    try:
        cfg = data_parser.parse_args([f"--data={json.dumps(data)}", *overrides])
        return data_parser.instantiate_classes(cfg).data
    except (argparse.ArgumentError, ValueError) as err:
        raise _data_error(err) from None


def datamodule_from_preset(configs: Sequence[str], overrides: Sequence[str] = ()) -> Any:
    """The datamodule of one or more ``medfocal fit`` configs (merged in order, as ``fit`` merges them).

    The configs are parsed by :class:`~medfocal.cli.lightning.MedfocalCLI` itself (``run=False``), so
    they are checked exactly as ``medfocal fit`` checks them; only the ``data`` part is instantiated
    (no model, no trainer, no log folders).

    Raises:
        ValueError: a config or override that ``medfocal fit`` would reject (its message).
    """
    import argparse as _argparse
    import warnings

    from jsonargparse import Namespace

    from medfocal.cli.lightning import MedfocalCLI

    class _DataOnlyCLI(MedfocalCLI):
        def add_core_arguments_to_parser(self, parser: Any) -> None:
            # as fit's parser, but a data-only YAML (no model:) is fine: only data is checked
            parser.add_lightning_class_args(self.trainer_class, "trainer")
            defaults = self.trainer_defaults.items()
            trainer_defaults = {f"trainer.{k}": v for k, v in defaults if k != "callbacks"}
            parser.set_defaults(trainer_defaults)
            parser.add_lightning_class_args(self._model_class, "model", subclass_mode=True, required=False)
            parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=True)

        def instantiate_classes(self) -> None:
            cfg = Namespace(data=self.config["data"])
            self.datamodule = _data_parser().instantiate_classes(cfg).data

        def after_instantiate_classes(self) -> None:
            pass

        def _set_seed(self) -> None:  # nothing random is run here: no "Seed set to" line
            pass

    args = [arg for config in configs for arg in ("--config", config)] + list(overrides)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        try:
            cli = _DataOnlyCLI(
                args=args, run=False, parser_kwargs={"prog": "medfocal check-data", "exit_on_error": False}
            )
        except (_argparse.ArgumentError, ValueError) as err:
            raise _data_error(err) from None
    return cli.datamodule


def _data_error(err: BaseException) -> ValueError:
    """The dataset's own error when jsonargparse wrapped one (a malformed dataset.json), else its cause."""
    from medfocal.cli import _cause_of_type
    from medfocal.data.errors import DataValidationError

    known = _cause_of_type(err, (DataValidationError,))
    return known if isinstance(known, ValueError) else ValueError(_root_error(err))


def _root_error(err: BaseException) -> str:
    """The useful lines of a jsonargparse error (``- dataset path /x does not exist``), on one line."""
    items: list[str] = []
    for line in str(err).splitlines():
        text = line.strip()
        if text.startswith("- "):
            items.append(text[2:])
        elif items and text and not text.startswith(("Given value", "Subtypes", "Errors")):
            items[-1] += f" {text}"
    useful = [item for item in items if "Expected a <class 'NoneType'>" not in item]
    return "; ".join(useful) if useful else " ".join(str(err).split())


def _path_data(path: str) -> dict[str, Any]:
    """A ``data:`` section for a bare path: classification for ``.npz``/class folders/CSV of class labels."""
    from medfocal.data.boxes.layouts import is_box_layout
    from medfocal.data.layouts import ImageFolderLayout, MedMNISTLayout, detect_layout

    if is_box_layout(Path(path)):
        return {
            "class_path": "medfocal.data.DetectionDataModule",
            "init_args": {"layout": str(path), "num_workers": 0},
        }
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
            datamodule = datamodule_from_preset(args.config, overrides)
        elif args.dataset_json or args.path:
            datamodule = datamodule_from_config(_path_data(args.dataset_json or args.path), overrides)
        else:
            p.error("give --config, --dataset-json or a dataset PATH")
        problems = check_dataset(datamodule, quick=args.quick, max_rows=args.max_rows)
    except (ValueError, FileNotFoundError) as err:
        print(f"check-data: {err}", file=sys.stderr)
        return 1
    return 1 if problems else 0
