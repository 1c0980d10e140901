"""Without the optional extras, medfocal still imports, and reaching for an extra says how to install it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medfocal._optional import MissingExtraError, require

_EXTRAS = ("onnx", "onnxruntime", "pydicom", "highdicom", "mlflow")
_BLOCK = f"import sys\nfor m in {_EXTRAS!r}:\n    sys.modules[m] = None\n"


@pytest.mark.slow
def test_modules_import_without_extras():
    code = _BLOCK + (
        "import medfocal.export, medfocal.inference.dicom_seg, medfocal.inference.html_report\n"
        "import medfocal.data.readers\n"
        "from medfocal.export import load_model\n"
        "try:\n"
        "    load_model('model.onnx')\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # a missing file is reported before the missing runtime
    assert done.stdout.strip() == "FileNotFoundError model.onnx: model not found"


def test_onnx_network_without_onnxruntime(tmp_path, monkeypatch):
    from medfocal.export import load_onnx

    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(
        MissingExtraError, match=r'^running an ONNX model needs onnxruntime: pip install "medfocal\[onnx\]"$'
    ):
        load_onnx(path)


def test_require_message():
    with pytest.raises(MissingExtraError) as err:
        require("no_such_module_xyz.sub", "dicom", "reading DICOM")
    assert str(err.value) == 'reading DICOM needs no_such_module_xyz: pip install "medfocal[dicom]"'
    assert isinstance(err.value, ImportError)
    assert require("json", "dev", "x").dumps([1]) == "[1]"
