"""Hostile and careless use of the command line, end to end on the demo's generated data.

Each case goes through ``medfocal.cli.main([...])`` as a user's command would, and checks the exit
status and the one clear message (the file, the problem, the fix), never a traceback. Cases:

- ``fit``: NaN voxels and non-integer labels stopped before the first step (default ``check: quick``);
  a loss that turns NaN stops training with a message; ``last.ckpt`` holds the last trained step;
- a malformed ``dataset.json`` (syntax error, ``[]``, an entry without ``image``, ``"labels": "oops"``)
  in ``check-data`` and ``fit``; a preset name that does not exist;
- ``test`` / ``predict`` for segmentation (test split without labels) and classification;
- ``evaluate`` with float, negative and undeclared labels; ``demo`` ending on its time budget.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from medfocal.cli import main
from medfocal.presets import find_config
from medfocal.synthetic import make_classification_npz, make_lesion_dataset

# a demo preset made tiny: 3 training cases of 24x24x16, 2 steps per epoch, a 3-level U-Net of 4..16
TINY = [
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.roi_size=[16,16,16]",
    "--data.init_args.num_samples=2",
    "--data.init_args.cache=none",
    "--model.init_args.model.init_args.channels=[4,8,16]",
]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """The demo's generated data, small: 4 training + 2 held-out (unlabelled test split) cases."""
    return make_lesion_dataset(
        tmp_path_factory.mktemp("demo") / "data", n_train=4, n_test=2, shape=(24, 24, 16), seed=0
    )


def _copy(demo_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(demo_data, root)
    return root


def _seg(command: str, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        command,
        "--config",
        str(find_config("demo.yaml")),
        f"--data.init_args.layout={data}",
        f"--trainer.default_root_dir={out}",
        *TINY,
        *extra,
    ]


def _no_traceback(text: str) -> None:
    for word in ("Traceback", "AttributeError", "KeyError"):
        assert word not in text, text


# -- fit --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_last_checkpoint_holds_the_last_trained_step(demo_data, tmp_path):
    # demo.yaml validates every 2 epochs; max_epochs=3 left last.ckpt at the end of epoch 2 (step 4 of 6)
    out = tmp_path / "run"
    assert main(_seg("fit", demo_data, out, "--trainer.max_epochs=3")) == 0
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6
    # resuming from it trains the remaining epoch only (epoch 3 of 4), not epoch 2 again
    assert (
        main(
            _seg(
                "fit",
                demo_data,
                out,
                "--trainer.max_epochs=4",
                f"--ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
            )
        )
        == 0
    )
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


def _poison(root: Path) -> tuple[Path, Path]:
    image_path, label_path = root / "imagesTr" / "case_001.nii.gz", root / "labelsTr" / "case_002.nii.gz"
    image = nib.load(image_path)
    data = np.asarray(image.dataobj, dtype=np.float32).copy()
    data[5, 6, 7] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), image_path)
    label = nib.load(label_path)
    values = np.asarray(label.dataobj, dtype=np.float32).copy()
    values[values > 0] = 0.5
    nib.save(nib.Nifti1Image(values, label.affine), label_path)
    return image_path, label_path


def test_fit_stops_before_the_first_step_on_nan_voxels_and_non_integer_labels(demo_data, tmp_path, capsys):
    root = _copy(demo_data, tmp_path)
    image_path, label_path = _poison(root)
    assert main(_seg("fit", root, tmp_path / "run", "--trainer.max_epochs=1")) == 1
    err = capsys.readouterr().err
    assert err.startswith("medfocal fit: 2 problem(s) in the dataset:\n")
    assert f"  - {image_path}: 1 NaN/Inf voxels in the image" in err
    assert f"  - {label_path}: label values must be integers, found [0.5] (set label_threshold?)" in err
    _no_traceback(err)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_fit_stops_with_a_message_when_the_loss_turns_nan(demo_data, tmp_path, capsys):
    root = _copy(demo_data, tmp_path)
    _poison(root)
    args = _seg("fit", root, tmp_path / "run", "--trainer.max_epochs=5", "--data.init_args.check=none")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "medfocal fit: the training loss became NaN/Inf (epoch 0, between steps 0 and 2)" in err
    assert "--trainer.gradient_clip_val" in err
    _no_traceback(err)


