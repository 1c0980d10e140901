"""Execute every notebook in ``notebooks/`` top to bottom, each in its own empty working directory.

The kernel is this interpreter (a kernelspec written to a temporary ``JUPYTER_PATH``, which Jupyter
searches before any user-wide kernel), so the notebooks run against the same environment as the tests.
``MEDFOCAL_NB_FAST=1`` makes the notebooks shrink their data and epochs, and an empty ``MEDFOCAL_DATA``
makes them generate their data instead of reading ``../shared/data``, so the run is the same everywhere.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbclient  # dev dependencies: a broken install fails here instead of skipping every notebook
import nbformat
import pytest
from ipykernel import kernelspec

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300
PREFIX_PROBE = "import sys; print(sys.prefix)"


@pytest.fixture
def this_python_kernel(tmp_path_factory, monkeypatch) -> str:
    """A ``python3`` kernelspec whose argv is ``sys.executable``, found first by jupyter_client."""
    root = tmp_path_factory.mktemp("jupyter")
    kernelspec.write_kernel_spec(root / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    return "python3"


def test_notebooks_found():
    names = [p.name for p in NOTEBOOKS]
    assert (
        names
        == [
            "01_focal_loss_explained.ipynb",
            "02_train_and_inspect.ipynb",
            "03_batch_inference_report.ipynb",
            "04_detection.ipynb",
        ][: len(names)]
    )
    assert names, "no notebooks in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_outputs_stripped(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; regenerate or clear them before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch, this_python_kernel: str):
    monkeypatch.setenv("MEDFOCAL_NB_FAST", "1")
    # the notebooks use real data from MEDFOCAL_DATA when present; the tests always take generated data
    monkeypatch.setenv("MEDFOCAL_DATA", str(tmp_path / "no_shared_data"))
    monkeypatch.chdir(tmp_path)
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PREFIX_PROBE))
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=this_python_kernel,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    kernel_prefix = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert kernel_prefix == sys.prefix, f"kernel ran in {kernel_prefix!r}, expected this venv {sys.prefix!r}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, json.dumps(errors[0], indent=1)[:2000]
    print(f"{path.name}: {seconds:.1f} s")
