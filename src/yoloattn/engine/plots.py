"""Metric plots: PR / F1 / P / R curves, confusion matrix and the training ``results.png``.

:mod:`yoloattn.engine.metrics` computes and returns data; the callers (trainer, ``yoloattn
val``) hand it to these functions: ``plot_metric_curves(det_metrics.result, folder, names)``,
``plot_confusion_matrix(confusion.matrix, path, names)``.

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure`` rendered by the
Agg canvas), so no GUI backend or pyplot global state is involved and the bundled DejaVu font
is used; nothing is downloaded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from yoloattn.engine.metrics import APResult, smooth
from yoloattn.engine.runs import read_results

__all__ = [
    "plot_confusion_matrix",
    "plot_mc_curve",
    "plot_metric_curves",
    "plot_pr_curve",
    "plot_results_csv",
]

LOGGER = logging.getLogger(__name__)

_MAX_LEGEND = 20  # per-class legend entries only below this many classes


def _save(fig: Figure, path: str | Path, dpi: int = 200) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return path


def _names(names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(n)]
    return [str(x) for x in names]


def _smooth(y: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    return smooth(y, fraction) if y.size else y


def plot_pr_curve(
    px: np.ndarray,
    pr_curve: np.ndarray,
    ap: np.ndarray,
    path: str | Path,
    names: Sequence[str] | None = None,
) -> Path:
    """Precision-recall curves per class and their mean.

    Args:
        px: ``[P]`` recall grid.
        pr_curve: ``[k, P]`` precision per class at the recall grid.
        ap: ``[k, T]`` AP per class (column 0 is AP@0.5, shown in the legend) or ``[k]``.
        path: output PNG.
        names: the ``k`` class names.
    """
    pr_curve = np.atleast_2d(np.asarray(pr_curve, dtype=float))
    ap = np.asarray(ap, dtype=float)
    ap50 = ap[:, 0] if ap.ndim == 2 else ap
    labels = _names(names, pr_curve.shape[0])
    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.subplots()
    show_legend = 0 < pr_curve.shape[0] < _MAX_LEGEND
    for i, y in enumerate(pr_curve):
        ax.plot(px, y, linewidth=1, label=f"{labels[i]} {ap50[i]:.3f}" if show_legend else None, color="grey")
    if pr_curve.shape[0]:
        ax.plot(
            px, pr_curve.mean(0), linewidth=3, color="blue", label=f"all classes {ap50.mean():.3f} mAP@0.5"
        )
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    ax.set_title("Precision-Recall Curve")
    return _save(fig, path)


def plot_mc_curve(
    px: np.ndarray,
    curves: np.ndarray,
    path: str | Path,
    names: Sequence[str] | None = None,
    xlabel: str = "Confidence",
    ylabel: str = "Metric",
) -> Path:
    """Metric-vs-confidence curves per class plus the (lightly smoothed) class mean."""
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    labels = _names(names, curves.shape[0])
    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.subplots()
    show_legend = 0 < curves.shape[0] < _MAX_LEGEND
    for i, y in enumerate(curves):
        ax.plot(px, y, linewidth=1, label=labels[i] if show_legend else None, color="grey")
    if curves.shape[0]:
        mean = _smooth(curves.mean(0), 0.05)
        i = int(mean.argmax())
        ax.plot(px, mean, linewidth=3, color="blue", label=f"all classes {mean[i]:.2f} at {px[i]:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    ax.set_title(f"{ylabel}-{xlabel} Curve")
    return _save(fig, path)


def plot_metric_curves(
    result: APResult | None, save_dir: str | Path, names: Sequence[str] | None = None
) -> list[Path]:
    """Write ``PR_curve.png``, ``F1_curve.png``, ``P_curve.png`` and ``R_curve.png``.

    ``result`` is :attr:`DetMetrics.result <yoloattn.engine.metrics.DetMetrics.result>` (None
    before any :meth:`~yoloattn.engine.metrics.DetMetrics.compute`, or with no TP so far: a
    warning, nothing written). ``names`` are the names of *all* classes (indexed by class id);
    only the classes present in ``result.classes`` are drawn.
    """
    if result is None:
        LOGGER.warning("plot_metric_curves: nothing to plot (call compute() first; no TP so far?)")
        return []
    save_dir = Path(save_dir)
    all_names = _names(names, int(result.classes.max()) + 1 if result.classes.size else 0)
    if result.classes.size and len(all_names) <= int(result.classes.max()):
        raise ValueError(
            f"names has {len(all_names)} entries but class {int(result.classes.max())} is present"
        )
    labels = [all_names[c] for c in result.classes]
    return [
        plot_pr_curve(result.px, result.pr_curve, result.ap, save_dir / "PR_curve.png", labels),
        plot_mc_curve(result.px, result.f1_curve, save_dir / "F1_curve.png", labels, ylabel="F1"),
        plot_mc_curve(result.px, result.p_curve, save_dir / "P_curve.png", labels, ylabel="Precision"),
        plot_mc_curve(result.px, result.r_curve, save_dir / "R_curve.png", labels, ylabel="Recall"),
    ]


def plot_confusion_matrix(
    matrix: np.ndarray,
    path: str | Path,
    names: Sequence[str] | None = None,
    normalize: bool = True,
) -> Path:
    """Heat map of a ``[nc+1, nc+1]`` confusion matrix (rows predicted, columns true)."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"matrix must be square [nc+1, nc+1] with nc >= 1, got shape {m.shape}")
    nc = m.shape[0] - 1
    labels = _names(names, nc)
    if len(labels) != nc:
        raise ValueError(f"names has {len(labels)} entries but the matrix is for nc={nc}")
    labels = [*labels, "background"]
    if normalize:
        m = m / (m.sum(0, keepdims=True) + 1e-9)
    shown = np.where(m < 0.005, np.nan, m) if normalize else m
    size = min(max(6.0, 0.35 * (nc + 1) + 3), 24.0)
    fig = Figure(figsize=(size * 1.1, size), tight_layout=True)
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if nc < 100:
        fontsize = 8 if nc < 30 else 5
        ax.set_xticks(range(nc + 1), labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(nc + 1), labels, fontsize=fontsize)
    if nc < 30:
        for (i, j), v in np.ndenumerate(m):
            if (normalize and v >= 0.005) or (not normalize and v > 0):
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=7, color="white" if v > 0.6 else "black"
                )
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_title("Confusion Matrix" + (" (normalised per true class)" if normalize else ""))
    return _save(fig, path, dpi=150)


