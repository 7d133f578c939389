"""The summary's text: the variant table (Markdown and CSV), the settings, the per-class table.

Pure formatting of what :mod:`yoloattn.experiments.report` computed; nothing here measures or
decides anything.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMNS",
    "fmt",
    "human_bytes",
    "per_class_cells",
    "per_class_markdown",
    "settings_lines",
    "table_cells",
    "to_markdown",
    "write_csv",
    "write_per_class_csv",
]

COLUMNS = [
    "variant",
    "params",
    "gflops",
    "latency_ms",
    "seeds",
    "failed",
    "mAP50_mean",
    "mAP50_std",
    "mAP50-95_mean",
    "mAP50-95_std",
    "coco_AP_mean",
    "coco_AP_std",
    "insert",
    "mAP50@0_mean",
    "mAP50-95@0_mean",
    "engagement_mean",
    "gate_abs_mean",
    "d_mAP50",
    "d_mAP50_ci_low",
    "d_mAP50_ci_high",
    "d_mAP50-95",
    "d_mAP50-95_ci_low",
    "d_mAP50-95_ci_high",
    "p_value",
    "p_holm",
    "verdict",
    "method",
    "errors",
]


def fmt(v: Any, nd: int = 4) -> str:
    """A table cell: floats to ``nd`` decimals, NaN and None empty."""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.{nd}f}"
    return "" if v is None else str(v)


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _delta_cell(r: Mapping[str, Any], key: str) -> str:
    d = r.get(key, math.nan)
    if r["variant"] == "baseline" or not isinstance(d, float) or math.isnan(d):
        return ""
    lo, hi = r.get(f"{key}_ci_low", math.nan), r.get(f"{key}_ci_high", math.nan)
    return f"{d:+.4f}" + ("" if math.isnan(lo) else f" [{lo:+.4f}, {hi:+.4f}]")


def table_cells(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The variant table as text cells: its header and one row of cells per variant."""
    head = [
        "variant",
        "params",
        "GFLOPs",
        "latency ms",
        "seeds",
        "mAP50",
        "mAP50-95",
        "COCO AP",
        "insert",
        "mAP50-95 @0",
        "engagement",
        "Δ mAP50 [95% CI]",
        "Δ mAP50-95 [95% CI]",
        "p (Holm)",
        "verdict",
    ]
    body = []
    for r in rows:
        seeds = f"{r['seeds']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        p = r.get("p_holm", math.nan)
        p = r.get("p_value", math.nan) if not isinstance(p, float) or math.isnan(p) else p
        body.append(
            [
                r["variant"],
                f"{r.get('params', 0):,}",
                fmt(r.get("gflops"), 2),
                fmt(r.get("latency_ms"), 1),
                seeds,
                f"{fmt(r['mAP50_mean'])} ± {fmt(r['mAP50_std'])}",
                f"{fmt(r['mAP50-95_mean'])} ± {fmt(r['mAP50-95_std'])}",
                f"{fmt(r['coco_AP_mean'])} ± {fmt(r['coco_AP_std'])}",
                r.get("insert") or "",
                fmt(r.get("mAP50-95@0_mean")),
                fmt(r.get("engagement_mean"), 3),
                _delta_cell(r, "d_mAP50"),
                _delta_cell(r, "d_mAP50-95"),
                "" if r["variant"] == "baseline" else fmt(p, 3),
                r.get("verdict", ""),
            ]
        )
    return head, body


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The variant table (one row per variant) and the failures below it."""
    head, body = table_cells(rows)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    for r in rows:
        if r["errors"]:
            lines.append(f"\n**{r['variant']} failed:** {r['errors']}")
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(
                {k: fmt(r.get(k), 6) if isinstance(r.get(k), float) else r.get(k, "") for k in COLUMNS}
            )


def settings_lines(settings: Mapping[str, Any]) -> list[str]:
    """The study's settings as Markdown bullets (``settings`` as in ``summary.json``)."""
    fp = settings["fingerprint"]
    data = fp["data"]
    w = fp.get("weights")
    epochs = fp.get("epochs")
    lines = [
        f"- **model** {fp['model']}; **data** `{data['yaml']}` (hash {data['hash']}, "
        f"{data['train_images']} train / {data['val_images']} val images, {data['classes']} classes"
        + (
            f", {settings['val_instances']} val instances"
            if settings.get("val_instances") is not None
            else ""
        )
        + ")",
        f"- **epochs** {epochs if epochs is not None else 'default (100 YOLOv5 / 300 YOLOv7)'}; "
        f"**imgsz** {fp['imgsz']}; **batch** {fp['batch']} (nbs {fp['nbs']})",
        "- **weights** "
        + (f"`{w['file']}` (sha256 {w['sha256']})" if w else "none (from scratch)")
        + f"; **insertion** insert={fp['insert']}, gate={fp['gate']}, gate_lr_mult={fp['gate_lr_mult']}, "
        f"new_lr_mult={fp['new_lr_mult']}, warmup_new={fp['warmup_new']}",
        f"- **recipe** {fp['hyp'] or 'the model default'}; **overrides** "
        + (", ".join(f"{k}={v}" for k, v in (fp.get("hyp_overrides") or {}).items()) or "none"),
        f"- **seeds** {', '.join(map(str, settings['seeds']))}; "
        f"**variants** {', '.join(settings['variants'])}",
        f"- **other options** {settings['other_options'] or 'all defaults'}; yoloattn {fp['version']}",
        f"- **size on disk** {human_bytes(settings['disk_bytes'])} "
        f"({'resume state kept' if settings.get('keep_state') else 'resume state of finished runs deleted'})",
    ]
    return lines


def per_class_cells(
    names: Sequence[str], per_class: Mapping[str, Sequence[float]]
) -> tuple[list[str], list[list[str]]]:
    """Per-class AP50-95 as text cells: header ``class, <variants>``, one row per class that has
    a value (a class without labels is NaN for every variant and left out)."""
    variants = list(per_class)
    body = []
    for c, name in enumerate(names):
        vals = [per_class[v][c] for v in variants]
        if all(isinstance(x, float) and math.isnan(x) for x in vals):
            continue
        body.append([str(name), *(fmt(float(x)) for x in vals)])
    return ["class", *variants], body


def per_class_markdown(names: Sequence[str], per_class: Mapping[str, Sequence[float]]) -> str:
    """Per-class AP50-95 (mean over seeds), one row per class, one column per variant."""
    head, body = per_class_cells(names, per_class)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def write_per_class_csv(path: Path, names: Sequence[str], per_class: Mapping[str, Sequence[float]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["class", *per_class])
        for c, name in enumerate(names):
            w.writerow([name, *(fmt(float(per_class[v][c]), 6) for v in per_class)])
