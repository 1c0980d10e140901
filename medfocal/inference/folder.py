"""Predict a folder (or file, or CSV list) of cases: load ahead, predict, write behind, resume, report.

Loading runs in DataLoader workers (or a prefetch thread), the model runs in the calling thread, and
inversion to the input geometry, post-processing and atomic writing run in a background thread with a
bounded queue, so the model does not wait on disk. A failing case is reported and the others go on.
What a case's outputs and report columns are is the task's prediction head's business
(``medfocal.inference.heads``).

Durability: the output folder is checked writable before anything runs; each finished case's row is
written at once to ``OUT/.medfocal/cases/<case>.json`` (atomically) and the report CSV is rebuilt from
these records every few seconds and at the end, so a run killed at any moment keeps what it finished.
``OUT/.medfocal/run.json`` holds the SHA-256 of the checkpoint (and the medfocal version): a resume
skips the cases whose record says done and whose files exist, and is refused with another checkpoint
unless ``overwrite``. Ctrl-C (``KeyboardInterrupt``) stops after the case being written, writes the
report and returns a result with ``interrupted=True`` (``medfocal infer`` exits 130).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medfocal.inference.cases import Case, check_case, discover_cases, refuse_output_in_input
from medfocal.inference.progress import progress_bar
from medfocal.inference.report import (
    STATE_DIR,
    format_summary,
    read_case_records,
    read_report,
    record_run,
    write_case_record,
    write_csv,
)
from medfocal.inference.shards import merge_part_reports, part_report_name, select_part
from medfocal.inference.writer import BackgroundWriter, check_output_writable, remove_stale_temporaries

if TYPE_CHECKING:
    from medfocal.inference.predictor import Predictor

__all__ = [
    "NONFINITE_MODES",
    "PROBABILITY_FORMATS",
    "InferenceResult",
    "case_error",
    "check_output_writable",
    "checkpoint_identity",
    "default_writers",
    "load_case",
    "predict_folder",
]

PROBABILITY_FORMATS = ("nifti", "npz")
#: ``Predictor(nonfinite=...)``: a NaN/Inf in the input (or after preprocessing, or in the network's
#: probabilities) fails the case ("error"), or is replaced and flagged in the report ("replace")
NONFINITE_MODES = ("error", "replace")
HTML_NAME = "report.html"  # the review page of predict_folder(html=True), in the output folder
REPORT_EVERY_S = 2.0  # rebuild the report CSV from the case records at most this often during a run


@dataclass
class InferenceResult:
    """What :meth:`Predictor.predict_folder` did: report rows, failures, output folder and timing."""

    rows: list[dict[str, Any]]
    failures: list[tuple[str, str]]
    output_dir: Path
    report_path: Path
    seconds: float
    #: stopped by Ctrl-C (``KeyboardInterrupt``): the cases not in ``rows`` were not done
    interrupted: bool = False
    #: what ``OUT/.medfocal/run.json`` holds (checkpoint, its SHA-256, medfocal version)
    run_info: dict[str, Any] = field(default_factory=dict)
    #: cases of the input, done or not
    total: int = 0
    #: the review page (``predict_folder(html=True)``)
    html_path: Path | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status (``ok``, ``skipped``, ``failed``); ``interrupted``: cases left undone."""
        out: dict[str, int] = {"ok": 0, "skipped": 0, "failed": 0}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        if self.interrupted:
            out["interrupted"] = max(self.total - len(self.rows), 0)
        return out

    @property
    def summary(self) -> str:
        return format_summary(self.counts, self.seconds, self.failures)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted

    @property
    def exit_code(self) -> int:
        """What ``medfocal infer`` exits with: 130 interrupted (as a shell does on SIGINT), 1 some case
        failed, 0 all done."""
        if self.interrupted:
            return 130
        return 1 if self.failures else 0


def _root_message(err: BaseException) -> str:
    """The innermost cause of an exception (MONAI wraps transform errors), on one line."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def case_error(case: Case, err: BaseException) -> str:
    """One line naming the case's file and the innermost cause of ``err``."""
    msg = _root_message(err)
    return msg if str(case.paths[0]) in msg else f"{case.source}: {msg}"


