"""The HTML review page: self-contained, worst Dice first, sortable, thumbnails and lesion counts render."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medfocal.inference.html_report import CaseImages, read_rows, write_html_report
from medfocal.inference.report import case_statistics, write_csv

ROWS = [
    {"case": "case_a", "label": 1, "dice": 0.9, "hd95_mm": 2.0, "volume_pred_ml": 1.5},
    {"case": "case_b", "label": 1, "dice": 0.3, "hd95_mm": 9.5, "volume_pred_ml": 0.5},
    {"case": "case_c", "label": 1, "dice": float("nan"), "hd95_mm": float("nan"), "volume_pred_ml": 0.0},
    {"case": "case_d", "label": 1, "dice": 0.7, "hd95_mm": 4.0, "volume_pred_ml": 1.0},
]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, list[CaseImages]]:
    from medfocal.synthetic import make_lesion_dataset

    root = make_lesion_dataset(tmp_path_factory.mktemp("html"), n_train=0, n_test=2, shape=(32, 28, 16))
    images = sorted((root / "imagesTs").glob("*.nii.gz"))
    cases = [
        CaseImages(p.name[:-7], p, root / "labelsTs" / p.name, root / "labelsTs" / p.name) for p in images
    ]
    rows = [dict(r, case=c) for r, c in zip(ROWS, [cases[0].case_id, cases[1].case_id, "case_c", "case_d"])]
    csv_path = write_csv(rows, root / "evaluation.csv")
    out = write_html_report(
        read_rows(csv_path), root / "review" / "report.html", cases, class_names=["lesion"]
    )
    return out, cases


def _case_order(text: str) -> list[str]:
    return re.findall(r'<tr data-case="([^"]+)">', text)


def test_self_contained_and_worst_first(page):
    out, cases = page
    text = out.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing fetched from a network
    assert "<link" not in text and "<script src" not in text
    ids = [c.case_id for c in cases]
    assert _case_order(text) == [ids[1], "case_d", ids[0], "case_c"]  # Dice 0.3, 0.7, 0.9, NaN last
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(uris) == 3  # box plots + one thumbnail per case
    assert 'class="plot"' in text and text.count('class="thumb"') == 2


def test_lesion_counts_and_volumes(page):
    out, cases = page
    text = out.read_text()
    for case in cases:
        img = nib.load(str(case.label))
        stats = case_statistics(np.asarray(img.dataobj), img.affine, ["lesion"])
        n, ml = stats["lesion_components"], stats["lesion_volume_ml"]
        card = text.split(f'id="case-{case.case_id}"')[1].split("</div>")[0]
        assert f"lesion: {n} lesion{'s' * (n != 1)}, {round(ml, 3):g} ml" in card


def test_unreadable_case_does_not_lose_the_page(tmp_path):
    out = write_html_report(ROWS, tmp_path / "r.html", [CaseImages("case_x", tmp_path / "missing.nii.gz")])
    assert re.search(r'id="case-case_x"><p class="error">.*missing\.nii\.gz', out.read_text())


_PROBE = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var th = Array.prototype.slice.call(document.querySelectorAll('#cases th'))
    .filter(function (h) { return h.textContent === 'dice'; })[0];
  th.click();                       // ascending
  var asc = Array.prototype.map.call(document.querySelectorAll('#cases tbody tr'), r => r.dataset.case);
  th.click();                       // descending
  var desc = Array.prototype.map.call(document.querySelectorAll('#cases tbody tr'), r => r.dataset.case);
  var probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    sizes: imgs.map(function (i) { return [i.complete, i.naturalWidth, i.naturalHeight]; }),
    asc: asc, desc: desc
  });
  document.body.appendChild(probe);
});
</script>
"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


# justified: a real browser is a system package, not a pip one; .ci/run installs Debian's chromium
@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_renders_in_headless_chromium(page, tmp_path):
    out, cases = page
    probed = tmp_path / "probe.html"
    probed.write_text(out.read_text().replace("</body>", _PROBE + "</body>"))
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probed.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert match, dom[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    assert len(probe["sizes"]) == 3
    assert all(complete and w > 100 and h > 100 for complete, w, h in probe["sizes"])
    ids = [c.case_id for c in cases]
    assert probe["asc"] == [ids[1], "case_d", ids[0], "case_c"]
    assert probe["desc"] == [ids[0], "case_d", ids[1], "case_c"]  # NaN stays last


def test_infer_report_rows(tmp_path):
    """``report.csv`` of infer (no Dice): rows keep their order, volumes and counts get box plots."""
    rows = [
        {
            "case": "b",
            "status": "ok",
            "lesion_components": 2,
            "lesion_volume_ml": 1.25,
            "lesion_max_prob": 0.9,
        },
        {
            "case": "a",
            "status": "ok",
            "lesion_components": 0,
            "lesion_volume_ml": 0.0,
            "lesion_max_prob": 0.2,
        },
        {"case": "c", "status": "failed", "error": "c.nii.gz: unreadable image"},
    ]
    text = write_html_report(rows, tmp_path / "report.html").read_text()
    assert _case_order(text) == ["b", "a", "c"]
    assert 'class="plot"' in text
    summary = text.split('<table class="summary">')[1].split("</table>")[0]
    assert "<td>lesion_volume_ml</td><td>all</td><td>2</td><td>0.625</td>" in summary
    assert '<th data-type="str" title="click to sort">status</th>' in text
    assert '<th data-type="num" title="click to sort">lesion_volume_ml</th>' in text
