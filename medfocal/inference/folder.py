"""Predict a folder (or file, or CSV list) of cases: load ahead, predict, write behind, resume, report.

Loading runs in DataLoader workers (or a prefetch thread), the model runs in the calling thread, and
inversion to the input geometry, post-processing and atomic writing run in a background thread with a
bounded queue, so the model does not wait on disk. Cases whose outputs exist are skipped (resume);
a failing case is reported and the others go on. What a case's outputs and report columns are is the
task's prediction head's business (``medfocal.inference.heads``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medfocal.inference.cases import Case, check_case, discover_cases, refuse_output_in_input
from medfocal.inference.progress import progress_bar
from medfocal.inference.report import format_summary, read_report, write_csv
from medfocal.inference.writer import BackgroundWriter, remove_stale_temporaries

if TYPE_CHECKING:
    from medfocal.inference.predictor import Predictor

__all__ = ["PROBABILITY_FORMATS", "InferenceResult", "case_error", "load_case", "predict_folder"]

PROBABILITY_FORMATS = ("nifti", "npz")


@dataclass
class InferenceResult:
    """What :meth:`Predictor.predict_folder` did: report rows, failures, output folder and timing."""

    rows: list[dict[str, Any]]
    failures: list[tuple[str, str]]
    output_dir: Path
    report_path: Path
    seconds: float

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"ok": 0, "skipped": 0, "failed": 0}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    @property
    def summary(self) -> str:
        return format_summary(self.counts, self.seconds, self.failures)

    @property
    def ok(self) -> bool:
        return not self.failures


def _root_message(err: BaseException) -> str:
    """The innermost cause of an exception (MONAI wraps transform errors), on one line."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def case_error(case: Case, err: BaseException) -> str:
    """One line naming the case's file and the innermost cause of ``err``."""
    msg = _root_message(err)
    return msg if str(case.paths[0]) in msg else f"{case.source}: {msg}"


class _CaseDataset(torch.utils.data.Dataset):
    """Loads and preprocesses one case per item; errors become ``{"error": ...}`` items, not crashes."""

    def __init__(self, cases: Sequence[Case], transforms: Any, in_channels: int, spatial_dims: int) -> None:
        self.cases = list(cases)
        self.transforms = transforms
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        try:
            check_case(case, self.in_channels, self.spatial_dims)
            source = str(case.paths[0]) if len(case.paths) == 1 else [str(p) for p in case.paths]
            image = self.transforms({"image": source})["image"]
            if image.shape[0] != self.in_channels or image.ndim != self.spatial_dims + 1:
                raise ValueError(
                    f"expected {self.in_channels} channel(s) x {self.spatial_dims}D after preprocessing, "
                    f"got shape {tuple(image.shape)}"
                )
            return {"index": index, "image": image}
        except Exception as err:
            return {"index": index, "error": case_error(case, err)}


def load_case(case: Case, transforms: Any, in_channels: int, spatial_dims: int) -> Any:
    """The preprocessed image of one case; ``ValueError`` naming its file when it cannot be used."""
    item = _CaseDataset([case], transforms, in_channels, spatial_dims)[0]
    if "error" in item:
        raise ValueError(item["error"])
    return item["image"]


def _first(batch: list) -> Any:
    return batch[0]


def _prefetch(iterable: Iterable, depth: int = 2) -> Iterator:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            for item in iterable:
                q.put(item)
        except BaseException as err:
            failure.append(err)
        finally:
            q.put(done)

    threading.Thread(target=run, name="medfocal-loader", daemon=True).start()
    while (item := q.get()) is not done:
        yield item
    if failure:
        raise failure[0]


def _loader(dataset: _CaseDataset, num_workers: int) -> Iterator[dict[str, Any]]:
    if not len(dataset):
        return iter(())
    if num_workers <= 0:
        return _prefetch((dataset[i] for i in range(len(dataset))), depth=2)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=1,
        shuffle=False,
        num_workers=min(num_workers, len(dataset)),
        collate_fn=_first,
        prefetch_factor=2,
    )
    return iter(loader)


def predict_folder(
    predictor: Predictor,
    source: str | Path,
    output_dir: str | Path,
    overwrite: bool = False,
    save_probabilities: str | None = None,
    num_workers: int = 1,
    progress: bool = True,
    report_name: str | None = None,
) -> InferenceResult:
    """Predict every case of ``source`` into ``output_dir`` with ``predictor`` (see
    :meth:`medfocal.inference.Predictor.predict_folder` for the arguments); never raises per case."""
    if save_probabilities not in (None, *PROBABILITY_FORMATS):
        raise ValueError(
            f"save_probabilities: expected one of {PROBABILITY_FORMATS} or None, got {save_probabilities!r}"
        )
    head, card = predictor.head, predictor.card
    start = time.perf_counter()
    cases = discover_cases(source)
    refuse_output_in_input(cases, source, output_dir)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir)
    report_path = output_dir / (report_name or head.report_name)
    previous = {} if overwrite else read_report(report_path)

    rows: dict[str, dict[str, Any]] = {}
    failures: list[tuple[str, str]] = []
    todo: list[Case] = []
    for case in cases:
        outputs = head.output_paths(case, output_dir, save_probabilities)
        old = previous.get(case.case_id)
        # a head with files: done when they exist; without: when the report says so
        done = (
            all(p.is_file() for p in outputs)
            if outputs
            else (old is not None and old.get("status") in ("ok", "skipped"))
        )
        if done and not overwrite:
            row = dict(old) if old else {"case": case.case_id}
            row["status"] = "skipped"
            rows[case.case_id] = row
        else:
            todo.append(case)

    lock = threading.Lock()
    bar = progress_bar(progress, len(todo))

    def fail(case: Case, message: str) -> None:
        with lock:
            failures.append((case.case_id, message))
            rows[case.case_id] = {
                "case": case.case_id,
                "status": "failed",
                "source": case.source,
                "error": message,
            }

    def finish(job: tuple[Case, Any, torch.Tensor, float]) -> dict[str, Any]:
        case, image, output, compute_s = job
        t0 = time.perf_counter()
        pred = head.finish(case, image, output)
        outputs = head.output_paths(case, output_dir, save_probabilities)
        if outputs:
            head.write(case, pred, outputs)
        row = {"case": case.case_id, "status": "ok", "source": case.source}
        row.update(head.report_row(pred))
        row["compute_s"] = round(compute_s, 4)
        row["postprocess_s"] = round(time.perf_counter() - t0, 4)
        if outputs:
            row["output"] = outputs[0].name
        return row

    def done_callback(job: tuple, row: dict[str, Any] | None, err: BaseException | None) -> None:
        case = job[0]
        if err is not None:
            fail(case, case_error(case, err))
        else:
            with lock:
                rows[case.case_id] = row
        bar.advance()

    dataset = _CaseDataset(todo, predictor.transforms, card.in_channels, card.spatial_dims)
    with bar, BackgroundWriter(finish, done_callback, max_pending=2) as writer:
        for item in _loader(dataset, num_workers):
            case = todo[item["index"]]
            if "error" in item:
                fail(case, item["error"])
                bar.advance()
                continue
            t0 = time.perf_counter()
            try:
                output = predictor.predict_tensor(item["image"])
            except Exception as err:
                fail(case, case_error(case, err))
                bar.advance()
                continue
            writer.submit((case, item["image"], output, time.perf_counter() - t0))
    ordered = [rows[c.case_id] for c in cases if c.case_id in rows]
    write_csv(ordered, report_path)
    return InferenceResult(ordered, failures, output_dir, report_path, time.perf_counter() - start)