_REPLACE_HINT = "or pass nonfinite='replace' (--nonfinite replace) to {what} and flag the case in the report"


def check_finite(values: torch.Tensor, stage: str, mode: str, fill: float | None = None) -> list[str]:
    """One ``torch.isfinite(values).all()``; a NaN/Inf is an error or (``mode="replace"``) replaced in place.

    Args:
        values: the loaded image, the preprocessed image or the network's probabilities.
        stage: ``"input"``, ``"preprocessed"`` or ``"output"`` (what the message says).
        mode: one of :data:`NONFINITE_MODES`.
        fill: the replacement value; ``None``: the minimum of the finite values (0 if there are none).

    Returns:
        the warnings for the case's report row (empty when all values are finite).

    Raises:
        ValueError: a non-finite value with ``mode="error"``: one line saying where and the fix.
    """
    if bool(torch.isfinite(values).all()):
        return []
    bad = ~torch.isfinite(values)
    n = int(bad.sum())
    if mode != "replace":
        if stage == "input":
            what = "set them to the image minimum"
            raise ValueError(
                f"{n} non-finite voxel(s) (NaN/Inf) in the image: fix or mask them in the file, "
                + _REPLACE_HINT.format(what=what)
            )
        if stage == "preprocessed":
            raise ValueError(
                f"preprocessing gave {n} non-finite value(s) (intensities too large for float32 arithmetic): "
                "rescale the image, " + _REPLACE_HINT.format(what="set them to 0")
            )
        raise ValueError(
            f"the network gave {n} non-finite probabilities (extreme intensities, or a broken checkpoint): "
            "check the image's intensities and the checkpoint, " + _REPLACE_HINT.format(what="set them to 0")
        )
    if fill is None:
        finite = values[~bad]
        fill = float(finite.min()) if finite.numel() else 0.0
    with torch.inference_mode(values.is_inference()):  # the network's output is an inference tensor
        values[bad] = fill
    where = {"input": "input voxel(s)", "preprocessed": "value(s) after preprocessing"}.get(
        stage, "probabilities from the network"
    )
    return [f"{n} non-finite {where} set to {fill:g}"]


def _load_split(transforms: Any) -> int | None:
    """Index of the step after loading in the preprocessing ``Compose`` (None: it loads nothing)."""
    from monai.transforms import LoadImaged

    steps = getattr(transforms, "transforms", ())
    for i, step in enumerate(steps):
        if isinstance(step, LoadImaged):
            return i + 1
    return None


