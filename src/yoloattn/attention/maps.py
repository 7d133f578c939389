"""Uniform attention maps: what a module of the zoo attends to, read without changing its output.

Every registered module exposes its attention the same way::

    amap = attention_map(module, x)      # runs module(x) once, returns an AttentionMap
    with capture_maps({"p3": m1, "p4": m2}) as maps:
        model(images)                    # maps["p3"] is the latest AttentionMap of m1

An :class:`AttentionMap` has a ``kind``:

* ``"spatial"`` -- ``values`` is ``(B, H, W)``: where the module lets the features through
  (spatial and hybrid channel+spatial modules, and large-kernel / parameter-free ones);
* ``"channel"`` -- ``values`` is ``(B, C)``: the weight given to each channel (channel modules);
* ``"positions"`` -- ``values`` is ``(B, H, W)`` and sums to 1 per image: the attention each
  position *receives*, averaged over queries and heads (self-attention and context modules).

How the map is read (``source``):

* ``"internal"`` -- the module's own attention: forward hooks record the outputs of the
  submodules that compute the gate or the attention logits (e.g. SE's ``fc2``, CBAM's
  ``spatial_bn``, Non-local's ``theta``/``phi``), and the map applies the module's own
  activation (sigmoid, softmax) to them. Where a gate has no submodule of its own (GCT, EMA,
  SGE, SimAM) it is recovered exactly from ``y = x * g`` by least squares over the dimensions
  the gate is broadcast along (:func:`effective_gate`).
* ``"generic"`` -- modules whose attention is not a gate or a single attention matrix
  (``bra``, ``acmix``, ``cot``, and any unregistered module): the relative change of the
  features per position, ``||A(x) - x|| / ||x||`` over channels, scaled to a maximum of 1.
  Channel-category modules without an extractor get the least-squares channel gate instead.

The hooks only read (recorded tensors are detached copies), so the module's output is
bit-identical with and without capture. Maps are computed under ``torch.no_grad`` in float32.
Nothing here knows about YOLO; :func:`capture_maps` takes any mapping of names to modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from yoloattn.attention._map_base import MAP_KINDS, AttentionMap, Taps, effective_gate
from yoloattn.attention._map_extractors import _spec_for_key, map_description

__all__ = [
    "AttentionMap",
    "MAP_KINDS",
    "attention_map",
    "capture_maps",
    "effective_gate",
    "map_description",
]

K = TypeVar("K")


# --------------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------------


class _Capture:
    """Hooks on one attention module; calls ``sink(map)`` after each of its forwards."""

    def __init__(self, module: nn.Module, sink: Callable[[AttentionMap], None]) -> None:
        self.spec = _spec_for_key(str(getattr(module, "attention_key", "")))
        self.taps: Taps = {}
        self.sink = sink
        self.handles: list[Any] = []
        by_module: dict[int, list[str]] = {}
        subs: dict[int, nn.Module] = {}
        for name in self.spec.taps:
            try:
                sub = module.get_submodule(name)
            except AttributeError:
                continue
            if sub is None:
                continue
            self.taps[name] = []
            by_module.setdefault(id(sub), []).append(name)
            subs[id(sub)] = sub
        for ident, names in by_module.items():
            self.handles.append(subs[ident].register_forward_hook(self._tap(names)))
        self.handles.append(module.register_forward_hook(self._done))

    def _tap(self, names: list[str]) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
            if isinstance(out, Tensor):
                kept = out.detach().clone()
                for n in names:
                    self.taps[n].append(kept)

        return hook

    def _done(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        try:
            if args and isinstance(args[0], Tensor) and isinstance(out, Tensor):
                with torch.no_grad():
                    self.sink(self.spec.fn(module, args[0].detach(), out.detach(), self.taps))
        finally:
            for v in self.taps.values():
                v.clear()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _setter(maps: dict[K, AttentionMap], name: K) -> Callable[[AttentionMap], None]:
    def put(amap: AttentionMap) -> None:
        maps[name] = amap

    return put


@contextlib.contextmanager
def capture_maps(modules: Mapping[K, nn.Module]) -> Iterator[dict[K, AttentionMap]]:
    """Record the :class:`AttentionMap` of each module while the block runs.

    ``modules`` maps any name to an attention module; the yielded dict maps the name to the map
    of that module's latest forward (a name is absent until its module has run). The hooks
    are removed on exit; outputs are unchanged.
    """
    maps: dict[K, AttentionMap] = {}
    captures = []
    try:
        for name, mod in modules.items():
            captures.append(_Capture(mod, _setter(maps, name)))
        yield maps
    finally:
        for c in captures:
            c.remove()


def attention_map(module: nn.Module, x: Tensor) -> AttentionMap:
    """Run ``module(x)`` once and return its :class:`AttentionMap` (see the module docstring).

    >>> from yoloattn.attention import create_attention
    >>> m = create_attention("cbam", 64).eval()
    >>> attention_map(m, torch.randn(2, 64, 20, 24)).values.shape
    torch.Size([2, 20, 24])
    """
    with capture_maps({0: module}) as maps:
        module(x)
    return maps[0]
