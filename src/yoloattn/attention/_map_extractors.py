"""The extractor table of :mod:`yoloattn.attention.maps`: how each module of the zoo exposes its
attention map, by family (channel, channel + spatial / spatial, context and self-attention),
with the generic fallbacks and :func:`map_description`.

Each extractor receives the module, its input ``x``, its output ``y`` and the outputs of the
submodules it taps (recorded by :func:`yoloattn.attention.maps.capture_maps`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._map_base import (
    _EPS,
    AttentionMap,
    Extractor,
    Taps,
    _channel,
    _f,
    _positions,
    _received,
    _scale_to_max,
    _spatial,
    _sq,
    _to_distribution,
    effective_gate,
)
from yoloattn.attention.registry import get_attention_info, resolve_attention_key

# --------------------------------------------------------------------------------------------
# extractor table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    taps: tuple[str, ...]
    fn: Extractor
    kind: str
    note: str


_EXTRACTORS: dict[str, _Spec] = {}


def _extractor(
    *keys: str, taps: tuple[str, ...] = (), kind: str, note: str
) -> Callable[[Extractor], Extractor]:
    """Register ``fn(module, x, y, taps) -> AttentionMap`` for registry ``keys``.

    ``taps`` names submodules (dotted paths; absent ones are skipped) whose outputs are recorded
    during the module's forward, one entry per call, in call order.
    """

    def deco(fn: Extractor) -> Extractor:
        for k in keys:
            _EXTRACTORS[k] = _Spec(taps, fn, kind, note)
        return fn

    return deco


# ---- channel modules ------------------------------------------------------------------------


@_extractor("se", "fca", "soca", taps=("fc2",), kind="channel", note="sigmoid(fc2): the excitation")
def _se(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    return _channel(m, x, torch.sigmoid(_f(t["fc2"][-1])))


@_extractor("ese", taps=("fc",), kind="channel", note="hardsigmoid(fc)")
def _ese(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    return _channel(m, x, F.hardsigmoid(_f(t["fc"][-1])))


@_extractor("parnet", taps=("se",), kind="channel", note="sigmoid(se): the SSE branch gate")
def _parnet(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    return _channel(m, x, torch.sigmoid(_f(t["se"][-1])))


@_extractor("eca", "ceca", taps=("conv",), kind="channel", note="sigmoid(conv1d)")
def _eca(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    return _channel(m, x, torch.sigmoid(_f(t["conv"][-1])))


@_extractor("srm", taps=("bn",), kind="channel", note="sigmoid(bn(style integration))")
def _srm(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    return _channel(m, x, torch.sigmoid(_f(t["bn"][-1])))


@_extractor("gct", kind="channel", note="1 + tanh(...) in [0, 2], recovered from y = x * g")
def _gct(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    g = effective_gate(x, y, (2, 3)).clamp(0.0, 2.0)
    return _channel(m, x, g, bounds=(0.0, 2.0))


@_extractor("nam", taps=("bn",), kind="channel", note="mean over HW of sigmoid(w * bn(x))")
def _nam(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    g = _f(m.bn.weight).abs()
    w = (g / g.sum().clamp_min(_EPS)).view(1, -1, 1, 1)
    gate = torch.sigmoid(w * _f(t["bn"][-1]))
    return _channel(m, x, gate.mean((2, 3)), extra={"gate": gate})


@_extractor("sk", taps=("select",), kind="channel", note="softmax over paths; weight of the largest kernel")
def _sk(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    logits = _f(t["select"][-1])
    a = logits.view(x.shape[0], int(m.num_paths), -1).softmax(1)  # B x M x C
    return _channel(m, x, a[:, -1], extra={"branches": a})


@_extractor("splat", taps=("fc2",), kind="channel", note="r-softmax over splits; weight of split 0")
def _splat(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, c = x.shape[:2]
    r, k = int(m.radix), int(m.cardinality)
    logits = _f(t["fc2"][-1])
    if r > 1:
        a = logits.view(b, k, r, -1).softmax(2).transpose(1, 2).reshape(b, r, c)
    else:
        a = torch.sigmoid(logits).view(b, 1, c)
    return _channel(m, x, a[:, 0], extra={"branches": a})


@_extractor("epsa", taps=("se_fc2",), kind="channel", note="softmax over kernel branches, per output channel")
def _epsa(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    w = torch.sigmoid(torch.stack([_f(v) for v in t["se_fc2"]], 1))  # B x n x C/n x 1 x 1
    a = w.softmax(1).flatten(2)  # B x n x C/n
    if m.official_order:
        a = a.flip(1)
    return _channel(m, x, a.flatten(1))


@_extractor(
    "s2mlp", taps=("fc2",), kind="channel", note="split attention; weight of the two shifted branches"
)
def _s2mlp(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, c = x.shape[:2]
    a = _f(t["fc2"][-1]).reshape(b, 3, c).softmax(1)
    return _channel(m, x, 1.0 - a[:, 2], extra={"branches": a})


# ---- channel + spatial / spatial modules ----------------------------------------------------


@_extractor("cbam", taps=("mlp", "spatial_bn"), kind="spatial", note="Ms = sigmoid(BN(conv)); channel Mc")
def _cbam(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    mc = torch.sigmoid(_f(t["mlp"][-2]) + _f(t["mlp"][-1]))
    return _spatial(m, _sq(torch.sigmoid(_f(t["spatial_bn"][-1]))), extra={"channel": mc})


def _bam_like(m: nn.Module, combined: Tensor) -> AttentionMap:
    return _spatial(m, combined.mean(1), extra={"channel": combined.mean((2, 3))})


@_extractor("bam", taps=("channel_bn", "spatial_bn"), kind="spatial", note="mean over C of sigmoid(Mc + Ms)")
def _bam(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    mc = _f(t["channel_bn"][-1])[:, :, None, None]
    return _bam_like(m, torch.sigmoid(mc + _f(t["spatial_bn"][-1])))


@_extractor(
    "bam_official", taps=("channel_mlp", "spatial"), kind="spatial", note="mean over C of sigmoid(Mc*Ms)"
)
def _bam_official(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    mc = _f(t["channel_mlp"][-1])[:, :, None, None]
    return _bam_like(m, torch.sigmoid(mc * _f(t["spatial"][-1])))


@_extractor("ca", taps=("conv_h", "conv_w"), kind="spatial", note="mean over C of a_h * a_w")
def _ca(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    ah, aw = torch.sigmoid(_f(t["conv_h"][-1])), torch.sigmoid(_f(t["conv_w"][-1]))
    return _spatial(m, (ah * aw).mean(1))


@_extractor(
    "gam", taps=("channel_mlp", "spatial_bn2"), kind="spatial", note="mean over C of the spatial gate"
)
def _gam(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    mc = torch.sigmoid(_f(t["channel_mlp"][-1])).mean((1, 2))  # B x H x W x C -> B x C
    return _spatial(m, torch.sigmoid(_f(t["spatial_bn2"][-1])).mean(1), extra={"channel": mc})


@_extractor("scse", taps=("fc2", "spatial"), kind="spatial", note="sSE gate sigmoid(conv1x1); channel cSE")
def _scse(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    gc = torch.sigmoid(_f(t["fc2"][-1]))
    return _spatial(m, _sq(torch.sigmoid(_f(t["spatial"][-1]))), extra={"channel": gc})


@_extractor(
    "cpca", taps=("proj_att", "fc2"), kind="spatial", note="mean over C of abs(proj(strip convs)), max 1"
)
def _cpca(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    calls = t["proj_att"]  # shared projection: called as proj_in, proj_att, proj_out
    att = _f(calls[1] if m.proj_att is m.proj_in else calls[-1])
    prior = torch.sigmoid(_f(t["fc2"][-2])) + torch.sigmoid(_f(t["fc2"][-1]))
    return _spatial(m, _scale_to_max(att.abs().mean(1)), extra={"channel": prior.flatten(1)})


def _group_gate(m: Any, x: Tensor, y: Tensor) -> AttentionMap:
    """Per-group spatial gates (EMA, SGE): ``y = g_group * x``, mean over the groups."""
    b, c, h, w = x.shape
    groups = int(m.groups)
    xg, yg = x.reshape(b, groups, c // groups, h, w), y.reshape(b, groups, c // groups, h, w)
    gate = effective_gate(xg, yg, (2,), fill=0.5).clamp(0.0, 1.0)[:, :, 0]  # B x G x H x W
    return _spatial(m, gate.mean(1), extra={"groups": gate})


@_extractor("ema", "sge", kind="spatial", note="mean over groups of the sigmoid group gate (from y = x * g)")
def _ema_sge(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    return _group_gate(m, x, y)


@_extractor("simam", kind="spatial", note="energy-weighted mean over C of the sigmoid energy gate")
def _simam(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    return _spatial(m, effective_gate(x, y, (1,), fill=0.5).clamp(0.0, 1.0)[:, 0])


@_extractor(
    "psa_p", "psa_s", taps=("ch_ln", "sp_wq", "sp_wv"), kind="spatial", note="spatial-only branch gate"
)
def _psa(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    q = _f(t["sp_wq"][-1]).mean((2, 3)).softmax(1)  # B x C/2
    a = torch.einsum("bc,bchw->bhw", q, _f(t["sp_wv"][-1]))
    return _spatial(m, torch.sigmoid(a), extra={"channel": torch.sigmoid(_f(t["ch_ln"][-1]))})


@_extractor("sa", taps=("gn",), kind="spatial", note="mean over the spatial half of sigmoid(w * GN(x) + b)")
def _sa(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, _, h, w = x.shape
    gs = torch.sigmoid(_f(m.sweight) * _f(t["gn"][-1]) + _f(m.sbias))  # (B*G) x C/2G x H x W
    return _spatial(m, gs.reshape(b, -1, h, w).mean(1))


@_extractor(
    "triplet",
    taps=("gate_cw.bn", "gate_hc.bn", "gate_hw.bn"),
    kind="spatial",
    note="mean of the three branch gates, each averaged over C",
)
def _triplet(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    s_w = torch.sigmoid(_f(t["gate_cw.bn"][-1]))[:, 0].mean(1)  # B x C x W -> B x W
    s_h = torch.sigmoid(_f(t["gate_hc.bn"][-1]))[:, 0].mean(2)  # B x H x C -> B x H
    total = s_w[:, None, :] + s_h[:, :, None]
    n = 2
    if t.get("gate_hw.bn"):
        total = total + torch.sigmoid(_f(t["gate_hw.bn"][-1]))[:, 0]
        n = 3
    return _spatial(m, total / n)


@_extractor(
    "lsk", taps=("expand",), kind="spatial", note="mean over C of abs(selected large-kernel attention), max 1"
)
def _lsk(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    return _spatial(m, _scale_to_max(_f(t["expand"][-1]).abs().mean(1)))


@_extractor("lska", taps=("conv1",), kind="spatial", note="mean over C of abs(attention), max 1")
def _lska(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    return _spatial(m, _scale_to_max(_f(t["conv1"][-1]).abs().mean(1)))


@_extractor("msca", taps=("conv_mix",), kind="spatial", note="mean over C of abs(attention), max 1")
def _msca(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    return _spatial(m, _scale_to_max(_f(t["conv_mix"][-1]).abs().mean(1)))


# ---- context and self-attention modules ---------------------------------------------------


@_extractor(
    "gc", taps=("conv_mask", "channel_mul"), kind="positions", note="softmax(conv_mask): context pooling"
)
def _gc(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, _, h, w = x.shape
    if t.get("conv_mask"):
        p = _f(t["conv_mask"][-1]).flatten(1).softmax(1).reshape(b, h, w)
    else:  # avg pooling: every position weighs the same
        p = torch.full((b, h, w), 1.0 / (h * w), device=x.device)
    extra = {"channel": torch.sigmoid(_f(t["channel_mul"][-1])).flatten(1)} if t.get("channel_mul") else {}
    return _positions(m, p, extra=extra)


@_extractor(
    "nonlocal", taps=("theta", "phi"), kind="positions", note="softmax(theta^T phi), received per key"
)
def _nonlocal(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, _, h, w = x.shape
    theta, phi = _f(t["theta"][-1]).flatten(2), _f(t["phi"][-1])
    hk, wk = phi.shape[2:]
    attn = (theta.transpose(1, 2) @ phi.flatten(2) * float(m.scale)).softmax(-1)
    r = _received(attn, hk, wk)
    if (hk, wk) != (h, w):  # sub-sampled keys: spread each key's share over its pooling window
        r = r.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w]
        r = _to_distribution(r)
    return _positions(m, r)


@_extractor("danet", taps=("query", "key"), kind="positions", note="position attention softmax(q^T k)")
def _danet(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, _, h, w = x.shape
    q, k = _f(t["query"][-1]).flatten(2), _f(t["key"][-1]).flatten(2)
    return _positions(m, _received((q.transpose(1, 2) @ k).softmax(-1), h, w))


@_extractor("cc", taps=("query", "key"), kind="positions", note="criss-cross softmax, mean over recurrences")
def _cc(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device)
    self_mask = (rows[:, None] == rows[None, :]).unsqueeze(1)  # H x 1 x H
    total = torch.zeros(b, h, w, device=x.device)
    for q, k in zip(t["query"], t["key"]):
        q, k = _f(q), _f(k)
        e_col = torch.einsum("bchw,bckw->bhwk", q, k).masked_fill(self_mask, float("-inf"))
        e_row = torch.einsum("bchw,bchk->bhwk", q, k)
        attn = torch.cat([e_col, e_row], -1).softmax(-1)
        col = attn[..., :h].sum(1).transpose(1, 2)  # key (k, w): summed over query rows
        row = attn[..., h:].sum(2)  # key (h, k): summed over query columns
        total = total + _to_distribution(col + row)
    return _positions(m, total / max(len(t["query"]), 1))


@_extractor("a2", taps=("conv_b",), kind="positions", note="gathering attention maps, mean over maps")
def _a2(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, _, h, w = x.shape
    maps = _f(t["conv_b"][-1]).flatten(2).softmax(-1)  # B x n x N
    return _positions(m, _received(maps, h, w))


@_extractor("external", taps=("mk",), kind="positions", note="double-normalised memory attention, summed")
def _external(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, _, h, w = x.shape
    attn = _f(t["mk"][-1]).softmax(-1)
    attn = attn / (1e-9 + attn.sum(1, keepdim=True))
    return _positions(m, _to_distribution(attn.sum(1).reshape(b, h, w)))


@_extractor("outlook", taps=("attn",), kind="positions", note="window softmax folded back onto positions")
def _outlook(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, _, h, w = x.shape
    k, nh = int(m.kernel_size), int(m.heads)
    logits = _f(t["attn"][-1]).reshape(b, nh, k * k, k * k, h * w)
    attn = (logits * float(m.scale)).softmax(3)
    mass = attn.sum((1, 2))  # B x k^2 (window offset) x HW
    r = F.fold(mass, (h, w), k, padding=k // 2)[:, 0]
    return _positions(m, _to_distribution(r))


@_extractor("mhsa", taps=("qkv",), kind="positions", note="softmax(content + position logits)")
def _mhsa(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    b, c, h, w = x.shape
    heads = int(m.heads)
    d = c // heads
    q, k, _ = _f(t["qkv"][-1]).reshape(b, 3, heads, d, h * w).unbind(1)
    logits = q.transpose(-1, -2) @ k * float(m.scale)
    q_grid = q.transpose(-1, -2).reshape(b, heads, h, w, d)
    resample = (h, w) != (int(m.height), int(m.width))
    logits = logits + m.position_logits(q_grid, h, w, resample).float()
    return _positions(m, _received(logits.softmax(-1), h, w))


# ---- fallbacks -------------------------------------------------------------------------------


def _generic_spatial(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    x32, y32 = _f(x), _f(y)
    rel = (y32 - x32).norm(dim=1) / x32.norm(dim=1).clamp_min(1e-6)
    return _spatial(m, _scale_to_max(rel), source="generic")


def _generic_channel(m: Any, x: Tensor, y: Tensor, t: Taps) -> AttentionMap:
    g = effective_gate(x, y, (2, 3))
    return _channel(m, x, g, bounds=(float("-inf"), float("inf")), source="generic")


_GENERIC_NOTE = "generic: norm(A(x) - x) / norm(x) per position, max 1"
for _k in ("bra", "acmix", "cot"):
    _EXTRACTORS[_k] = _Spec((), _generic_spatial, "spatial", _GENERIC_NOTE)


def _spec_for_key(name: str) -> _Spec:
    """The extractor of registry key ``name``; a category fallback for keys without one."""
    key = resolve_attention_key(name) if name else None
    if key is not None and key in _EXTRACTORS:
        return _EXTRACTORS[key]
    if key is not None and get_attention_info(key).category == "channel":
        return _Spec((), _generic_channel, "channel", "generic: least-squares channel gate")
    return _Spec((), _generic_spatial, "spatial", _GENERIC_NOTE)


def map_description(key: str) -> tuple[str, str, str]:
    """``(kind, source, how)`` of the map of registry ``key`` (for docs and ``--help``)."""
    spec = _spec_for_key(get_attention_info(key).key)
    source = "generic" if spec.fn in (_generic_spatial, _generic_channel) else "internal"
    return spec.kind, source, spec.note