class _CaseDataset(torch.utils.data.Dataset):
    """Loads and preprocesses one case per item; errors become ``{"error": ...}`` items, not crashes.

    Non-finite values are checked right after loading and after preprocessing (``nonfinite``); the
    warnings of ``nonfinite="replace"`` come with the item.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        transforms: Any,
        in_channels: int,
        spatial_dims: int,
        nonfinite: str = "error",
    ) -> None:
        self.cases = list(cases)
        self.transforms = transforms
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.nonfinite = nonfinite
        self.split = _load_split(transforms)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        try:
            check_case(case, self.in_channels, self.spatial_dims)
            source = str(case.paths[0]) if len(case.paths) == 1 else [str(p) for p in case.paths]
            data: Any = {"image": source}
            warnings: list[str] = []
            if self.split is not None:  # the loaded image as on disk, then the rest of the preprocessing
                data = self.transforms(data, end=self.split)
                raw = data["image"]
                if torch.is_floating_point(torch.as_tensor(raw)):
                    warnings += check_finite(raw, "input", self.nonfinite)
                data = self.transforms(data, start=self.split)
            else:
                data = self.transforms(data)
            image = data["image"]
            if image.shape[0] != self.in_channels or image.ndim != self.spatial_dims + 1:
                raise ValueError(
                    f"expected {self.in_channels} channel(s) x {self.spatial_dims}D after preprocessing, "
                    f"got shape {tuple(image.shape)}"
                )
            warnings += check_finite(image, "preprocessed", self.nonfinite, fill=0.0)
            return {"index": index, "image": image, "warnings": warnings}
        except Exception as err:
            return {"index": index, "error": case_error(case, err)}


def load_case(
    case: Case,
    transforms: Any,
    in_channels: int,
    spatial_dims: int,
    nonfinite: str = "error",
    warnings: list[str] | None = None,
) -> Any:
    """The preprocessed image of one case; ``ValueError`` naming its file when it cannot be used.

    ``warnings``: a list that receives the warnings of ``nonfinite="replace"``.
    """
    item = _CaseDataset([case], transforms, in_channels, spatial_dims, nonfinite)[0]
    if "error" in item:
        raise ValueError(item["error"])
    if warnings is not None:
        warnings += item["warnings"]
    return item["image"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_identity(predictor: Predictor) -> dict[str, Any]:
    """What identifies the model of a run: the checkpoint file's SHA-256 (a network given directly:
    the SHA-256 of its weights) and the medfocal version; cached on the predictor."""
    cached = getattr(predictor, "_identity", None)
    if cached is not None:
        return cached
    import medfocal

    path = getattr(predictor, "checkpoint_path", None)
    if path is not None and Path(path).is_file():
        info = {"checkpoint": str(Path(path).resolve()), "sha256": _sha256(Path(path)), "sha256_of": "file"}
    else:
        digest = hashlib.sha256()
        for name, tensor in sorted(predictor.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        info = {"checkpoint": None, "sha256": digest.hexdigest(), "sha256_of": "weights"}
    info["medfocal_version"] = medfocal.__version__
    info["task"] = predictor.card.task
    predictor._identity = info
    return info


def default_writers(device: torch.device) -> int:
    """Writer threads of ``predict_folder`` by default: 1 when the model runs on the CPU (its threads
    use the cores), else a quarter of the cores, 1 to 4 (inverting, compressing and writing the cases the
    GPU turns out faster than one thread can)."""
    if device.type == "cpu":
        return 1
    return max(1, min(4, (os.cpu_count() or 1) // 4))


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
    html: bool = False,
    num_parts: int = 1,
    part_id: int = 0,
    num_writers: int | None = None,
) -> InferenceResult:
    """Predict every case of ``source`` into ``output_dir`` with ``predictor`` (see
    :meth:`medfocal.inference.Predictor.predict_folder` for the arguments); never raises per case,
    returns on Ctrl-C with ``interrupted=True``."""
    if save_probabilities not in (None, *PROBABILITY_FORMATS):
        raise ValueError(
            f"save_probabilities: expected one of {PROBABILITY_FORMATS} or None, got {save_probabilities!r}"
        )
    head, card = predictor.head, predictor.card
    start = time.perf_counter()
    all_cases = discover_cases(source)
    refuse_output_in_input(all_cases, source, output_dir)
    cases = select_part(all_cases, num_parts, part_id)
    output_dir = check_output_writable(output_dir)
    remove_stale_temporaries(output_dir)
    remove_stale_temporaries(output_dir / STATE_DIR / "cases")
    merged_name = report_name or head.report_name
    report_path = output_dir / part_report_name(merged_name, num_parts, part_id)
    identity = checkpoint_identity(predictor)
    resumed = record_run(output_dir, identity, overwrite)
    if overwrite:
        previous: dict[str, dict[str, Any]] = {}
    elif resumed:
        previous = read_case_records(output_dir)
    else:  # an output folder of a medfocal without case records: its report says what is done
        previous = {k: v for k, v in read_report(report_path).items() if v.get("status") in ("ok", "skipped")}
    stamp = {"checkpoint_sha256": identity["sha256"][:16], "medfocal_version": identity["medfocal_version"]}

    rows: dict[str, dict[str, Any]] = {}
    failures: list[tuple[str, str]] = []
    todo: list[Case] = []
    for case in cases:
        old = previous.get(case.case_id)
        outputs = head.output_paths(case, output_dir, save_probabilities)
        # done: its record (or old report row) says so and its files (if the head makes any) exist
        done = (
            old is not None and old.get("status") in ("ok", "skipped") and all(p.is_file() for p in outputs)
        )
        if done:
            rows[case.case_id] = {**old, "status": "skipped"}
        else:
            todo.append(case)

    lock = threading.Lock()
    report_lock = threading.Lock()  # one report write at a time (several writer threads)
    last_report = [time.monotonic()]
    bar = progress_bar(progress, len(todo))

    def write_report(force: bool = False) -> None:
        with report_lock:
            with lock:
                if not force and time.monotonic() - last_report[0] < REPORT_EVERY_S:
                    return
                last_report[0] = time.monotonic()
                ordered = [rows[c.case_id] for c in cases if c.case_id in rows]
            write_csv(ordered, report_path)

    def record(row: dict[str, Any]) -> None:
        """Keep the row, durably first (a kill after this line loses nothing of this case)."""
        with contextlib.suppress(OSError):  # a full disk: the row stays in memory, the report says it
            write_case_record(output_dir, row)
        with lock:
            rows[row["case"]] = row
            if row["status"] == "failed":
                failures.append((row["case"], row["error"]))

    def fail(case: Case, message: str) -> None:
        record({"case": case.case_id, "status": "failed", "source": case.source, "error": message, **stamp})

    def finish(job: tuple[Case, Any, torch.Tensor, float, list[str]]) -> dict[str, Any]:
        case, image, output, compute_s, warnings = job
        t0 = time.perf_counter()
        pred = head.finish(case, image, output)
        outputs = head.output_paths(case, output_dir, save_probabilities)
        if outputs:
            head.write(case, pred, outputs)
        row = {"case": case.case_id, "status": "ok", "source": case.source}
        row.update(head.report_row(pred))
        own = row.pop("warnings", "")  # the head's (e.g. an output it could not write)
        row["warnings"] = "; ".join([*warnings, *([own] if own else [])])
        row["compute_s"] = round(compute_s, 4)
        row["postprocess_s"] = round(time.perf_counter() - t0, 4)
        if outputs:
            row["output"] = outputs[0].name
        row.update(stamp)
        return row

    def done_callback(job: tuple, row: dict[str, Any] | None, err: BaseException | None) -> None:
        case = job[0]
        if err is not None:
            fail(case, case_error(case, err))
        else:
            record(row)
        bar.advance()
        with contextlib.suppress(OSError):  # the final write reports a lasting problem
            write_report()

    dataset = _CaseDataset(
        todo, predictor.transforms, card.in_channels, card.spatial_dims, predictor.nonfinite
    )
    on_device = head.finish_on_device  # e.g. segmentation: invert on the GPU, copy back the result
    writers = default_writers(predictor.device) if num_writers is None else num_writers
    interrupted = False
    try:
        with bar, BackgroundWriter(finish, done_callback, max_pending=2, threads=writers) as writer:
            try:
                for item in _loader(dataset, num_workers):
                    case = todo[item["index"]]
                    if "error" in item:
                        fail(case, item["error"])
                        bar.advance()
                        continue
                    t0 = time.perf_counter()
                    try:
                        output, warnings = predictor.predict_checked(item["image"], keep_device=on_device)
                    except Exception as err:
                        fail(case, case_error(case, err))
                        bar.advance()
                        continue
                    warnings = item.get("warnings", []) + warnings
                    writer.submit((case, item["image"], output, time.perf_counter() - t0, warnings))
            except KeyboardInterrupt:  # stop taking cases; leaving the block finishes the queued writes
                interrupted = True
    except KeyboardInterrupt:  # a second Ctrl-C while the last writes finish
        interrupted = True
    write_report(force=True)
    ordered = [rows[c.case_id] for c in cases if c.case_id in rows]
    if not interrupted:  # files made from all cases together (detection: boxes.csv, boxes.json)
        head.finalize(output_dir, ordered)
    if num_parts > 1 and not interrupted:  # the last part to finish writes the merged report
        merge_part_reports(output_dir, merged_name, num_parts, [c.case_id for c in all_cases])
    html_path = None
    if html and not interrupted:
        from medfocal.inference.html_report import inference_cases, write_html_report

        images = inference_cases(head, cases, ordered, output_dir, save_probabilities)
        html_path = write_html_report(ordered, output_dir / HTML_NAME, images, card.foreground_names)
    return InferenceResult(
        ordered,
        failures,
        output_dir,
        report_path,
        time.perf_counter() - start,
        interrupted=interrupted,
        run_info=dict(identity),
        total=len(cases),
        html_path=html_path,
    )
