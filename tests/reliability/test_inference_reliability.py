"""Hostile and careless use of inference through the Python API, on the demo's generated data (issue 15).

Each test is one case of the issue that once gave a silent wrong result, a lost record or a misleading
message: non-finite input (1), a 2D slice given to a 3D model (2), kill -9 / Ctrl-C during a run (7), a
resume with another checkpoint (8), a read-only output folder (10), a truncated checkpoint (11).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import oracle_checkpoint

import medfocal
from medfocal.inference import Predictor
from medfocal.inference.writer import check_output_writable

REPO = Path(__file__).resolve().parents[2]


def _images(root: Path) -> list[Path]:
    return sorted((root / "imagesTs").glob("*.nii.gz"))


def _report(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {r["case"]: r for r in csv.DictReader(fh)}


def _copy_with(src: Path, dst: Path, edit=None, data: np.ndarray | None = None) -> Path:
    """``src`` saved as ``dst`` with the same affine, its voxels changed by ``edit`` (or replaced)."""
    img = nib.load(src)
    values = np.asarray(img.dataobj, dtype=np.float32).copy() if data is None else data
    if edit is not None:
        edit(values)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, img.affine), dst)
    return dst


def _corner(values: np.ndarray, value: float) -> None:
    values[0, 0, 0] = value


# ---------------------------------------------------------------------------------------------- item 1
@pytest.mark.parametrize(
    ("value", "stage"), [(np.nan, "in the image"), (np.inf, "in the image"), (-np.inf, "in the image")]
)
def test_nonfinite_voxel_fails_the_case_instead_of_an_empty_mask(ckpt, demo_data, tmp_path, value, stage):
    src = _images(demo_data)[0]
    bad = _copy_with(src, tmp_path / "in" / src.name, lambda v: _corner(v, value))
    out = tmp_path / "out"
    result = Predictor.from_checkpoint(ckpt).predict_folder(bad.parent, out, num_workers=0, progress=False)
    assert result.counts == {"ok": 0, "skipped": 0, "failed": 1} and result.exit_code == 1
    ((case, message),) = result.failures
    assert message == (
        f"{bad}: 1 non-finite voxel(s) (NaN/Inf) {stage}: fix or mask them in the file, or pass "
        "nonfinite='replace' (--nonfinite replace) to set them to the image minimum and flag the case "
        "in the report"
    )
    assert not (out / src.name).exists()
    assert _report(out / "report.csv")[case]["status"] == "failed"


def test_values_overflowing_in_preprocessing_fail_the_case(mri_ckpt, demo_data, tmp_path):
    """Values near the float32 maximum are finite on disk but overflow the z-score of ``modality: mri``."""
    src = _images(demo_data)[0]
    bad = _copy_with(src, tmp_path / "in" / src.name, lambda v: v.__setitem__((slice(0, 4), 0, 0), 3.0e38))
    result = Predictor.from_checkpoint(mri_ckpt).predict_folder(bad.parent, tmp_path / "o", progress=False)
    ((_, message),) = result.failures
    assert message.startswith(f"{bad}: preprocessing gave ") and "non-finite value(s)" in message
    assert "rescale the image, or pass nonfinite='replace'" in message
    # the same file loads fine and its overflow is the only problem: the clean file is predicted
    clean = Predictor.from_checkpoint(mri_ckpt).predict_folder(src, tmp_path / "o2", progress=False)
    assert clean.ok


def test_nonfinite_replace_predicts_and_flags_the_case(ckpt, demo_data, tmp_path):
    src = _images(demo_data)[0]
    clean = Predictor.from_checkpoint(ckpt).predict_volume(src)
    minimum = float(np.asarray(nib.load(src).dataobj).min())

    def two_bad(values: np.ndarray) -> None:
        values[0, 0, 0] = np.nan
        values[-1, -1, -1] = np.inf

    bad = _copy_with(src, tmp_path / "in" / src.name, two_bad)
    predictor = Predictor.from_checkpoint(ckpt, nonfinite="replace")
    result = predictor.predict_folder(bad.parent, tmp_path / "out", progress=False)
    assert result.ok
    row = _report(tmp_path / "out" / "report.csv")[src.name[: -len(".nii.gz")]]
    assert row["status"] == "ok"
    assert row["warnings"] == f"2 non-finite input voxel(s) set to {minimum:g}"
    mask = np.asarray(nib.load(tmp_path / "out" / src.name).dataobj)
    assert mask.sum() > 100 and np.array_equal(mask, clean.label)  # the corners are background anyway
    single = predictor.predict_volume(bad)
    assert single.statistics["warnings"] == row["warnings"] and np.array_equal(single.label, clean.label)


def test_nonfinite_probabilities_of_the_network(demo_data, tmp_path):
    """A network giving NaN (here: a NaN bias) fails the case, or with "replace" is flagged (empty mask)."""
    broken = oracle_checkpoint(tmp_path / "nan.ckpt", roi_size=[24, 24, 16], threshold=float("nan"))
    src = _images(demo_data)[0]
    result = Predictor.from_checkpoint(broken).predict_folder(src, tmp_path / "a", progress=False)
    ((_, message),) = result.failures
    assert message.startswith(f"{src}: the network gave ") and "non-finite probabilities" in message
    with pytest.raises(ValueError, match="non-finite probabilities"):
        Predictor.from_checkpoint(broken).predict_volume(src)
    flagged = Predictor.from_checkpoint(broken, nonfinite="replace").predict_folder(
        src, tmp_path / "b", progress=False
    )
    assert flagged.ok and "non-finite probabilities from the network set to 0" in flagged.rows[0]["warnings"]


def test_nonfinite_option_is_validated(ckpt):
    with pytest.raises(ValueError, match=r"nonfinite: expected one of \('error', 'replace'\), got 'zero'"):
        Predictor.from_checkpoint(ckpt, nonfinite="zero")


# ---------------------------------------------------------------------------------------------- item 2
def test_single_slice_given_to_a_3d_model_is_refused(ckpt, demo_data, tmp_path):
    src = _images(demo_data)[0]
    data = np.asarray(nib.load(src).dataobj, dtype=np.float32)[:, :, 16:17]
    flat = _copy_with(src, tmp_path / "in" / "slice.nii.gz", data=data)
    result = Predictor.from_checkpoint(ckpt).predict_folder(flat.parent, tmp_path / "out", progress=False)
    ((_, message),) = result.failures
    assert message.startswith(
        f"{flat}: the model is 3D (patch size [24, 24, 16], spacing [1.0, 1.0, 1.5] mm) and needs every "
        "axis of the preprocessed image to have at least [6, 6, 4] voxels; this image is ["
    )
    assert "after preprocessing (shape [48, 48, 1] on disk)" in message
    assert "(a single slice needs a 2D model)" in message
    assert not (tmp_path / "out" / "slice.nii.gz").exists()
    with pytest.raises(ValueError, match=r"slice\.nii\.gz: the model is 3D"):
        Predictor.from_checkpoint(ckpt).predict_volume(flat)


def test_a_thin_but_usable_slab_is_still_predicted(ckpt, demo_data, tmp_path):
    """8 slices of 2.5 mm are 13 voxels of 1.5 mm: enough for a 16-voxel window (no over-eager refusal)."""
    src = _images(demo_data)[0]
    data = np.asarray(nib.load(src).dataobj, dtype=np.float32)[:, :, 12:20]
    slab = _copy_with(src, tmp_path / "in" / "slab.nii.gz", data=data)
    result = Predictor.from_checkpoint(ckpt).predict_folder(slab, tmp_path / "out", progress=False)
    assert result.ok, result.failures


# ---------------------------------------------------------------------------------------------- item 7
def test_resume_keeps_the_rows_of_finished_cases(ckpt, demo_data, tmp_path):
    """The report is rebuilt from per-case records: a run killed before writing its report loses nothing."""
    out = tmp_path / "out"
    first = Predictor.from_checkpoint(ckpt).predict_folder(demo_data / "imagesTs", out, progress=False)
    before = _report(out / "report.csv")
    (out / "report.csv").unlink()  # as after kill -9 before the end
    again = Predictor.from_checkpoint(ckpt).predict_folder(demo_data / "imagesTs", out, progress=False)
    assert first.counts["ok"] == 3 and again.counts == {"ok": 0, "skipped": 3, "failed": 0}
    after = _report(out / "report.csv")
    for case, row in before.items():
        assert after[case]["status"] == "skipped"
        assert {k: v for k, v in after[case].items() if k != "status"} == {
            k: v for k, v in row.items() if k != "status"
        }
        assert float(after[case]["lesion_volume_ml"]) > 0


_SCRIPT = """
import sys, time
from medfocal.inference import Predictor
ckpt, source, out, delay, workers = sys.argv[1:6]
predictor = Predictor.from_checkpoint(ckpt, device="cpu")
forward = predictor.model.forward
def slow(x):
    time.sleep(float(delay))
    return forward(x)
