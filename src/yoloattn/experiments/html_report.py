"""``report.html``: one self-contained page for a study (data: :mod:`.report_data`).

Everything is inline: the CSS, a few lines of JavaScript (sortable tables, click to enlarge a
picture) and every image as a ``data:`` URI, so the file opens from ``file://``, can be mailed or
archived alone, and fetches nothing: its Content-Security-Policy forbids any network request.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

from yoloattn._io import write_text_atomic
from yoloattn.experiments.report_data import Panel, ReportData

__all__ = ["render_html", "write_report"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;
  max-width:1400px;padding:0 24px 48px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:24px 0 4px}h2{font-size:18px;margin:32px 0 8px;
  border-bottom:1px solid #d8dce3;padding-bottom:4px}
.sub{color:#5b6475;margin:0 0 12px}
nav a{margin-right:14px;color:#2457c5;text-decoration:none}
code{background:#f1f3f6;padding:0 3px;border-radius:3px;font-size:12.5px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d8dce3;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f4f6f9;cursor:pointer;user-select:none}
td:first-child,th:first-child{text-align:left}
tr.baseline td{background:#fafafa;font-style:italic}
td.better{background:#dff3e3}td.worse{background:#fbe0e0}
.errors{color:#a11}
figure{margin:8px 0 16px;display:inline-block;vertical-align:top}
figure img{max-width:100%;border:1px solid #e3e6eb}
figure.small img{max-width:min(100%,560px)}
figcaption{font-size:12px;color:#5b6475;max-width:640px}
table.grid td{vertical-align:top;text-align:left;white-space:normal;padding:6px}
table.grid img{display:block;width:260px;border:0;cursor:zoom-in}
table.grid th{text-align:left;vertical-align:top}
table.grid .rows{display:flex;flex-wrap:wrap;gap:4px;max-width:400px;margin-top:4px}
table.grid .rows>div{width:124px}table.grid .rows img{width:124px}
table.grid .cap{font-size:11px;color:#5b6475}
img.zoom{position:fixed;inset:0;margin:auto;max-width:95vw!important;max-height:95vh;
  width:auto!important;z-index:10;box-shadow:0 0 0 100vmax rgba(0,0,0,.6);cursor:zoom-out}
footer{margin-top:40px;color:#8a92a3;font-size:12px}
"""

JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.title = 'click to sort';
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.order !== 'asc';
    th.dataset.order = asc ? 'asc' : 'desc';
    var key = function (r) {
      var t = r.cells[col] ? r.cells[col].textContent.trim() : '';
      var n = parseFloat(t.replace(/,/g, ''));
      return isNaN(n) ? t : n;
    };
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x !== typeof y) { x = String(x); y = String(y); }
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.querySelectorAll('img.zoomable').forEach(function (img) {
  img.addEventListener('click', function () { img.classList.toggle('zoom'); });
});
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _inline_md(text: str) -> str:
    """Escaped text with ``**bold**`` and ```code``` spans (all the summary's bullets use)."""
    out = _e(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def data_uri(p: Panel) -> str:
    return f"data:{p.mime};base64," + base64.b64encode(p.data).decode("ascii")


def _img(p: Panel, alt: str, cls: str = "zoomable") -> str:
    return f'<img class="{cls}" alt="{_e(alt)}" title="{_e(p.caption or alt)}" src="{data_uri(p)}">'


def _table(
    head: Sequence[str], body: Sequence[Sequence[str]], ident: str, cls: str = "sortable", verdict: int = -1
) -> str:
    """A table (id ``ident``); the column ``verdict`` (index) is coloured by its value; baseline
    rows are marked."""
    out = [f'<div class="scroll"><table id="{ident}" class="{cls}"><thead><tr>']
    out += [f"<th>{_e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for cells in body:
        row_cls = ' class="baseline"' if cells and cells[0] == "baseline" else ""
        out.append(f"<tr{row_cls}>")
        for i, c in enumerate(cells):
            td = "<td>"
            if i == verdict and c in ("better", "worse"):
                td = f'<td class="{c}">'
            out.append(f"{td}{_e(c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _figure(p: Panel, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<figure{c}>{_img(p, alt)}<figcaption>{_e(p.caption)}</figcaption></figure>"


def _grid(d: ReportData) -> list[str]:
    if not d.grid or not d.images:
        notes = "".join(f"<li>{_e(vi.variant)}: {_e(vi.note)}</li>" for vi in d.grid if vi.note)
        return ["<p>No validation images to show.</p>" + (f"<ul>{notes}</ul>" if notes else "")]
    out = [
        "<p>The same validation images for every variant, explained with its final weights "
        "(first seed): detections drawn over the LayerCAM heatmap (per detected class, on the "
        "inputs of the Detect layer), then the map of each attention row. Click a picture to "
        "enlarge it. See <code>yoloattn explain</code> (docs/explain.md).</p>",
        '<div class="scroll"><table id="image-grid" class="grid"><thead><tr><th>image</th>',
    ]
    for vi in d.grid:
        out.append(f'<th class="variant">{_e(vi.variant)}<div class="cap">{_e(vi.note)}</div></th>')
    out.append("</tr></thead><tbody>")
    for i, name in enumerate(d.images):
        out.append(f"<tr><td>{_e(name)}</td>")
        for vi in d.grid:
            if i >= len(vi.cells):
                out.append('<td class="cap">no image</td>')
                continue
            cam, *rows = vi.cells[i]
            cell = [
                _img(cam, f"{vi.variant} {name} {cam.caption}"),
                f'<div class="cap">{_e(cam.caption)}</div>',
            ]
            if rows:
                cell.append('<div class="rows">')
                for p in rows:
                    short = p.caption.split(" (")[0]
                    thumb = _img(p, f"{vi.variant} {name} {short}")
                    cell.append(f'<div>{thumb}<div class="cap">{_e(short)}</div></div>')
                cell.append("</div>")
            out.append("<td>" + "".join(cell) + "</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return out


def render_html(d: ReportData, version: str = "") -> str:
    """The page for ``d`` (a string; no file is read or written)."""
    sections = [
        ("results", "Results"),
        ("forest", "Forest plot"),
        ("per-class", "Per-class AP"),
        ("curves", "Training curves"),
        ("images", "Images and heatmaps"),
        ("engagement", "Engagement"),
    ]
    b = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>Ablation {_e(d.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Ablation <code>{_e(d.name)}</code></h1>",
        f'<p class="sub">{_e(d.title)}</p>',
        "<nav>" + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in sections) + "</nav>",
        "<h2>Settings</h2><ul>",
        *(f"<li>{_inline_md(s.removeprefix('- '))}</li>" for s in d.settings),
        '</ul><h2 id="results">Results</h2>',
        _table(
            d.table_head,
            d.table_rows,
            "results-table",
            verdict=d.table_head.index("verdict") if "verdict" in d.table_head else -1,
        ),
    ]
    b += [f'<p class="errors"><b>failed:</b> {_e(e)}</p>' for e in d.errors]
    b += [f"<p>{_inline_md(n)}</p>" for n in d.notes if n]
    b.append('<h2 id="forest">Forest plot and plots</h2>')
    if d.plots:
        b += [_figure(p, p.caption, "" if i == 0 else "small") for i, p in enumerate(d.plots)]
    else:
        b.append("<p>No plots.</p>")
    b.append('<h2 id="per-class">Per-class AP50-95 (mean over seeds)</h2>')
    if d.per_class_rows:
        b.append(_table(d.per_class_head, d.per_class_rows, "per-class-table"))
    else:
        b.append("<p>Not available: no run has match records.</p>")
    b.append('<h2 id="curves">Training curves</h2>')
    b.append(_figure(d.curves, "training curves") if d.curves else "<p>No training curves.</p>")
    b.append('<h2 id="images">Images and heatmaps</h2>')
    b += _grid(d)
    b.append('<h2 id="engagement">Engagement of the attention rows</h2>')
    if d.engagement_rows:
        b.append(
            "<p>Contribution: mean <code>||y - x|| / ||x||</code> of the row's output y and input x "
            "over the validation images (near 0: the row passes its input through); gate: the "
            "identity-insertion gate.</p>"
        )
        b.append(_table(d.engagement_head, d.engagement_rows, "engagement-table"))
    else:
        b.append("<p>No attention rows measured.</p>")
    b.append(f"<footer>yoloattn {_e(version)} · self-contained: no network requests</footer>")
    b.append(f"<script>{JS}</script></body></html>")
    return "\n".join(b) + "\n"


def write_report(path: Path, d: ReportData) -> Path:
    """Write ``report.html`` (atomically) and return its path."""
    import yoloattn

    write_text_atomic(path, render_html(d, yoloattn.__version__))
    return path
