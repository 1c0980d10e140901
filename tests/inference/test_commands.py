from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np

from medfocal.cli import main


def test_infer_cli_exit_codes_and_outputs(oracle_ckpt, lesion_cases, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    image = sorted((lesion_cases / "imagesTs").glob("*.nii.gz"))[0]
    shutil.copy(image, inp / image.name)
    out = tmp_path / "out"
    args = [
        "infer",
        "-c",
        str(oracle_ckpt),
        "-i",
        str(inp),
        "-o",
        str(out),
        "--no-progress",
        "--num-workers",
        "0",
    ]
    assert main(args) == 0
    assert "1 predicted" in capsys.readouterr().out
    mask = nib.load(out / image.name)
    assert np.allclose(mask.affine, nib.load(image).affine)

    (inp / "broken.nii.gz").write_bytes(b"garbage")
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "ERROR broken:" in captured.err and "broken.nii.gz" in captured.err
    assert "1 skipped" in captured.out and "1 failed" in captured.out

    assert main([*args[:5], "-o", str(inp), "--no-progress"]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert main(["infer", "-c", str(tmp_path / "none.ckpt"), "-i", str(inp), "-o", str(out)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