predictor.model.forward = slow
result = predictor.predict_folder(source, out, progress=False, num_workers=int(workers))
print(result.summary.splitlines()[0], flush=True)
sys.exit(result.exit_code)
"""


@pytest.fixture(scope="module")
def six_cases(tmp_path_factory) -> Path:
    from medfocal.synthetic import make_lesion_dataset

    root = make_lesion_dataset(tmp_path_factory.mktemp("six"), n_train=0, n_test=6, shape=(32, 32, 16))
    return root / "imagesTs"


def _start(ckpt: Path, source: Path, out: Path, workers: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = "1"
    args = [sys.executable, "-c", _SCRIPT, str(ckpt), str(source), str(out), "0.15", str(workers)]
    # a run started in the background by a non-interactive shell (nohup ... &, some CI runners) inherits
    # SIGINT ignored, and an ignored signal stays ignored across exec (Python then installs no
    # KeyboardInterrupt handler): give the child the default disposition, as a terminal does
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _wait_for_records(proc: subprocess.Popen, out: Path, n: int, timeout: float = 180.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(list((out / ".medfocal" / "cases").glob("case_*.json")))
        if done >= n:
            return done
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {n} case(s) were done: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no {n} finished case(s) within {timeout} s")


@pytest.mark.slow
def test_kill_9_then_resume_reports_every_case_with_its_fields(ckpt, six_cases, tmp_path):
    out = tmp_path / "out"
    proc = _start(ckpt, six_cases, out, workers=0)
    _wait_for_records(proc, out, 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    finished = {p.stem for p in (out / ".medfocal" / "cases").glob("case_*.json")}
    assert 2 <= len(finished) < 6, "killed mid-run"

    result = Predictor.from_checkpoint(ckpt).predict_folder(six_cases, out, progress=False)
    assert result.counts["skipped"] == len(finished) and result.counts["failed"] == 0
    rows = _report(out / "report.csv")
    assert sorted(rows) == [f"case_{i:03d}" for i in range(6)]
    for case, row in rows.items():
        assert row["status"] == ("skipped" if case in finished else "ok")
        assert row["lesion_volume_ml"] and row["lesion_max_prob"] and row["compute_s"], row
    clean = tmp_path / "clean"
    Predictor.from_checkpoint(ckpt).predict_folder(six_cases, clean, progress=False)
    for image in sorted(six_cases.glob("*.nii.gz")):
        a, b = nib.load(out / image.name), nib.load(clean / image.name)
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


@pytest.mark.slow
def test_ctrl_c_writes_the_report_and_exits_130_without_a_traceback(ckpt, six_cases, tmp_path):
    out = tmp_path / "out"
    proc = _start(ckpt, six_cases, out, workers=1)
    _wait_for_records(proc, out, 1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "interrupted:" in stdout and "run again to resume" in stdout
    rows = _report(out / "report.csv")
    records = {p.stem for p in (out / ".medfocal" / "cases").glob("case_*.json")}
    assert set(rows) == records and 1 <= len(rows) < 6
    assert all(r["status"] == "ok" and r["lesion_volume_ml"] for r in rows.values())


# ---------------------------------------------------------------------------------------------- item 8
def test_resume_with_another_checkpoint_is_refused_unless_overwrite(ckpt, other_ckpt, demo_data, tmp_path):
    out = tmp_path / "out"
    source = demo_data / "imagesTs"
    Predictor.from_checkpoint(ckpt).predict_folder(source, out, progress=False)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    run = json.loads((out / ".medfocal" / "run.json").read_text())
    assert run["sha256"] == sha and run["checkpoint"] == str(ckpt.resolve())
    assert run["medfocal_version"] == medfocal.__version__
    rows = _report(out / "report.csv")
    assert {r["checkpoint_sha256"] for r in rows.values()} == {sha[:16]}
    assert {r["medfocal_version"] for r in rows.values()} == {medfocal.__version__}
    masks = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}

    other = Predictor.from_checkpoint(other_ckpt)
    with pytest.raises(ValueError) as info:
        other.predict_folder(source, out, progress=False)
    message = str(info.value)
    assert message.startswith(
        f"{out}: its outputs were made with checkpoint {ckpt.resolve()} (sha256 {sha[:16]}"
    )
    assert f"this run uses {other_ckpt.resolve()}" in message and "overwrite=True (--overwrite)" in message
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == masks

    redone = other.predict_folder(source, out, progress=False, overwrite=True)
    assert redone.counts["ok"] == 3
    new_sha = hashlib.sha256(other_ckpt.read_bytes()).hexdigest()
    assert json.loads((out / ".medfocal" / "run.json").read_text())["sha256"] == new_sha
    new_rows = _report(out / "report.csv")
    for case in rows:  # a higher threshold: smaller lesions, so the masks were really redone
        assert float(new_rows[case]["lesion_volume_ml"]) < float(rows[case]["lesion_volume_ml"])
    assert other.predict_folder(source, out, progress=False).counts["skipped"] == 3


# ---------------------------------------------------------------------------------------------- item 10
@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write to: ``chmod 555``, or ``chattr +i`` when running as root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK) and shutil.which("chattr"):  # root ignores the mode
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        (folder / "probe").touch()
    except OSError:
        pass  # expected: the folder is read-only, which is what the tests need
    else:
        (folder / "probe").unlink()
        # justified: root ignores file modes; without chattr +i no folder can be made read-only here
        pytest.skip("cannot make a read-only folder here (root without chattr)")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_read_only_output_is_one_error_before_any_case(ckpt, demo_data, read_only_dir, monkeypatch):
    with pytest.raises(ValueError) as info:
        check_output_writable(read_only_dir)
    message = str(info.value)
    assert message.startswith(f"{read_only_dir}: the output folder is not writable (")
    assert message.endswith("); choose another output folder (-o) or fix its permissions")
    predictor = Predictor.from_checkpoint(ckpt)
    calls: list = []
    monkeypatch.setattr(predictor, "predict_checked", lambda image: calls.append(image))
    with pytest.raises(ValueError, match="the output folder is not writable"):
        predictor.predict_folder(demo_data / "imagesTs", read_only_dir / "sub", progress=False)
    assert calls == []


def test_output_under_a_file_is_one_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"file: the output path is a file, not a folder"):
        check_output_writable(blocker)
    with pytest.raises(ValueError, match=r"out: the output folder is not writable \(Not a directory\)"):
        check_output_writable(blocker / "out")


# ---------------------------------------------------------------------------------------------- item 11
def test_truncated_checkpoint_is_called_corrupt(ckpt, tmp_path):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cut\.ckpt: the checkpoint file is truncated or corrupt") as info:
        Predictor.from_checkpoint(cut)
    assert "--trust-checkpoint does not help" in str(info.value)
