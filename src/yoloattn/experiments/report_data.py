"""What ``report.html`` shows, gathered from a finished study (rendering: :mod:`.html_report`).

* :func:`training_curves` -- each run's ``results.csv`` columns, per variant;
* :func:`engagement_rows` -- per variant and attention row, the contribution and gate (mean over
  seeds), from the runs' records;
* :func:`explain_grid` -- the same K validation images for every variant, explained with the
  final weights of the variant's first finished seed (:func:`yoloattn.engine.explain.explain_image`:
  detections over the LayerCAM heatmap, and each attention row's map); a variant whose weights
  cannot be read gets a note instead of images;
* :func:`build_report` -- all of it, with the tables and plots the summary already made.

Nothing here draws HTML; images travel as encoded bytes.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LOGGER = logging.getLogger("yoloattn.compare")

__all__ = [
    "Panel",
    "ReportData",
    "VariantImages",
    "build_report",
    "engagement_rows",
    "explain_grid",
    "training_curves",
    "val_images",
]

#: the width of a grid panel in the report (pixels); JPEG keeps the file small
PANEL_WIDTH = 320
JPEG_QUALITY = 82


@dataclass
class Panel:
    """One picture of the report: ``data`` is the encoded file (``mime``), ``caption`` its text."""

    caption: str
    data: bytes
    mime: str = "image/png"


@dataclass
class VariantImages:
    """The explained validation images of one variant: ``cells[i]`` holds the panels of image i
    (the detection heatmap first, then one per attention row). ``note`` says where they come
    from, or why there are none."""

    variant: str
    cells: list[list[Panel]] = field(default_factory=list)
    note: str = ""


@dataclass
class ReportData:
    """Everything ``report.html`` shows, ready to render."""

    name: str
    title: str
    settings: list[str]  #: Markdown bullets (bold and code spans only)
    table_head: list[str]
    table_rows: list[list[str]]
    errors: list[str]  #: "variant: error" of failed runs
    notes: list[str]  #: the MDE line, the method, other notes
    per_class_head: list[str] = field(default_factory=list)
    per_class_rows: list[list[str]] = field(default_factory=list)
    plots: list[Panel] = field(default_factory=list)  #: forest plot first
    curves: Panel | None = None
    images: list[str] = field(default_factory=list)  #: file names of the grid's validation images
    grid: list[VariantImages] = field(default_factory=list)
    engagement_head: list[str] = field(default_factory=list)
    engagement_rows: list[list[str]] = field(default_factory=list)


def _ok_runs(records: Sequence[Mapping[str, Any]], variant: str) -> list[Mapping[str, Any]]:
    runs = [r for r in records if r.get("variant") == variant and "metrics" in r and "run_dir" in r]
    return sorted(runs, key=lambda r: int(r.get("seed", 0)))


def training_curves(
    variants: Sequence[Any], records: Sequence[Mapping[str, Any]]
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Variant -> the ``results.csv`` columns of each finished seed (seeds without one left out)."""
    from yoloattn.engine.runs import RunDir, read_results

    out: dict[str, list[dict[str, np.ndarray]]] = {}
    for v in variants:
        runs = []
        for r in _ok_runs(records, v.name):
            try:
                runs.append(read_results(RunDir(r["run_dir"]).results_csv))
            except (OSError, ValueError) as e:
                LOGGER.debug("no training curve for %s seed %s: %s", v.name, r.get("seed"), e)
        out[v.name] = runs
    return out


def engagement_rows(
    variants: Sequence[Any], records: Sequence[Mapping[str, Any]]
) -> tuple[list[str], list[list[str]]]:
    """Per variant and attention row: mean contribution ``||y - x|| / ||x||`` and mean gate over
    the seeds (``docs/compare.md``, engagement). Variants without attention rows are left out."""
    head = ["variant", "row", "contribution", "gate (mean)", "seeds"]
    body = []
    for v in variants:
        rows: dict[int, dict[str, list[float]]] = {}
        for r in _ok_runs(records, v.name):
            for row, e in (r.get("engagement") or {}).items():
                d = rows.setdefault(int(row), {"c": [], "g": []})
                if e.get("contribution") is not None:
                    d["c"].append(float(e["contribution"]))
                if e.get("gate"):
                    d["g"].append(float(np.mean(e["gate"])))
        for row in sorted(rows):
            c, g = rows[row]["c"], rows[row]["g"]
            body.append(
                [
                    v.name,
                    str(row),
                    f"{np.mean(c):.4f}" if c else "",
                    f"{np.mean(g):+.4f}" if g else "",
                    str(max(len(c), len(g))),
                ]
            )
    return head, body


