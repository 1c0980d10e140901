"""`medfocal infer --num-parts N --part-id K`: parts cover every case once; the last part merges."""

from __future__ import annotations

import csv

import pytest

from medfocal.cli import main
from medfocal.inference.shards import merge_part_reports, part_report_name, select_part


def _rows(path):
    return list(csv.DictReader(path.open()))


def test_select_part_deals_round_robin_and_checks_arguments():
    cases = list("abcdefg")
    parts = [select_part(cases, 3, k) for k in range(3)]
    assert parts == [["a", "d", "g"], ["b", "e"], ["c", "f"]]
    assert sorted(c for part in parts for c in part) == cases
    with pytest.raises(ValueError, match=r"part_id: expected 0..2 for num_parts=3, got 3"):
        select_part(cases, 3, 3)
    with pytest.raises(ValueError, match="num_parts: expected >= 1, got 0"):
        select_part(cases, 0, 0)
    assert part_report_name("report.csv", 4, 2) == "report.part-2-of-4.csv"
    assert part_report_name("report.csv", 1, 0) == "report.csv"


def test_three_parts_cover_every_case_once_and_the_last_merges(oracle_ckpt, tmp_path, capsys):
    from medfocal.synthetic import make_lesion_dataset

    root = make_lesion_dataset(tmp_path / "data", n_train=0, n_test=5, shape=(24, 24, 12))
    images, out = root / "imagesTs", tmp_path / "out"
    run = [
        "infer",
        "-c",
        str(oracle_ckpt),
        "-i",
        str(images),
        "-o",
        str(out),
        "--no-progress",
        "--num-parts",
        "3",
    ]
    seen: list[str] = []
    for part in (2, 0, 1):  # any order
        assert not (out / "report.csv").exists()  # not merged before every part is done
        assert main([*run, "--part-id", str(part)]) == 0
        seen += [r["case"] for r in _rows(out / f"report.part-{part}-of-3.csv")]
    assert sorted(seen) == sorted({p.name.removesuffix(".nii.gz") for p in images.glob("*.nii.gz")})
    assert len(seen) == len(set(seen)) == 5
    merged = _rows(out / "report.csv")
    assert [r["case"] for r in merged] == sorted(seen) and {r["status"] for r in merged} == {"ok"}
    assert len(list(out.glob("*.nii.gz"))) == 5
    assert main([*run, "--part-id", "3"]) == 2
    assert "part_id: expected 0..2" in capsys.readouterr().err


def test_a_case_in_two_part_reports_is_refused(tmp_path):
    for k in range(2):
        (tmp_path / f"report.part-{k}-of-2.csv").write_text("case,status\na,ok\n")
    with pytest.raises(ValueError, match="case 'a' is also in another part's report"):
        merge_part_reports(tmp_path, "report.csv", 2)
