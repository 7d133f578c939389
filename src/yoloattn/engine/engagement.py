"""Engagement of inserted attention rows: is a module actually used by the trained network?

For every attention row the meter records, over the images it sees, the mean relative
contribution ``||y - x|| / ||x||`` per image, where ``x`` is the row's input and ``y`` its output.
For a row inserted as the identity (``y = x + g * (A(x) - x)``) that is ``||g (A(x) - x)|| / ||x||``;
for a plain row it is ``||A(x) - x|| / ||x||``. A value near 0 means the row passes its input
through: the study compared the baseline with itself. The gate values of gated rows are read too.

>>> with measure_engagement(model) as meter:      # doctest: +SKIP
...     model(images)
>>> meter.summary()                               # {row: {"contribution": ..., "gate": [...]}}
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import Tensor, nn

from yoloattn.nn.gate import ResidualGate

__all__ = [
    "attention_layers",
    "gate_values",
    "EngagementMeter",
    "measure_engagement",
    "mean_engagement",
    "format_engagement",
]


def _layers(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)  # DDP
    return getattr(inner, "model", inner)


def attention_layers(model: nn.Module) -> dict[int, nn.Module]:
    """Row index -> layer for every attention row of a detector (gated or plain)."""
    inner = getattr(model, "module", model)
    rows = getattr(inner, "rows", None)
    layers = cast(nn.Sequential, _layers(model))
    if rows is None:
        return {}
    return {r.index: layers[r.index] for r in rows if r.kind == "attention"}


def gate_values(model: nn.Module) -> dict[int, list[float]]:
    """Row index -> gate value(s) of every gated attention row."""
    return {
        i: [float(v) for v in m.gate.detach().float().cpu()]
        for i, m in attention_layers(model).items()
        if isinstance(m, ResidualGate)
    }


class EngagementMeter:
    """Accumulates per-image relative contributions of hooked rows (see module docstring)."""

    def __init__(self) -> None:
        self.total: dict[int, float] = {}
        self.images: dict[int, int] = {}
        self.gates: dict[int, list[float]] = {}

    def update(self, row: int, x: Tensor, y: Tensor) -> None:
        with torch.no_grad():
            x32 = x.detach().float().flatten(1)
            d = (y.detach().float().flatten(1) - x32).norm(dim=1)
            ratio = d / x32.norm(dim=1).clamp_min(1e-12)
            self.total[row] = self.total.get(row, 0.0) + float(ratio.sum())
            self.images[row] = self.images.get(row, 0) + int(ratio.numel())

    def summary(self) -> dict[int, dict[str, Any]]:
        """Row -> ``{"contribution": mean ratio or None, "gate": [values] or None, "images": n}``."""
        rows = sorted(set(self.total) | set(self.gates))
        return {
            r: {
                "contribution": self.total[r] / self.images[r] if self.images.get(r) else None,
                "gate": self.gates.get(r),
                "images": self.images.get(r, 0),
            }
            for r in rows
        }


@contextlib.contextmanager
def measure_engagement(model: nn.Module) -> Iterator[EngagementMeter]:
    """Hook every attention row of ``model`` while the block runs; the meter holds the result."""
    meter = EngagementMeter()
    meter.gates = gate_values(model)
    handles = []
    for i, layer in attention_layers(model).items():

        def hook(_m: nn.Module, args: tuple[Any, ...], out: Any, row: int = i) -> None:
            if args and isinstance(args[0], Tensor) and isinstance(out, Tensor):
                meter.update(row, args[0], out)

        handles.append(layer.register_forward_hook(hook))
    try:
        yield meter
    finally:
        for h in handles:
            h.remove()


def mean_engagement(summary: dict[Any, dict[str, Any]]) -> float | None:
    """Mean contribution over the rows of a :meth:`EngagementMeter.summary` (None if no rows)."""
    vals = [v["contribution"] for v in summary.values() if v.get("contribution") is not None]
    return sum(vals) / len(vals) if vals else None


def format_engagement(summary: dict[Any, dict[str, Any]]) -> str:
    """One line: ``row 9 0.031 (g +0.12), row 19 ...`` (contribution, and the gate when gated)."""
    parts = []
    for row, v in summary.items():
        c = v.get("contribution")
        text = f"row {row} {c:.3f}" if c is not None else f"row {row} -"
        gate = v.get("gate")
        if gate:
            g = sum(gate) / len(gate)
            text += f" (g {g:+.3f})" if len(gate) == 1 else f" (mean g {g:+.3f})"
        parts.append(text)
    return ", ".join(parts)
