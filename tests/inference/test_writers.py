"""The writer pool of ``predict_folder`` and the head's finish on the model's device."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medfocal.inference import Predictor
from medfocal.inference.folder import default_writers
from medfocal.inference.writer import BackgroundWriter


def test_pool_runs_items_concurrently_and_close_waits_for_all():
    barrier = threading.Barrier(3, timeout=10)  # passes only if three handlers run at the same time
    done: list[tuple[int, str]] = []
    lock = threading.Lock()

    def handler(item: int) -> int:
        if item < 3:
            barrier.wait()
        if item == 4:
            raise ValueError("bad case 4")
        return item * 10

    def on_done(item, result, err):
        with lock:
            done.append((item, f"error {err}" if err else str(result)))

    with BackgroundWriter(handler, on_done, max_pending=2, threads=3) as writer:
        for item in range(6):
            writer.submit(item)
    assert sorted(done) == [(0, "0"), (1, "10"), (2, "20"), (3, "30"), (4, "error bad case 4"), (5, "50")]
    assert len({t.name for t in writer._threads}) == 3
    assert not any(t.is_alive() for t in writer._threads)


def test_pool_refuses_zero_threads():
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        BackgroundWriter(lambda item: item, lambda *a: None, threads=0)


def test_default_writers(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert default_writers(torch.device("cpu")) == 1
    assert default_writers(torch.device("cuda", 0)) == 4
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert default_writers(torch.device("cuda", 0)) == 4
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_writers(torch.device("cuda", 0)) == 1


def test_several_writers_give_the_same_files_and_report(oracle_ckpt, lesion_cases, tmp_path):
    predictor = Predictor.from_checkpoint(oracle_ckpt, device="cpu")
    source = lesion_cases / "imagesTs"
    one = predictor.predict_folder(source, tmp_path / "one", progress=False, num_writers=1)
    three = predictor.predict_folder(source, tmp_path / "three", progress=False, num_writers=3)
    assert one.ok and three.ok
    cases = [r["case"] for r in one.rows]
    assert len(cases) == 3 and [r["case"] for r in three.rows] == cases  # report in case order
    timing = ("compute_s", "postprocess_s")
    untimed = [[{k: v for k, v in r.items() if k not in timing} for r in res.rows] for res in (one, three)]
    assert untimed[0] == untimed[1]
    for case in cases:
        a = nib.load(tmp_path / "one" / f"{case}.nii.gz")
        b = nib.load(tmp_path / "three" / f"{case}.nii.gz")
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
        assert np.asarray(a.dataobj).any()  # the lesions were found, not two empty masks
    report = (tmp_path / "three" / "report.csv").read_text().splitlines()
    assert len(report) == 4 and all(",ok," in line for line in report[1:])


def test_inversions_from_several_threads_take_turns(oracle_ckpt, lesion_cases, monkeypatch):
    """MONAI's Invertd flips the shared transforms' allow_missing_keys while it runs: the head lets one
    thread invert at a time, and the flags are as before afterwards."""
    from monai.transforms import MapTransform

    from medfocal.inference import discover_cases
    from medfocal.inference.heads import segmentation

    predictor = Predictor.from_checkpoint(oracle_ckpt, device="cpu")
    head = predictor.head
    inside, most = [0], [0]
    from monai.transforms import Invertd

    class Counting(Invertd):
        def __call__(self, data):
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            try:
                time.sleep(0.05)  # long enough for the other threads to try
                return super().__call__(data)
            finally:
                inside[0] -= 1

    assert not hasattr(segmentation, "Invertd")  # invert imports it when called: the patch reaches it
    monkeypatch.setattr("monai.transforms.Invertd", Counting)
    case = discover_cases(sorted(Path(lesion_cases, "imagesTs").glob("*.nii.gz"))[0])[0]
    image = predictor._load(case)
    output = predictor.predict_tensor(image)
    threads = [threading.Thread(target=head.invert, args=(image, output)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    flags = [
        t.allow_missing_keys for t in head.transforms.flatten().transforms if isinstance(t, MapTransform)
    ]
    assert flags and not any(flags)


class _OnAnotherDevice:
    """Stands for a GPU tensor on a CPU-only machine: its device is not the CPU, ``cpu()`` copies back."""

    device = torch.device("cuda", 0)

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value

    def cpu(self) -> torch.Tensor:
        return self.value


def test_only_outputs_on_a_gpu_within_the_size_limit_stay_there(monkeypatch):
    from medfocal.inference import predictor as predictor_module
    from medfocal.inference.predictor import stays_on_device

    small = torch.zeros(2, 8, 8, 8, device="meta")  # a device that is not the CPU, no memory used
    assert stays_on_device(small, keep_device=True)
    assert not stays_on_device(small, keep_device=False)
    assert not stays_on_device(torch.zeros(2, 8, 8, 8), keep_device=True)  # on the CPU already
    monkeypatch.setattr(predictor_module, "DEVICE_OUTPUT_BYTES", small.nbytes - 1)
    assert not stays_on_device(small, keep_device=True)  # a big many-class output goes to the CPU


def test_inversion_falls_back_to_the_cpu_once(oracle_ckpt, caplog, monkeypatch):
    head = Predictor.from_checkpoint(oracle_ckpt, device="cpu").head
    seen: list[str] = []

    def invert(image, probs):
        seen.append(type(probs).__name__)
        if isinstance(probs, _OnAnotherDevice):
            raise RuntimeError("grid_sample: expected all tensors on the same device")
        return probs * 2

    monkeypatch.setattr(head, "invert", invert)
    probs = torch.rand(2, 4, 4, 4)
    with caplog.at_level(logging.WARNING, logger="medfocal.inference.heads.segmentation"):
        first = head.invert_on_device(None, _OnAnotherDevice(probs))
        second = head.invert_on_device(None, _OnAnotherDevice(probs))
    torch.testing.assert_close(first, probs * 2)
    torch.testing.assert_close(second, probs * 2)
    assert seen == ["_OnAnotherDevice", "Tensor", "Tensor"]  # the device once, then the CPU
    failures = [r.getMessage() for r in caplog.records if "inverting on cuda:0 failed" in r.getMessage()]
    assert len(failures) == 1 and "inverting on the CPU from now on" in failures[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu_check.sh runs it)")
def test_finish_on_the_gpu_matches_the_cpu(oracle_ckpt, lesion_cases):
    gpu = Predictor.from_checkpoint(oracle_ckpt, device="cuda")
    cpu = Predictor.from_checkpoint(oracle_ckpt, device="cpu")
    for path in sorted(Path(lesion_cases, "imagesTs").glob("*.nii.gz")):
        from medfocal.inference import discover_cases

        case = discover_cases(path)[0]
        image = gpu._load(case)
        output, _ = gpu.predict_checked(image, keep_device=True)
        assert output.device.type == "cuda"
        on_gpu = gpu.head.finish(case, image, output)
        on_cpu = cpu.head.finish(case, image, output.cpu())
        assert not gpu.head._cpu_inversion  # no fallback: the inversion ran on the GPU
        np.testing.assert_allclose(on_gpu.probabilities, on_cpu.probabilities, atol=1e-4)
        assert (on_gpu.label != on_cpu.label).mean() < 1e-3