def plot_results_csv(csv_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Plot every numeric column of a training ``results.csv`` against the epoch (``results.png``).

    The x axis is the ``epoch`` column when there is one, else the row number. Column names are
    stripped of surrounding spaces; empty cells (epochs without validation) are left out of
    their column's line. Writes ``out_path`` (default ``results.png`` next to the CSV).
    """
    csv_path = Path(csv_path)
    cols = read_results(csv_path)
    n = len(next(iter(cols.values()))) if cols else 0
    x = cols.get("epoch")
    if x is None:
        x = np.arange(n, dtype=float)
    series = [(k, v) for k, v in cols.items() if k != "epoch"]
    if not series:
        raise ValueError(f"{csv_path} has no numeric columns besides 'epoch'")
    ncols = min(5, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.8 * nrows), tight_layout=True)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, (name, y) in zip(axes, series):
        ok = np.isfinite(y)  # empty cells (epochs not validated) are skipped, not plotted as 0
        ax.plot(x[ok], y[ok], marker=".", linewidth=2, markersize=6, label="results")
        if ok.sum() > 2:
            ax.plot(x[ok], _smooth(y[ok], 0.05), ":", linewidth=2, label="smooth")
        ax.set_title(name, fontsize=10)
    for ax in axes[len(series) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    out = Path(out_path) if out_path is not None else csv_path.with_name("results.png")
    return _save(fig, out, dpi=150)
