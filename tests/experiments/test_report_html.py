"""``report.html``: self-contained, one row per variant, heatmaps per variant, robust to gaps.

Studies are faked (:mod:`fake_study`); the browser check is ``test_report_browser.py``.
"""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from yoloattn.experiments.compare import CompareConfig, run_compare
from yoloattn.experiments.html_report import render_html
from yoloattn.experiments.report_data import Panel, ReportData, VariantImages


class Page(HTMLParser):
    """Tags and attributes of a page, and the text of each table's first column."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)

    def attrs(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]


def study_cfg(tmp_path: Path, data: Path, **kw) -> CompareConfig:
    base = dict(
        model="yolov5n",
        data=str(data),
        attention=["se", "cbam"],
        seeds=2,
        project=str(tmp_path / "cmp"),
        name="rep",
        train=dict(epochs=2, batch=4, imgsz=64, workers=0, quiet=True, noval=True),
        n_resamples=100,
        report_images=2,
    )
    base.update(kw)
    return CompareConfig(**base)


def assert_self_contained(html: str) -> Page:
    page = Page(html)
    for tag, a in page.tags:
        for key in ("src", "href", "srcset", "poster", "data"):
            v = a.get(key)
            if v is not None and tag != "a":
                assert v.startswith("data:"), (tag, key, v[:60])
    assert all(a["href"].startswith("#") for a in page.attrs("a")), "links leave the page"
    assert not any(t == "link" and a.get("rel") == "stylesheet" for t, a in page.tags)
    assert not any(a.get("src") for a in page.attrs("script"))
    assert "http://" not in html and "https://" not in html
    csp = [a for a in page.attrs("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]
    return page


def decoded_images(page: Page) -> list[Image.Image]:
    out = []
    for a in page.attrs("img"):
        head, b64 = a["src"].split(",", 1)
        assert head in ("data:image/png;base64", "data:image/jpeg;base64"), head
        out.append(Image.open(io.BytesIO(base64.b64decode(b64))))
    return out


def test_report_is_self_contained_with_every_section(fake_weights, tiny_data, tmp_path):
    root = run_compare(study_cfg(tmp_path, tiny_data))
    html = (root / "report.html").read_text()
    page = assert_self_contained(html)
    text = " ".join(page.text)
    for v in ("baseline", "se@neck", "cbam@neck"):
        assert html.count(f">{v}<") >= 3, v  # results table, per-class table, grid header
    for section in ("Results", "Forest plot", "Per-class AP50-95", "Training curves", "Images and heatmaps"):
        assert section in text, section
    assert "Engagement of the attention rows" in text and "+0.2500" in text  # the fake gate
    images = decoded_images(page)
    assert all(im.width > 0 and im.height > 0 for im in images)
    # the forest plot, 3 more plots, curves; per variant 2 images x (heatmap + its attention rows)
    alts = [a["alt"] for a in page.attrs("img")]
    assert sum("Δ mAP50-95" in a for a in alts) == 1  # the forest plot
    assert "training curves" in alts
    for v in ("baseline", "se@neck", "cbam@neck"):
        for name in ("im0.jpg", "im1.jpg"):
            assert sum(a.startswith(f"{v} {name} LayerCAM") for a in alts) == 1, (v, name)
    se_rows = [a for a in alts if a.startswith("se@neck im0.jpg row")]
    assert len(se_rows) >= 1 and all(" se" in a for a in se_rows)
    assert not [a for a in alts if a.startswith("baseline im0.jpg row")]  # no attention rows
    assert (root / "curves.png").is_file()
    md = (root / "summary.md").read_text()
    assert "[report.html](report.html)" in md
    assert json.loads((root / "summary.json").read_text())["report"] == "report.html"
    assert (root / "report.html").stat().st_size < 2_000_000


def test_one_variant_only(fake_weights, tiny_data, tmp_path):
    root = run_compare(study_cfg(tmp_path, tiny_data, attention=[], seeds=1, report_images=1))
    page = assert_self_contained((root / "report.html").read_text())
    rows = [r for r in (root / "summary.csv").read_text().splitlines()[1:]]
    assert len(rows) == 1 and rows[0].startswith("baseline")
    alts = [a["alt"] for a in page.attrs("img")]
    assert sum(a.startswith("baseline im0.jpg LayerCAM") for a in alts) == 1
    assert not any("Δ mAP50-95" in a for a in alts)  # no forest plot without a comparison


def test_failed_variant_and_unreadable_weights_do_not_stop_the_report(fake, tiny_data, tmp_path, monkeypatch):
    import yoloattn.experiments.compare as cmp

    real = cmp.run_one

    def run_one(c, v, s):
        if v.name == "cbam@neck":
            raise RuntimeError("out of memory")
        return real(c, v, s)

    monkeypatch.setattr(cmp, "run_one", run_one)
    root = run_compare(study_cfg(tmp_path, tiny_data, seeds=1))
    html = (root / "report.html").read_text()
    page = assert_self_contained(html)
    text = " ".join(page.text)
    assert "out of memory" in text and "no finished run" in text  # cbam failed
    assert "could not explain baseline-s0" in text  # placeholder weights: a note, no crash
    assert "No training curves." in text  # the fake runs wrote no results.csv
    assert "[report.html](report.html)" in (root / "summary.md").read_text()


def test_report_without_images_and_with_empty_cells_renders():
    png = io.BytesIO()
    Image.new("RGB", (4, 3), (255, 0, 0)).save(png, "PNG")
    d = ReportData(
        name="x<y",
        title="t & u",
        settings=["- **model** `a<b`"],
        table_head=["variant", "verdict"],
        table_rows=[["baseline", "reference"], ["se@neck", "better"]],
        errors=[],
        notes=["**MDE** n/a"],
        plots=[Panel("forest", png.getvalue())],
        grid=[VariantImages("baseline", note="no finished run")],
    )
    html = render_html(d, "0.0")
    page = assert_self_contained(html)
    assert "<b>model</b> <code>a&lt;b</code>" in html and "x&lt;y" in html
    assert '<td class="better">better</td>' in html
    assert "No validation images to show." in html and "Not available" in html
    assert len(decoded_images(page)) == 1
