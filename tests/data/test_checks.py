"""Input validation: each bad input raises DataValidationError naming the file; check-data CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from _data_files import OBLIQUE, lesion_case, write_nifti

from medfocal.cli.check_data import main as main_check_data
from medfocal.data import DataValidationError, PreprocessingSpec, SegmentationDataModule, validate_records

SPEC = PreprocessingSpec()


def _case(tmp_path: Path, name: str = "c0", shape=(20, 18, 12), channels: int = 1, **label_kw) -> dict:
    image, label = lesion_case(shape=shape)
    if channels > 1:
        image = np.stack([image] * channels, axis=-1)
    img = write_nifti(tmp_path / f"{name}_img.nii.gz", image)
    lbl = write_nifti(tmp_path / f"{name}_seg.nii.gz", label, label_kw.get("affine", OBLIQUE), dtype=np.uint8)
    return {"image": str(img), "label": str(lbl), "case": name, "split": "train"}


def _problems(records, **kwargs) -> list[str]:
    with pytest.raises(DataValidationError) as info:
        validate_records(records, SPEC, **kwargs)
    assert isinstance(info.value, ValueError)
    return info.value.problems


def test_clean_dataset_passes_and_counts_voxels(tmp_path):
    summaries, problems = validate_records([_case(tmp_path)], SPEC, num_classes=3, in_channels=1)
    assert problems == []
    (summary,) = summaries
    assert summary.shape == (20, 18, 12) and summary.channels == 1
    np.testing.assert_allclose(summary.spacing, np.linalg.norm(OBLIQUE[:3, :3], axis=0), atol=1e-3)
    _, label = lesion_case()
    assert summary.label_counts.tolist() == np.bincount(label.reshape(-1), minlength=3).tolist()


def test_missing_files(tmp_path):
    record = _case(tmp_path)
    Path(record["label"]).unlink()
    record2 = dict(_case(tmp_path, "c1"), image=str(tmp_path / "nope.nii.gz"))
    problems = _problems([record, record2])
    assert any("c0_seg.nii.gz: missing label file" in p for p in problems)
    assert any("nope.nii.gz: missing image file" in p for p in problems)


@pytest.mark.parametrize("full", [True, False])
def test_corrupt_file(tmp_path, full):
    record = _case(tmp_path)
    Path(record["image"]).write_bytes(b"this is not a nifti file")
    (problem,) = _problems([record], full=full)
    assert "c0_img.nii.gz: unreadable or corrupt image" in problem


def test_truncated_file_found_by_full_check(tmp_path):
    record = _case(tmp_path, shape=(40, 40, 30))
    data = Path(record["image"]).read_bytes()
    Path(record["image"]).write_bytes(data[: len(data) // 2])
    problems = _problems([record], full=True)
    assert any("c0_img.nii.gz: unreadable or corrupt" in p for p in problems)


def test_shape_mismatch(tmp_path):
    record = _case(tmp_path)
    write_nifti(Path(record["label"]), np.zeros((20, 18, 11), np.uint8))
    (problem,) = _problems([record])
    assert "c0_seg.nii.gz: shape (20, 18, 11) differs from image (20, 18, 12)" in problem


def test_affine_mismatch_beyond_tolerance(tmp_path):
    shifted = OBLIQUE.copy()
    shifted[0, 3] += 0.5
    record = _case(tmp_path, affine=shifted)
    (problem,) = _problems([record], affine_atol=1e-3)
    assert "c0_seg.nii.gz: affine differs from the image's by 0.5" in problem
    _, ok = validate_records([record], SPEC, affine_atol=1.0)
    assert ok == []


def test_label_values_outside_declared_classes(tmp_path):
    (problem,) = _problems([_case(tmp_path)], num_classes=2)
    assert "c0_seg.nii.gz: label values [2] outside the declared classes 0..1" in problem


def test_float_labels_that_are_not_integers(tmp_path):
    record = _case(tmp_path)
    write_nifti(Path(record["label"]), np.full((20, 18, 12), 0.5, np.float32))
    (problem,) = _problems([record])
    assert "c0_seg.nii.gz: label values must be integers, found [0.5" in problem


def test_undeclared_non_index_labels(tmp_path):
    record = _case(tmp_path)
    _, label = lesion_case()
    write_nifti(Path(record["label"]), (label > 0).astype(np.uint8) * 255, dtype=np.uint8)
    (problem,) = _problems([record])
    assert "label values [0, 255] are not consecutive class indices" in problem and "label_map" in problem
    spec = PreprocessingSpec(label_map={255: 1})
    assert validate_records([record], spec)[1] == []


def test_2d_photo_with_3d_spec(tmp_path):
    from _data_files import write_png

    image = write_png(tmp_path / "a.png", np.zeros((8, 10, 3)))
    mask = write_png(tmp_path / "m.png", np.zeros((8, 10)))
    (problem,) = _problems([{"image": str(image), "label": str(mask), "case": "a"}])
    assert "a.png: 2D image (10, 8) but preprocessing.spatial_dims is 3" in problem
    assert (
        validate_records([{"image": str(image), "label": str(mask)}], PreprocessingSpec(modality="rgb"))[1]
        == []
    )


def test_check_data_path_with_overrides(lesion_images_2d, capsys):
    argv = [
        str(lesion_images_2d),
        "--data.preprocessing.modality",
        "rgb",
        "--data.preprocessing.label_map",
        "{255: 1}",
    ]
    assert main_check_data(argv) == 0
    assert "classes (2)" in capsys.readouterr().out


def test_nan_voxels(tmp_path):
    record = _case(tmp_path)
    image, _ = lesion_case()
    image[1, 2, 3] = np.nan
    image[2, 2, 3] = np.inf
    write_nifti(Path(record["image"]), image)
    (problem,) = _problems([record])
    assert "c0_img.nii.gz: 2 NaN/Inf voxels" in problem


def test_wrong_channel_count(tmp_path):
    record = _case(tmp_path, channels=2)
    (problem,) = _problems([record], in_channels=1)
    assert "c0_img.nii.gz: expected 1 image channel(s), got 2" in problem


def test_cases_disagree_on_channels(tmp_path):
    problems = _problems([_case(tmp_path, "a"), _case(tmp_path, "b", channels=3)])
    assert any("disagree on the number of channels" in p for p in problems)


def test_empty_dataset(tmp_path):
    (problem,) = _problems([], source="my dataset")
    assert problem == "my dataset: empty dataset (no cases found)"


def test_all_problems_reported_together(tmp_path):
    a = _case(tmp_path, "a")
    Path(a["label"]).unlink()
    b = _case(tmp_path, "b")
    write_nifti(Path(b["label"]), np.zeros((5, 5, 5), np.uint8))
    with pytest.raises(DataValidationError, match=r"2 problem\(s\)") as info:
        validate_records([a, b], SPEC)
    assert "a_seg.nii.gz" in str(info.value) and "b_seg.nii.gz" in str(info.value)


def test_datamodule_setup_runs_quick_check(lesion_dataset, tmp_path):
    broken = tmp_path / "copy"
    shutil.copytree(lesion_dataset, broken)
    (broken / "labelsTr" / "case_002.nii.gz").unlink()
    dm = SegmentationDataModule(str(broken), num_workers=0)
    with pytest.raises(DataValidationError, match=r"case_002\.nii\.gz: missing label file"):
        dm.setup("fit")


# -- medfocal check-data ---------------------------------------------------------------------------


def test_check_data_on_folder_and_dataset_json(lesion_dataset, capsys):
    assert main_check_data([str(lesion_dataset)]) == 0
    out = capsys.readouterr().out
    assert "case_000" in out and "no problems found" in out and "background" in out
    assert main_check_data(["--dataset-json", str(lesion_dataset / "dataset.json"), "--quick"]) == 0


def test_check_data_config_with_overrides(lesion_dataset, tmp_path, capsys):
    # a preset, a second config merged over it (as `medfocal fit` merges them), then a --data override
    override = tmp_path / "here.yaml"
    override.write_text(yaml.safe_dump({"data": {"init_args": {"layout": str(lesion_dataset)}}}))
    code = main_check_data(
        ["--config", "demo", "--config", str(override), "--data.init_args.class_names", "[bg]"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "label values [1] outside the declared classes 0..0" in out
    assert str(lesion_dataset) in out  # the second config's layout replaced the preset's


def test_check_data_checks_a_config_as_fit_does(lesion_dataset, tmp_path, capsys):
    config = {
        "model": {"class_path": "does.not.Matter"},
        "data": {"class_path": "medfocal.data.SegmentationDataModule", "init_args": {"layout": "x"}},
    }
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main_check_data(["--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == "check-data: Problem with given class_path 'does.not.Matter': No module named 'does'\n"
    assert list(tmp_path.iterdir()) == [path]  # nothing written (no trainer, no log folders)


def test_check_data_reports_problems_with_exit_1(lesion_dataset, tmp_path, capsys):
    broken = tmp_path / "copy"
    shutil.copytree(lesion_dataset, broken)
    (broken / "imagesTr" / "case_001.nii.gz").write_bytes(b"garbage")
    assert main_check_data([str(broken)]) == 1
    out = capsys.readouterr().out
    assert "case_001.nii.gz: unreadable or corrupt image" in out


def test_check_data_names_a_missing_layout_in_one_line(tmp_path, capsys):
    missing = tmp_path / "isles"
    assert main_check_data(["--config", "stroke_isles", f"--data.init_args.layout={missing}"]) == 1
    assert capsys.readouterr().err == f"check-data: dataset path {missing} does not exist\n"


def test_check_data_missing_path(tmp_path, capsys):
    assert main_check_data([str(tmp_path / "absent")]) == 1
    assert "does not exist" in capsys.readouterr().err


def _copy_with_bad_voxel_and_label(lesion_dataset, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(lesion_dataset, root)
    image = nib.load(root / "imagesTr" / "case_001.nii.gz")
    data = np.asarray(image.dataobj, dtype=np.float32).copy()
    data[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), root / "imagesTr" / "case_001.nii.gz")
    label = nib.load(root / "labelsTr" / "case_003.nii.gz")
    values = np.asarray(label.dataobj, dtype=np.float32).copy()
    values[values > 0] = 0.5
    nib.save(nib.Nifti1Image(values, label.affine), root / "labelsTr" / "case_003.nii.gz")
    return root


def test_quick_check_finds_nan_voxels_and_non_integer_labels_before_training(lesion_dataset, tmp_path):
    # check: quick (the default) used to read headers only: fit trained to the end with val/loss=nan
    root = _copy_with_bad_voxel_and_label(lesion_dataset, tmp_path)
    dm = SegmentationDataModule(str(root), num_workers=0)
    with pytest.raises(DataValidationError) as info:
        dm.setup("fit")
    assert info.value.problems == [
        f"{root / 'imagesTr' / 'case_001.nii.gz'}: 1 NaN/Inf voxels in the image (fix or remove the case; "
        "training on it gives a NaN loss)",
        f"{root / 'labelsTr' / 'case_003.nii.gz'}: label values must be integers, found [0.5] "
        "(set label_threshold?)",
    ]


def test_quick_check_remembers_clean_files_and_rechecks_changed_ones(lesion_dataset, tmp_path, monkeypatch):
    from medfocal.data import checks

    monkeypatch.setenv("MEDFOCAL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "copy"
    shutil.copytree(lesion_dataset, root)
    reads: list[str] = []
    original = checks.label_counts

    def counting(path, spec, minlength=0):
        reads.append(Path(path).name)
        return original(path, spec, minlength)

    monkeypatch.setattr(checks, "label_counts", counting)
    SegmentationDataModule(str(root), num_workers=0).setup("fit")
    assert len(reads) == 6  # every training label read once
    assert (tmp_path / "cache" / "data_checks.json").is_file()
    reads.clear()
    second = SegmentationDataModule(str(root), num_workers=0)
    second.setup("fit")
    expected = sum(
        np.bincount(np.asarray(nib.load(r["label"]).dataobj).reshape(-1), minlength=2)
        for r in second.splits["train"]
    )
    assert second.class_counts().tolist() == expected.tolist()  # alpha: auto counts from the same memory
    assert reads == []  # the second run reads headers only
    # a file changed since is read again, and its problem is found
    label = nib.load(root / "labelsTr" / "case_002.nii.gz")
    values = np.asarray(label.dataobj).astype(np.int16)
    values[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(values, label.affine), root / "labelsTr" / "case_002.nii.gz")
    with pytest.raises(
        DataValidationError, match=r"case_002\.nii\.gz: label values \[7\] outside the declared"
    ):
        SegmentationDataModule(str(root), num_workers=0).setup("fit")
    assert reads == ["case_002.nii.gz"]
