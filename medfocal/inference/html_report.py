"""One self-contained HTML review page: sortable per-case table, overlay thumbnails, lesions, box plots.

Everything is inside the file (PNG images as base64 ``data:`` URIs, inline CSS and JavaScript), so it
opens from a USB stick or a PACS workstation with no network access. Inputs are the rows of
``report.csv`` (``medfocal infer``) or of ``evaluation.csv`` (``medfocal evaluate``: one row per case and
label, with ``dice``), and for the thumbnails each case's image, predicted mask and optional ground truth.

Example::

    rows = read_rows("predictions/report.csv")
    cases = [CaseImages("case_008", "imagesTs/case_008.nii.gz", "predictions/case_008.nii.gz")]
    write_html_report(rows, "predictions/report.html", cases, class_names=["lesion"])
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CaseImages", "evaluation_cases", "inference_cases", "load_ras", "read_rows", "write_html_report"]

# columns drawn as box plots when present (infer: <class>_volume_ml etc. are matched by suffix)
_PLOT_COLUMNS = ("dice", "iou", "hd95_mm", "asd_mm", "volume_diff_ml")
_PLOT_SUFFIXES = ("_volume_ml", "_components", "_max_prob")
_THUMB_DPI = 55


@dataclass(frozen=True)
class CaseImages:
    """The files of one case for its thumbnails: image, predicted mask and (optional) ground truth."""

    case_id: str
    image: str | Path
    prediction: str | Path | None = None
    label: str | Path | None = None


def evaluation_cases(
    pairs: Sequence[tuple[str | Path, str | Path]], images: str | Path | None = None
) -> list[CaseImages]:
    """Thumbnails of ``medfocal evaluate``: per ``(prediction, ground truth)`` pair, the case's image
    from ``images`` (a folder, file or CSV list that ``medfocal infer`` takes; its case ids are the mask
    names), else the ground truth itself as the background.

    Raises:
        FileNotFoundError / ValueError: ``images`` is given but holds no readable case list.
    """
    from medfocal.io import case_id_of

    found: dict[str, Path] = {}
    if images is not None:
        from medfocal.inference.cases import discover_cases

        found = {c.case_id: c.paths[0] for c in discover_cases(images)}
    out = []
    for pred, gt in pairs:
        case = case_id_of(gt)
        out.append(CaseImages(case, found.get(case, gt), pred, gt))
    return out


def inference_cases(
    head: Any,
    cases: Sequence[Any],
    rows: Sequence[Mapping[str, Any]],
    output_dir: Path,
    save_probabilities: str | None = None,
) -> list[CaseImages]:
    """Thumbnails of ``medfocal infer``: per case done (``ok``/``skipped`` row), its image (first channel
    file or DICOM series folder) and its predicted mask, the prediction head's first output when that is
    an image (none for classification).

    Args:
        head: the run's :class:`~medfocal.inference.heads.PredictionHead` (its ``output_paths``).
        cases: the run's :class:`~medfocal.inference.cases.Case` list, in report order.
        rows: the report rows.
        output_dir: the run's output folder.
        save_probabilities: as given to the run (the head's output list depends on it).
    """
    from medfocal.io import image_suffix

    done = {r.get("case") for r in rows if r.get("status") in ("ok", "skipped")}
    out = []
    for case in cases:
        if case.case_id not in done:
            continue
        outputs = head.output_paths(case, output_dir, save_probabilities)
        mask = outputs[0] if outputs and image_suffix(outputs[0]) and outputs[0].is_file() else None
        out.append(CaseImages(case.case_id, case.paths[0], mask))
    return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a report/evaluation CSV, numbers parsed (``"nan"`` → NaN, empty → kept as ``""``)."""
    with Path(path).open(newline="") as fh:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def load_ras(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """``(array, spacing)`` of an image in RAS order: NIfTI (nibabel), PNG/JPG (greyscale, ``(H, W)``),
    or anything :class:`~medfocal.data.readers.SimpleITKReader` reads (NRRD, MHA, DICOM series folder)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        from medfocal.viz import load_canonical

        return load_canonical(path)
    if name.endswith((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")):
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("L")), (1.0, 1.0)
    from monai.data.utils import affine_to_spacing
    from monai.transforms import LoadImage, Orientation

    from medfocal.data.readers import SimpleITKReader

    image = LoadImage(reader=SimpleITKReader(), image_only=True, ensure_channel_first=True)(str(path))
    image = Orientation(axcodes="RAS", labels=None)(image)
    spacing = tuple(float(s) for s in affine_to_spacing(image.affine, image.ndim - 1))
    return np.asarray(image[0]), spacing


def _png_uri(fig: Any, dpi: int) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _lesions(
    mask: np.ndarray, spacing: Sequence[float], names: Sequence[str]
) -> list[tuple[str, int, float]]:
    """``(class name, connected components, volume ml)`` per foreground class of a mask."""
    from scipy import ndimage

    voxel_ml = float(np.prod(spacing)) / 1000.0
    top = max(len(names), int(mask.max(initial=0)))
    out = []
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    for k in range(1, top + 1):
        region = mask == k
        n = int(ndimage.label(region, structure=structure)[1]) if region.any() else 0
        name = names[k - 1] if k <= len(names) else f"class_{k}"
        out.append((name, n, round(float(region.sum()) * voxel_ml, 3)))
    return out


def _case_card(case: CaseImages, names: Sequence[str]) -> str:
    """One case: three-plane overlay thumbnail and its lesion counts/volumes (prediction, ground truth)."""
    from medfocal.viz import overlay_slices

    try:
        image, spacing = load_ras(case.image)
        pred = load_ras(case.prediction)[0].astype(np.int16) if case.prediction else None
        label = load_ras(case.label)[0].astype(np.int16) if case.label else None
        fig = overlay_slices(image, label=label, prediction=pred, spacing=spacing, title=case.case_id)
        thumb = f'<img class="thumb" alt="{html.escape(case.case_id)}" src="{_png_uri(fig, _THUMB_DPI)}">'
    except Exception as err:  # one unreadable case must not lose the whole page
        msg = " ".join(str(err).split())[:300]
        anchor = html.escape(case.case_id)
        return f'<div class="card" id="case-{anchor}"><p class="error">{html.escape(msg)}</p></div>'
    lines = []
    for title, mask in (("predicted", pred), ("ground truth", label)):
        if mask is None:
            continue
        items = ", ".join(
            f"{html.escape(n)}: {c} lesion{'s' * (c != 1)}, {v:g} ml"
            for n, c, v in _lesions(mask, spacing, names)
        )
        lines.append(f"<li><b>{title}</b>: {items or 'empty'}</li>")
    return f'<div class="card" id="case-{html.escape(case.case_id)}">{thumb}<ul>{"".join(lines)}</ul></div>'


def _plot_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(c for r in rows for c in r))
    numeric = [c for c in columns if any(_is_number(r.get(c)) for r in rows)]
    return [c for c in numeric if c in _PLOT_COLUMNS or c.endswith(_PLOT_SUFFIXES)]


def _groups(rows: Sequence[Mapping[str, Any]], column: str) -> dict[str, list[float]]:
    """Finite values of ``column``, grouped by ``label`` when the rows have one (evaluate)."""
    out: dict[str, list[float]] = {}
    for r in rows:
        v = r.get(column)
        if _is_number(v) and math.isfinite(float(v)):
            out.setdefault(str(r.get("label", "all")), []).append(float(v))
    return out


def _box_plots(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    from matplotlib.figure import Figure

    columns = [c for c in columns if _groups(rows, c)]
    if not columns:
        return ""
    fig = Figure(figsize=(3.2 * len(columns), 3.0))
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, column in zip(axes, columns):
        groups = _groups(rows, column)
        ax.boxplot(list(groups.values()), showmeans=True)
        ax.set_xticks(range(1, len(groups) + 1), list(groups))
        ax.set_title(column, fontsize=9)
    fig.tight_layout()
    return f'<img class="plot" alt="box plots" src="{_png_uri(fig, 80)}">'


def _summary_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = [
        "<tr><th>metric</th><th>label</th><th>n</th><th>mean</th><th>median</th><th>min</th><th>max</th></tr>"
    ]
    for column in columns:
        for group, values in _groups(rows, column).items():
            v = np.asarray(values)
            cells = "".join(f"<td>{x:.4g}</td>" for x in (v.mean(), np.median(v), v.min(), v.max()))
            lines.append(
                f"<tr><td>{html.escape(column)}</td><td>{html.escape(group)}</td><td>{len(v)}</td>{cells}</tr>"
            )
    return f'<table class="summary">{"".join(lines)}</table>' if len(lines) > 1 else ""


def _cell(value: Any) -> str:
    if _is_number(value):
        text = "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.4g}"
        return f'<td data-v="{value}">{text}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _case_table(rows: Sequence[Mapping[str, Any]]) -> str:
    columns = list(dict.fromkeys(c for r in rows for c in r))
    numeric = {c for c in columns if all(_is_number(r.get(c)) or r.get(c) in ("", None) for r in rows)}
    head = "".join(
        f'<th data-type="{"num" if c in numeric else "str"}" title="click to sort">{html.escape(c)}</th>'
        for c in columns
    )
    body = []
    for r in rows:
        case = html.escape(str(r.get("case", "")))
        link = f'<a href="#case-{case}">{case}</a>' if case else ""
        cells = "".join(f"<td>{link}</td>" if c == "case" else _cell(r.get(c, "")) for c in columns)
        body.append(f'<tr data-case="{case}">{cells}</tr>')
    return f'<table id="cases"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _worst_first(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows by ascending Dice (NaN last) when there is a Dice column; else as given."""
    if not any(_is_number(r.get("dice")) for r in rows):
        return list(rows)

    def key(r: Mapping[str, Any]) -> tuple[int, float]:
        v = r.get("dice")
        ok = _is_number(v) and not math.isnan(float(v))
        return (0, float(v)) if ok else (1, 0.0)

    return sorted(rows, key=key)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#eef;cursor:pointer;user-select:none}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;padding:6px;font-size:13px}
img.plot{max-width:100%} img.thumb{width:470px;max-width:100%}
.card ul{margin:4px 0;padding-left:18px}
.error{color:#b00}
"""

# click a header: sort by it (numbers numerically, NaN/empty last), click again: reverse
_JS = """
document.querySelectorAll('#cases th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var asc = !th.classList.contains('asc');
    table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
    th.classList.add(asc ? 'asc' : 'desc');
    var num = th.dataset.type === 'num';
    var rows = Array.prototype.slice.call(body.rows);
    function value(row) {
      var cell = row.cells[col];
      if (!num) return cell.textContent;
      var v = parseFloat(cell.dataset.v);
      return isNaN(v) ? null : v;
    }
    rows.sort(function (a, b) {
      var x = value(a), y = value(b);
      if (x === null || y === null) return (x === null) - (y === null);
      var c = num ? x - y : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def write_html_report(
    rows: Sequence[Mapping[str, Any]],
    out_path: str | Path,
    cases: Sequence[CaseImages] = (),
    class_names: Sequence[str] = (),
    title: str = "medfocal review",
) -> Path:
    """Write the self-contained review page; returns ``out_path``.

    Args:
        rows: per-case rows (``report.csv`` of infer, or evaluate's rows); shown worst Dice first when a
            ``dice`` column exists; the table sorts by any column on a click.
        out_path: the ``.html`` file (written atomically).
        cases: images and masks for the thumbnails and lesion counts (case order as given).
        class_names: names of mask labels ``1..K`` (default ``class_1``...).
        title: page title.
    """
    from medfocal.inference.writer import atomic_path

    out_path = Path(out_path)
    rows = _worst_first(rows)
    columns = _plot_columns(rows)
    n_cases = len({r.get("case") for r in rows}) if rows else len(cases)
    cards = "".join(_case_card(c, class_names) for c in cases)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{n_cases} case(s). Click a column header to sort; thumbnails: ground truth green, prediction red.</p>
<h2>Summary</h2>
{_summary_table(rows, columns)}
{_box_plots(rows, columns)}
<h2>Cases</h2>
{_case_table(rows) if rows else "<p>no rows</p>"}
<h2>Images</h2>
<div class="cards">{cards or "<p>no images given</p>"}</div>
<script>{_JS}</script>
</body></html>
"""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out_path