def val_images(data: str, k: int) -> list[Path]:
    """The first ``k`` validation images of the dataset (sorted paths: the same for every variant)."""
    from yoloattn.data import load_dataset_config
    from yoloattn.data.scan import find_images

    if k <= 0:
        return []
    images, _, _ = find_images(load_dataset_config(data).val)
    return sorted(images)[:k]


def encode(im: Any, width: int = PANEL_WIDTH, fmt: str = "JPEG") -> Panel:
    """A Pillow image scaled to ``width`` (never up) and encoded (JPEG, or PNG)."""
    from PIL import Image

    if im.width > width:
        im = im.resize((width, max(1, round(im.height * width / im.width))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.convert("RGB").save(buf, "JPEG", quality=JPEG_QUALITY)
        return Panel("", buf.getvalue(), "image/jpeg")
    im.save(buf, "PNG")
    return Panel("", buf.getvalue(), "image/png")


def _explain_variant(weights: Path, images: Sequence[Path], imgsz: int, device: str) -> list[list[Panel]]:
    from yoloattn.engine.distributed import select_device
    from yoloattn.engine.explain import explain_image, panel_captions, render_explanation
    from yoloattn.engine.predictor import load_image
    from yoloattn.models.weights import load_model

    dev = select_device(device)
    model = load_model(weights, device=dev)
    names = list(model.names)
    cells = []
    for path in images:
        img0 = load_image(path)
        # LayerCAM per detected class: one backward pass per class, cheap on a study's val images
        exp = explain_image(model, img0, imgsz=imgsz, target="class", max_det=100, device=dev)
        text = panel_captions(exp)
        cell = []
        for key, im in render_explanation(exp, img0, names, captions=False).items():
            p = encode(im)
            p.caption = text[key].replace("\n", "; ")
            cell.append(p)
        cells.append(cell)
    return cells


def explain_grid(
    cfg: Any, variants: Sequence[Any], records: Sequence[Mapping[str, Any]], k: int
) -> tuple[list[Path], list[VariantImages]]:
    """The same ``k`` validation images explained by each variant's final weights (first finished
    seed). Never raises: a variant that cannot be explained gets a note."""
    from yoloattn.engine.runs import RunDir

    try:
        images = val_images(cfg.data, k)
    except Exception as e:  # the report must not fail on the pictures
        LOGGER.warning("report: no validation images for the grid: %s", e)
        return [], []
    if not images:
        return [], []
    imgsz = int(cfg.train.get("imgsz", 640))
    out = []
    for v in variants:
        runs = _ok_runs(records, v.name)
        vi = VariantImages(v.name)
        if not runs:
            vi.note = "no finished run"
        else:
            run = RunDir(runs[0]["run_dir"])
            try:
                vi.cells = _explain_variant(run.last, images, imgsz, str(cfg.train.get("device", "")))
                vi.note = f"final weights of {run.root.name}"
            except Exception as e:
                LOGGER.warning("report: cannot explain %s with %s: %s", v.name, run.last, e)
                vi.note = f"could not explain {run.root.name}: {type(e).__name__}: {e}"
        out.append(vi)
    return images, out


def _read_plot(path: Path, caption: str) -> Panel | None:
    return Panel(caption, path.read_bytes(), "image/png") if path.is_file() else None


def build_report(
    root: Path,
    cfg: Any,
    variants: Sequence[Any],
    records: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    settings: list[str],
    notes: list[str],
    plots: Sequence[str],
    per_class: tuple[list[str], list[list[str]]] | None = None,
    n_images: int = 3,
) -> ReportData:
    """The report of the study in ``root``: ``plots`` are file names in ``root`` (as drawn by
    :func:`yoloattn.experiments.plots.draw_plots` and ``draw_curves``)."""
    from yoloattn.experiments.plots import PLOTS
    from yoloattn.experiments.tables import table_cells

    head, body = table_cells(rows)
    errors = [f"{r['variant']}: {r['errors']}" for r in rows if r.get("errors")]
    data = ReportData(cfg.name, title, settings, head, body, errors, notes)
    if per_class:
        data.per_class_head, data.per_class_rows = per_class
    order = sorted((p for p in plots if p != "curves.png"), key=lambda p: p != "forest.png")
    data.plots = [p for p in (_read_plot(root / f, PLOTS.get(f, f)) for f in order) if p is not None]
    if "curves.png" in plots:
        data.curves = _read_plot(root / "curves.png", PLOTS["curves.png"])
    data.engagement_head, data.engagement_rows = engagement_rows(variants, records)
    images, grid = explain_grid(cfg, variants, records, n_images)
    data.images, data.grid = [p.name for p in images], grid
    return data
