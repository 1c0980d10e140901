"""``medfocal demo``: the main job end to end on generated data, through the real code paths.

1. generate a small class-imbalanced 3D dataset (:func:`medfocal.synthetic.make_lesion_dataset`:
   tiny lesions, oblique non-RAS affines, anisotropic spacing) in a Decathlon layout;
2. ``medfocal fit`` with ``configs/demo.yaml`` (3D U-Net + focal+Dice loss) for 100 short epochs
   (500 steps, about 1.5 minutes on a 2-core CPU). The budget is the number of epochs, so the result does
   not depend on machine load; ``--minutes`` (default 30) is only a safety net, and when it ends training
   early the summary says so (epochs done of planned);
3. ``medfocal infer`` on the held-out volumes with the best checkpoint (masks in the input geometry);
4. ``medfocal evaluate`` against their ground truth (per-case CSV, summary, box plot);
5. a PNG overlay of one case, and a summary on the terminal.

Example::

    medfocal demo                      # about 2 minutes of training on the CPU, outputs in medfocal_demo/
    medfocal demo --epochs 200 --out /tmp/demo
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medfocal.presets import find_config

__all__ = ["DemoResult", "find_config", "main", "print_summary", "run_demo"]


@dataclass
class DemoResult:
    """Where the demo put things, and the per-case Dice of the held-out volumes."""

    data_dir: Path
    checkpoint: Path
    predictions_dir: Path
    metrics_csv: Path
    overlay_png: Path
    dice: dict[str, float]
    train_seconds: float
    epochs_done: int = 0
    epochs_planned: int = 0
    minutes: float = 0.0

    @property
    def stopped_on_time(self) -> bool:
        """Training ended on the ``minutes`` safety net before its planned epochs."""
        return self.epochs_done < self.epochs_planned


def _fit(
    config: Path, data_dir: Path, out: Path, epochs: int, minutes: float, seed: int, extra: Sequence[str]
) -> tuple[Path, int, int]:
    """Train as ``medfocal fit`` does; the best checkpoint, the epochs done and the epochs planned."""
    from medfocal.cli.lightning import MedfocalCLI

    seconds = max(1, round(minutes * 60))
    loggers = [
        {
            "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
            "init_args": {"save_dir": str(out / "runs")},
        },
        {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(out / "runs")}},
    ]
    args = [
        "fit",
        "--config",
        str(config),
        f"--data.init_args.layout={data_dir}",
        f"--trainer.default_root_dir={out}",
        f"--trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}",
        f"--trainer.max_epochs={epochs}",
        f"--trainer.logger={json.dumps(loggers)}",
        f"--seed_everything={seed}",
        *extra,
    ]
    with warnings.catch_warnings():
        # args are given explicitly on purpose: the demo's own argv is not for the CLI
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        cli = MedfocalCLI(args=args)
    ckpt = cli.trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") or getattr(ckpt, "last_model_path", "")
    if not best:
        raise RuntimeError(
            f"training under {out} wrote no checkpoint: the time budget (--minutes {minutes:g}) ended it "
            "before the first validation; raise --minutes"
        )
    planned = cli.trainer.max_epochs if cli.trainer.max_epochs is not None else epochs
    return Path(best), int(cli.trainer.current_epoch), int(planned)


def run_demo(
    out_dir: str | Path = "medfocal_demo",
    epochs: int = 100,
    minutes: float = 30.0,
    seed: int = 0,
    n_train: int = 12,
    n_test: int = 4,
    shape: Sequence[int] = (48, 48, 32),
    config: str | Path | None = None,
    extra_args: Sequence[str] = (),
    progress: bool = True,
) -> DemoResult:
    """Generate data, train, infer and evaluate; return where everything is and the per-case Dice.

    Args:
        out_dir: output folder (data, training runs, predictions, metrics, overlay).
        epochs: training epochs of 5 steps (the training budget).
        minutes: safety net on the training time; when it ends training before ``epochs``, the summary
            says so.
        seed: seed of the generated data and of training.
        n_train: generated training cases.
        n_test: generated held-out cases.
        shape: shape of the generated volumes.
        config: training config (default: configs/demo.yaml).
        extra_args: extra ``medfocal fit`` arguments.
        progress: show progress bars.

    Raises:
        FileNotFoundError: the config does not exist.
    """
    from medfocal.inference import Predictor, evaluate_folders
    from medfocal.synthetic import make_lesion_dataset
    from medfocal.viz import save_overlay_png

    cfg = Path(config) if config else find_config()
    if not cfg.is_file():
        raise FileNotFoundError(f"{cfg}: training config not found")
    out = Path(out_dir).resolve()
    data_dir = out / "data"
    if not (data_dir / "dataset.json").is_file():
        make_lesion_dataset(data_dir, n_train=n_train, n_test=n_test, shape=shape, seed=seed)
    start = time.perf_counter()
    best, epochs_done, epochs_planned = _fit(cfg, data_dir, out / "train", epochs, minutes, seed, extra_args)
    train_seconds = time.perf_counter() - start

    predictions = out / "predictions"
    predictor = Predictor.from_checkpoint(best, device="auto")
    result = predictor.predict_folder(data_dir / "imagesTs", predictions, overwrite=True, progress=progress)
    if not result.ok:
        raise RuntimeError(f"inference failed: {result.summary()}")
    evaluation = evaluate_folders(predictions, data_dir / "labelsTs", output=out / "metrics.csv")
    dice = {str(r["case"]): float(r["dice"]) for r in evaluation.rows if str(r["label"]) in ("1", "lesion")}
    first = sorted((data_dir / "imagesTs").glob("*.nii.gz"))[0]
    overlay = save_overlay_png(
        first,
        out / "overlay.png",
        label_path=data_dir / "labelsTs" / first.name,
        prediction_path=predictions / first.name,
        title=f"{first.name}: ground truth (green) vs medfocal (red)",
    )
    return DemoResult(
        data_dir,
        best,
        predictions,
        evaluation.csv_path,
        overlay,
        dice,
        train_seconds,
        epochs_done=epochs_done,
        epochs_planned=epochs_planned,
        minutes=minutes,
    )


def print_summary(res: DemoResult) -> None:
    """Print the per-case Dice table and where the outputs are."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="medfocal demo: held-out cases")
    table.add_column("case")
    table.add_column("Dice (lesion)", justify="right")
    for case, d in res.dice.items():
        table.add_row(case, "nan" if math.isnan(d) else f"{d:.3f}")
    finite = [d for d in res.dice.values() if not math.isnan(d)]
    if finite:
        table.add_row("[bold]mean[/bold]", f"[bold]{sum(finite) / len(finite):.3f}[/bold]")
    console = Console(soft_wrap=True)
    console.print(table)
    console.print(
        f"trained {res.epochs_done} of {res.epochs_planned} epochs in {res.train_seconds:.0f} s; "
        f"checkpoint: {res.checkpoint}"
    )
    if res.stopped_on_time:
        console.print(
            f"[bold yellow]training stopped at its time budget (--minutes {res.minutes:g}) after "
            f"{res.epochs_done} of {res.epochs_planned} epochs[/bold yellow]: the Dice above is that of an "
            f"unfinished model; rerun with a larger budget, e.g. --minutes {max(2 * res.minutes, 1):g}",
            soft_wrap=True,
        )
    console.print(f"masks (input geometry): {res.predictions_dir}")
    console.print(f"per-case metrics: {res.metrics_csv}")
    console.print(f"overlay: {res.overlay_png}")


def main(argv: Sequence[str] | None = None) -> int:
    """``medfocal demo``: the command line is :mod:`medfocal.cli.demo`; kept here for older code."""
    from medfocal.cli.demo import main as demo_main

    return demo_main(argv)
