"""The summary's plots: forest plot of Δ, mAP bars, accuracy against cost, training curves.

Every plot carries a title naming the model, data, epochs and seeds, and no axis exaggerates:
value axes start at zero (bars, accuracy against GFLOPs or latency, where the cost labels state
the relative change to the baseline), and the forest plot shows differences around a zero line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PLOTS", "draw_curves", "draw_plots"]

#: file name -> what it shows
PLOTS = {
    "forest.png": "Δ mAP50-95 (variant − baseline) with its 95 % interval per variant, zero line",
    "map_bar.png": "mAP50 and mAP50-95 per variant, mean ± std over seeds, axis from 0",
    "map_vs_gflops.png": "mAP50-95 against GFLOPs, both axes from 0, relative cost in the labels",
    "map_vs_latency.png": "mAP50-95 against CPU latency, both axes from 0, relative cost in the labels",
    "curves.png": "training curves per variant (one line per seed): train loss, val mAP50, val mAP50-95",
}

#: curves.png panels: (title, results.csv columns summed, axis from 0)
CURVES = (
    ("train loss (box + obj + cls)", ("train/box_loss", "train/obj_loss", "train/cls_loss")),
    ("val mAP@0.5", ("metrics/mAP_0.5",)),
    ("val mAP@0.5:0.95", ("metrics/mAP_0.5:0.95",)),
)


def _nan0(v: Any) -> float:
    return 0.0 if not isinstance(v, float) or math.isnan(v) else v


def _forest(plt: Any, root: Path, rows: Sequence[Mapping[str, Any]], title: str) -> bool:
    rows = [r for r in rows if r["variant"] != "baseline" and not math.isnan(r.get("d_mAP50-95", math.nan))]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(rows)))
    for i, r in enumerate(rows):
        d, lo, hi = (
            r["d_mAP50-95"],
            r.get("d_mAP50-95_ci_low", math.nan),
            r.get("d_mAP50-95_ci_high", math.nan),
        )
        color = {"better": "C2", "worse": "C3"}.get(r.get("verdict", ""), "C0")
        if not math.isnan(lo):
            ax.plot([lo, hi], [i, i], color=color, lw=2)
        ax.plot([d], [i], "o", color=color)
    ax.axvline(0.0, color="k", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [f"{r['variant']}\n{r.get('verdict', '')}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    lim = max(
        abs(v)
        for r in rows
        for v in (r["d_mAP50-95"], _nan0(r.get("d_mAP50-95_ci_low")), _nan0(r.get("d_mAP50-95_ci_high")))
    )
    ax.set_xlim(-1.1 * lim - 1e-6, 1.1 * lim + 1e-6)  # symmetric about zero
    method = rows[0].get("method", "")
    ax.set_xlabel(f"Δ mAP50-95 vs baseline, 95 % interval\n{method}", fontsize=9)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(root / "forest.png", dpi=120)
    plt.close(fig)
    return True


def _bars(plt: Any, root: Path, rows: Sequence[Mapping[str, Any]], title: str) -> bool:
    names = [r["variant"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for a, key, label in ((ax[0], "mAP50", "mAP@0.5"), (ax[1], "mAP50-95", "mAP@0.5:0.95")):
        means = [_nan0(r[f"{key}_mean"]) for r in rows]
        stds = [_nan0(r[f"{key}_std"]) for r in rows]
        a.bar(range(len(rows)), means, yerr=stds, capsize=4, color=["grey"] + ["C0"] * (len(rows) - 1))
        a.set_xticks(range(len(rows)), names, rotation=30, ha="right")
        a.set_ylim(bottom=0)
        a.set_ylabel(f"{label} (mean ± std over seeds)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(root / "map_bar.png", dpi=120)
    plt.close(fig)
    return True


def _cost(
    plt: Any, root: Path, rows: Sequence[Mapping[str, Any]], title: str, xkey: str, label: str, fname: str
) -> bool:
    if not all(isinstance(r.get(xkey), float) for r in rows):
        return False
    base = next((r[xkey] for r in rows if r["variant"] == "baseline"), None)
    fig, a = plt.subplots(figsize=(6, 4.5))
    for i, r in enumerate(rows):
        a.errorbar(r[xkey], _nan0(r["mAP50-95_mean"]), yerr=_nan0(r["mAP50-95_std"]), fmt="o", capsize=3)
        rel = f" ({100 * (r[xkey] / base - 1):+.1f} %)" if base and r["variant"] != "baseline" else ""
        a.annotate(
            r["variant"] + rel,
            (r[xkey], _nan0(r["mAP50-95_mean"])),
            fontsize=8,
            xytext=(4, 4 - 11 * i),  # staggered: variants often sit on one spot
            textcoords="offset points",
        )
    a.set_xlim(left=0, right=1.15 * max(r[xkey] for r in rows) + 1e-9)
    a.set_ylim(
        bottom=0,
        top=max(1e-3, 1.15 * max(_nan0(r["mAP50-95_mean"]) + _nan0(r["mAP50-95_std"]) for r in rows)),
    )
    a.set_xlabel(f"{label} (labels: change vs baseline)")
    a.set_ylabel("mAP@0.5:0.95 (mean ± std over seeds)")
    a.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(root / fname, dpi=120)
    plt.close(fig)
    return True


def draw_plots(root: Path, rows: Sequence[Mapping[str, Any]], title: str) -> list[str]:
    """Draw every plot that the rows allow into ``root``; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    if _forest(plt, root, rows, title):
        out.append("forest.png")
    if _bars(plt, root, rows, title):
        out.append("map_bar.png")
    for xkey, label, fname in (
        ("gflops", "GFLOPs", "map_vs_gflops.png"),
        ("latency_ms", "CPU latency (ms)", "map_vs_latency.png"),
    ):
        if _cost(plt, root, rows, title, xkey, label, fname):
            out.append(fname)
    return out


def draw_curves(root: Path, curves: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> bool:
    """``curves.png``: per variant (one colour) and seed (one line) the :data:`CURVES` panels
    against the epoch. ``curves`` maps variant -> the seeds' ``results.csv`` columns (arrays, NaN
    for empty cells; :func:`yoloattn.engine.runs.read_results`). Epochs without validation
    (``--noval``) leave gaps; a panel with nothing to show says so. False when no run has curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not any(curves.values()):
        return False
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.6))
    for ax, (name, cols) in zip(axes, CURVES):
        drawn = False
        for k, (variant, runs) in enumerate(curves.items()):
            for j, run in enumerate(runs):
                if not all(c in run for c in cols):
                    continue
                y = np.sum([np.asarray(run[c], dtype=np.float64) for c in cols], axis=0)
                x = np.asarray(run.get("epoch", np.arange(len(y))), dtype=np.float64) + 1
                ok = np.isfinite(y)
                if ok.any():
                    label = variant if j == 0 else None
                    ax.plot(x[ok], y[ok], marker="o", ms=3, lw=1.5, color=f"C{k}", label=label, alpha=0.85)
                    drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not measured during training\n(--noval)", ha="center", va="center")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.set_ylim(bottom=0)
            ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    fig.savefig(root / "curves.png", dpi=110)
    plt.close(fig)
    return True