# -- malformed dataset.json and preset names ----------------------------------------------------------

MALFORMED = {
    "syntax": ('{"training": [', "not valid JSON (Expecting value at line 1, column 15)"),
    "list": ("[]", "expected a JSON object with a 'training' list, got a JSON list"),
    "no_image": (
        '{"labels": {"0": "bg", "1": "lesion"}, "training": [{"label": "./labelsTr/case_000.nii.gz"}]}',
        'training[0] = {"label": "./labelsTr/case_000.nii.gz"} lacks image',
    ),
    "labels_string": (
        '{"labels": "oops", "training": [{"image": "./imagesTr/case_000.nii.gz", '
        '"label": "./labelsTr/case_000.nii.gz"}]}',
        '\'labels\' must be a mapping such as {"0": "background", "1": "tumour"}, got "oops"',
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_dataset_json_is_named_with_what_is_wrong(case, demo_data, tmp_path, capsys):
    root = _copy(demo_data, tmp_path)
    text, expected = MALFORMED[case]
    (root / "dataset.json").write_text(text)
    message = f"{root / 'dataset.json'}: {expected}"
    assert main(["check-data", str(root)]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "no problems found" not in captured.out
    _no_traceback(captured.err + captured.out)
    assert main(["check-data", "--config", "demo", f"--data.init_args.layout={root}"]) == 1
    err = capsys.readouterr().err
    assert f"check-data: 1 problem(s) in the dataset:\n  - {message}" in err
    _no_traceback(err)
    assert main(_seg("fit", root, tmp_path / "run", "--trainer.max_epochs=1")) != 0
    err = capsys.readouterr().err
    assert message in err
    _no_traceback(err)


def test_a_preset_that_does_not_exist_lists_the_presets_and_the_closest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", "stroke_isle"]) == 2
    err = capsys.readouterr().err
    assert (
        "--config stroke_isle: no such file and no preset of that name. Did you mean 'stroke_isles'?" in err
    )
    from medfocal.presets import list_presets

    assert f"Presets: {', '.join(list_presets())} (or give the path of a YAML file)" in err
    assert main(["check-data", "--config", "dmeo"]) == 2
    assert "Did you mean 'demo'?" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- test and predict -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_segmentation_test_and_predict_on_generated_data(demo_data, tmp_path, capsys):
    root = _copy(demo_data, tmp_path)
    out = tmp_path / "run"
    assert main(_seg("fit", root, out, "--trainer.max_epochs=1")) == 0
    ckpt = f"--ckpt_path={out / 'checkpoints' / 'last.ckpt'}"
    capsys.readouterr()
    # the test split has no labels: a clear message (it crashed with KeyError: 'label')
    assert main(_seg("test", root, out, ckpt)) == 1
    err = capsys.readouterr().err
    assert "the test split's 2 case(s) have no labels, so `medfocal test` cannot score them" in err
    assert "medfocal infer" in err and "medfocal evaluate" in err
    _no_traceback(err)
    # predict needs no labels; it says where masks are written from
    assert main(_seg("predict", root, out, ckpt)) == 0
    assert "medfocal infer" in capsys.readouterr().err
    # label one test case: test scores it (and only it)
    meta = json.loads((root / "dataset.json").read_text())
    meta["test"][0] = {"image": meta["test"][0], "label": meta["test"][0].replace("imagesTs", "labelsTs")}
    (root / "dataset.json").write_text(json.dumps(meta))
    assert main(_seg("test", root, out, ckpt)) == 0
    assert "test/dice" in capsys.readouterr().out


CLASSIFICATION = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "max_epochs": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    },
    "model": {
        "class_path": "medfocal.tasks.ClassificationModule",
        "init_args": {
            "model": {
                "class_path": "monai.networks.nets.Classifier",
                "init_args": {"in_shape": [1, 28, 28], "classes": 3, "channels": [4, 8], "strides": [2, 2]},
            },
            "loss": {"class_path": "medfocal.losses.FocalLoss", "init_args": {"gamma": 2.0}},
        },
    },
    "data": {
        "class_path": "medfocal.data.ClassificationDataModule",
        "init_args": {"layout": "toy.npz", "batch_size": 16, "val_batch_size": 32, "num_workers": 0},
    },
}


def test_classification_fit_test_and_predict_on_generated_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_classification_npz(tmp_path / "toy.npz", n=(48, 16, 16))
    (tmp_path / "cls.yaml").write_text(yaml.safe_dump(CLASSIFICATION))
    args = ["--config", "cls.yaml", "--trainer.default_root_dir=run"]
    assert main(["fit", *args]) == 0
    ckpt = "--ckpt_path=run/checkpoints/last.ckpt"
    capsys.readouterr()
    assert main(["test", *args, ckpt]) == 0
    assert "test/balanced_accuracy" in capsys.readouterr().out
    assert main(["predict", *args, ckpt]) == 0


# -- evaluate ---------------------------------------------------------------------------------------------


def test_evaluate_refuses_fractional_and_negative_labels_and_reports_undeclared_ones(
    demo_data, tmp_path, capsys
):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    shutil.copytree(demo_data / "labelsTs", gt_dir)
    shutil.copytree(demo_data / "labelsTs", pred_dir)
    first = sorted(gt_dir.glob("*.nii.gz"))[0]
    label = nib.load(first)
    values = np.asarray(label.dataobj).astype(np.float32)
    nib.save(nib.Nifti1Image(values * 0.5, label.affine), first)  # lesion stored as 0.5
    assert main(["evaluate", "-p", str(pred_dir), "-g", str(gt_dir), "-o", ""]) == 2
    err = capsys.readouterr().err
    assert f"{first}: mask values must be integer labels, found non-integer values (0.5" in err
    _no_traceback(err)
    # a probability map on purpose: --threshold binarises it, and the prediction is then perfect
    assert main(["evaluate", "-p", str(pred_dir), "-g", str(gt_dir), "-o", "", "--threshold", "0.5"]) == 0
    assert "1.000±0.000" in capsys.readouterr().out
    negative = values.astype(np.int16)
    negative[0, 0, 0] = -1
    nib.save(nib.Nifti1Image(negative, label.affine), first)
    assert main(["evaluate", "-p", str(pred_dir), "-g", str(gt_dir), "-o", ""]) == 2
    assert f"{first}: negative label values [-1]" in capsys.readouterr().err
    shutil.copy(demo_data / "labelsTs" / first.name, first)
    prediction = nib.load(pred_dir / first.name)
    seven = np.asarray(prediction.dataobj).copy()
    seven[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(seven, prediction.affine), pred_dir / first.name)
    assert main(["evaluate", "-p", str(pred_dir), "-g", str(gt_dir), "--labels", "1", "-o", ""]) == 0
    err = capsys.readouterr().err
    assert (
        f"label 7 in the prediction of 1 case(s) ({first.name[:-7]}) is not among the scored labels [1]"
        in err
    )


# -- demo ---------------------------------------------------------------------------------------------------


def test_demo_summary_says_when_training_ended_on_its_time_budget(tmp_path, capsys):
    from medfocal.demo import DemoResult, print_summary

    result = DemoResult(
        tmp_path, tmp_path / "last.ckpt", tmp_path, tmp_path / "m.csv", tmp_path / "o.png",
        {"case_004": 0.56}, 300.0, epochs_done=10, epochs_planned=100, minutes=5.0,
    )  # fmt: skip
    print_summary(result)
    out = " ".join(capsys.readouterr().out.split())
    assert "trained 10 of 100 epochs in 300 s" in out
    assert "training stopped at its time budget (--minutes 5) after 10 of 100 epochs" in out
    assert "--minutes 10" in out
    finished = DemoResult(**{**result.__dict__, "epochs_done": 100})
    print_summary(finished)
    assert "time budget" not in capsys.readouterr().out


def test_demo_ending_on_its_time_budget_still_reports_and_says_so(tmp_path, capsys):
    from medfocal.demo import print_summary, run_demo

    # one second of training: the last trained step is kept (last.ckpt), inference runs, the summary warns
    result = run_demo(
        tmp_path / "demo", epochs=500, minutes=1 / 60, n_train=4, n_test=1, shape=(24, 24, 16),
        extra_args=TINY, progress=False,
    )  # fmt: skip
    assert result.stopped_on_time and result.epochs_done < 500 and result.epochs_planned == 500
    print_summary(result)
    assert "training stopped at its time budget" in " ".join(capsys.readouterr().out.split())
