"""The :class:`AttentionMap` record and the helpers the map extractors share.

Part of :mod:`yoloattn.attention.maps` (the public API, which re-exports :class:`AttentionMap`,
:data:`MAP_KINDS` and :func:`effective_gate`); the per-module extractors are in
:mod:`yoloattn.attention._map_extractors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

#: The three kinds of map (see the module docstring).
MAP_KINDS = ("spatial", "channel", "positions")

Taps = dict[str, list[Tensor]]
#: ``fn(module, x, y, taps)``; ``module`` is typed Any: each extractor knows its class's attributes
Extractor = Callable[[Any, Tensor, Tensor, Taps], "AttentionMap"]

_EPS = 1e-12


@dataclass(frozen=True)
class AttentionMap:
    """The attention of one module on one batch.

    Attributes:
        kind: ``"spatial"``, ``"channel"`` or ``"positions"`` (see the module docstring).
        values: ``(B, H, W)`` for spatial and positions maps, ``(B, C)`` for channel maps;
            float32, detached, on the module's device.
        source: ``"internal"`` (the module's own gate / attention) or ``"generic"``.
        bounds: the range the values lie in, ``(low, high)`` (``inf`` when unbounded).
        key: registry key of the module (``""`` for an unregistered module).
        extra: further tensors some modules offer: ``"channel"`` ``(B, C)`` channel weights
            of hybrid modules, ``"branches"`` ``(B, M, C)`` branch weights of selective-kernel
            style modules, ``"emphasis"`` ``(B, H, W)`` for channel maps (where the channels the
            module up-weights are active: ``sum_c w_c |x_c| / sum_c |x_c|``).
    """

    kind: str
    values: Tensor
    source: str
    bounds: tuple[float, float] = (0.0, 1.0)
    key: str = ""
    extra: Mapping[str, Tensor] = field(default_factory=dict)

    def spatial(self) -> Tensor | None:
        """A ``(B, H, W)`` map to draw: the values, or a channel map's ``"emphasis"``."""
        if self.kind == "channel":
            return self.extra.get("emphasis")
        return self.values


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _f(t: Tensor) -> Tensor:
    return t.detach().float()


def _scale_to_max(t: Tensor) -> Tensor:
    """``t / max(t)`` per image (``t`` non-negative, ``(B, ...)``); an all-zero map stays zero."""
    m = t.flatten(1).amax(1).clamp_min(_EPS)
    return t / m.view(-1, *([1] * (t.dim() - 1)))


def _to_distribution(t: Tensor) -> Tensor:
    """``t / sum(t)`` per image (``t`` non-negative, ``(B, H, W)``)."""
    return t / t.flatten(1).sum(1).clamp_min(_EPS).view(-1, 1, 1)


def effective_gate(x: Tensor, y: Tensor, dims: tuple[int, ...], fill: float = 1.0) -> Tensor:
    """Least-squares gate ``g`` with ``y ~ x * g``, constant along ``dims``.

    ``g = sum(x * y) / sum(x * x)`` over ``dims`` (kept as size-1 dims). It is the exact gate when
    ``y = x * g`` with ``g`` broadcast along ``dims``, and the ``x^2``-weighted mean of an
    element-wise gate otherwise. Where ``x`` is all zero the gate is undefined: ``fill``.
    """
    x32, y32 = _f(x), _f(y)
    num = (x32 * y32).sum(dims, keepdim=True)
    den = (x32 * x32).sum(dims, keepdim=True)
    return torch.where(den > 0, num / den.clamp_min(_EPS), torch.full_like(num, fill))


def _received(attn: Tensor, h: int, w: int) -> Tensor:
    """Attention received per key position: ``attn`` is ``(B, ..., Q, K=h*w)`` with rows summing
    to 1; returns the mean over all queries (and heads) as a ``(B, h, w)`` distribution."""
    b, k = attn.shape[0], attn.shape[-1]
    return _to_distribution(attn.reshape(b, -1, k).mean(1).reshape(b, h, w))


def _channel(module: nn.Module, x: Tensor, weights: Tensor, **kw: Any) -> AttentionMap:
    """A channel map with its ``emphasis`` (where the up-weighted channels are active)."""
    w = _f(weights).flatten(1)  # B x C
    a = _f(x).abs()
    emphasis = (a * w[:, :, None, None]).sum(1) / a.sum(1).clamp_min(_EPS)
    extra = {"emphasis": emphasis, **kw.pop("extra", {})}
    return AttentionMap("channel", w, kw.pop("source", "internal"), key=_key(module), extra=extra, **kw)


def _spatial(module: nn.Module, values: Tensor, **kw: Any) -> AttentionMap:
    return AttentionMap("spatial", _f(values), kw.pop("source", "internal"), key=_key(module), **kw)


def _positions(module: nn.Module, values: Tensor, **kw: Any) -> AttentionMap:
    return AttentionMap("positions", _f(values), "internal", key=_key(module), **kw)


def _key(module: nn.Module) -> str:
    return str(getattr(module, "attention_key", ""))


def _sq(t: Tensor) -> Tensor:
    """``(B, 1, H, W)`` -> ``(B, H, W)``."""
    return t[:, 0]
