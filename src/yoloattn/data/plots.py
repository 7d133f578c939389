"""``labels.png``: class histogram and box centre / size distributions of a dataset split.

Uses matplotlib's object API with the Agg canvas (no global backend change, no display).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from yoloattn.data.report import class_counts

__all__ = ["plot_labels"]


def plot_labels(
    labels: np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Write a 2x2 figure for ``labels`` (``[M, 5]`` class, x, y, w, h normalised) to ``path``.

    Panels: boxes per class; box centres (x, y) and box sizes (w, h) as 2-D histograms over
    [0, 1] (log colour scale); the box-size distribution (sqrt(w * h), fraction of the image side).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    labels = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
    nc = len(names)
    counts = class_counts(labels, nc)
    fig = Figure(figsize=(10, 8), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots(2, 2)

    a = ax[0, 0]
    a.bar(np.arange(len(counts)), counts, color="tab:blue")
    a.set_ylabel("boxes")
    a.set_title(f"{int(counts.sum())} boxes, {int((counts > 0).sum())}/{nc} classes present")
    if nc <= 30:
        a.set_xticks(np.arange(nc))
        a.set_xticklabels(list(names), rotation=90, fontsize=8)
    else:
        a.set_xlabel("class id")

    bins = 50
    for a, (i, j), xlabel, ylabel, what in (
        (ax[0, 1], (1, 2), "x", "y", "box centres"),
        (ax[1, 0], (3, 4), "width", "height", "box sizes"),
    ):
        if len(labels):
            a.hist2d(
                labels[:, i],
                labels[:, j],
                bins=bins,
                range=[[0, 1], [0, 1]],
                cmap="viridis",
                norm=LogNorm(),
                cmin=1,
            )
        a.set_xlim(0, 1)
        a.set_ylim(0, 1)
        a.set_xlabel(xlabel)
        a.set_ylabel(ylabel)
        a.set_title(what)
    ax[0, 1].invert_yaxis()  # image convention: y grows downwards

    a = ax[1, 1]
    if len(labels):
        a.hist(np.sqrt(labels[:, 3] * labels[:, 4]), bins=bins, range=(0, 1), color="tab:blue")
    a.set_xlabel("sqrt(w * h) (fraction of image side)")
    a.set_ylabel("boxes")
    a.set_title("box size")
    if title:
        fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
