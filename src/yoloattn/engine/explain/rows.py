"""Attention maps of the attention rows of a detector, recorded by forward hooks.

The attention rows are ``model.model[i]`` with ``model.rows[i].kind == "attention"``; a row
inserted as the identity is a :class:`~yoloattn.nn.gate.ResidualGate` whose module is ``.attn``
(its gate ``.gate`` is reported alongside). The maps come from
:func:`yoloattn.attention.capture_maps`, so the model's outputs are bit-identical with and
without capture.

>>> with capture_rows(model) as maps:         # doctest: +SKIP
...     model(x)
>>> maps[19].kind, maps[19].values.shape      # ('spatial', (1, 40, 40)) for a CBAM row
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from torch import nn

from yoloattn.attention import AttentionMap, capture_maps
from yoloattn.engine.engagement import attention_layers
from yoloattn.nn.gate import ResidualGate

__all__ = ["AttentionRow", "attention_rows", "capture_rows"]


@dataclass(frozen=True)
class AttentionRow:
    """One attention row: its index, registry key, the attention module and its gate values."""

    index: int
    key: str
    module: nn.Module
    gate: tuple[float, ...] | None


def attention_rows(model: nn.Module, rows: Iterable[int] | None = None) -> dict[int, AttentionRow]:
    """Row index -> :class:`AttentionRow` for the attention rows of ``model`` (all, or ``rows``).

    Raises ValueError naming the attention rows when ``rows`` asks for one that is not.
    """
    layers = attention_layers(model)
    inner = getattr(model, "module", model)
    keys = {r.index: r.name for r in getattr(inner, "rows", [])}
    wanted = sorted(layers) if rows is None else list(rows)
    bad = [i for i in wanted if i not in layers]
    if bad:
        have = ", ".join(str(i) for i in sorted(layers)) or "none"
        raise ValueError(f"rows {bad} are not attention rows of this model (attention rows: {have})")
    out: dict[int, AttentionRow] = {}
    for i in wanted:
        layer = layers[i]
        module, gate = layer, None
        if isinstance(layer, ResidualGate):
            module = layer.attn
            gate = tuple(float(v) for v in layer.gate.detach().float().cpu())
        key = str(getattr(module, "attention_key", "") or keys.get(i, ""))
        out[i] = AttentionRow(i, key, module, gate)
    return out


@contextlib.contextmanager
def capture_rows(model: nn.Module, rows: Iterable[int] | None = None) -> Iterator[dict[int, AttentionMap]]:
    """Record the :class:`~yoloattn.attention.AttentionMap` of every (or each given) attention row
    during the block; the dict maps row index -> map of the latest forward."""
    found = attention_rows(model, rows)
    with capture_maps({i: r.module for i, r in found.items()}) as maps:
        yield maps
