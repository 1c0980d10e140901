"""``medfocal infer --html`` and ``medfocal evaluate --html``: one self-contained review page per run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medfocal.cli import main


def _check_self_contained(text: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
    assert "<link" not in text and "<script src" not in text
    sources = re.findall(r'<img[^>]* src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") and len(s) > 200 for s in sources)


@pytest.fixture(scope="module")
def predicted(lesion_cases, oracle_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("review") / "pred"
    argv = ["infer", "-c", str(oracle_ckpt), "-i", str(lesion_cases / "imagesTs"), "-o", str(out), "--html"]
    assert main([*argv, "--overlap", "0.25", "--num-workers", "0", "--no-progress"]) == 0
    return out


def _ids(lesion_cases: Path) -> list[str]:
    return sorted(p.name[: -len(".nii.gz")] for p in (lesion_cases / "imagesTs").glob("*.nii.gz"))


def test_infer_html(predicted, lesion_cases):
    page = predicted / "report.html"
    text = page.read_text()
    _check_self_contained(text)
    ids = _ids(lesion_cases)
    assert sorted(re.findall(r'<tr data-case="([^"]+)">', text)) == ids  # one row per case
    assert sorted(re.findall(r'<img class="thumb" alt="([^"]+)"', text)) == ids  # one overlay per case
    for case in ids:  # the predicted mask's lesions, no ground truth
        card = text.split(f'<div class="card" id="case-{case}">')[1].split("</div>")[0]
        assert "<b>predicted</b>: lesion:" in card and "ground truth" not in card


def test_infer_without_html_writes_no_page(lesion_cases, oracle_ckpt, tmp_path):
    argv = ["infer", "-c", str(oracle_ckpt), "-i", str(lesion_cases / "imagesTs"), "-o", str(tmp_path / "o")]
    assert main([*argv, "--num-workers", "0", "--no-progress"]) == 0
    assert not (tmp_path / "o" / "report.html").exists()


def test_evaluate_html(predicted, lesion_cases, tmp_path, capsys):
    out = tmp_path / "eval" / "metrics.csv"
    argv = ["evaluate", "-p", str(predicted), "-g", str(lesion_cases / "labelsTs"), "-o", str(out)]
    assert main([*argv, "--html", "--images", str(lesion_cases / "imagesTs")]) == 0
    page = out.with_suffix(".html")
    assert f"review page: {page}" in capsys.readouterr().out
    text = page.read_text()
    _check_self_contained(text)
    ids = _ids(lesion_cases)
    assert sorted(re.findall(r'<tr data-case="([^"]+)">', text)) == ids  # one label: one row per case
    assert sorted(re.findall(r'<img class="thumb" alt="([^"]+)"', text)) == ids
    for case in ids:
        card = text.split(f'<div class="card" id="case-{case}">')[1].split("</div>")[0]
        assert "<b>predicted</b>" in card and "<b>ground truth</b>" in card
    assert 'class="error"' not in text
