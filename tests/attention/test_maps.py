"""Uniform attention maps (``yoloattn.attention.maps``): every key, shapes, ranges, no side effects,
and planted cases where the map must find a known position or equal the applied gate."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from yoloattn.attention import attention_map, capture_maps, create_attention, list_attention
from yoloattn.attention.maps import MAP_KINDS, AttentionMap, effective_gate, map_description

INFOS = list_attention()
C = 64

#: expected kind per registry category (self-attention modules without a single attention
#: matrix fall back to the generic spatial map)
KIND_BY_CATEGORY = {
    "channel": {"channel"},
    "spatial": {"spatial"},
    "channel+spatial": {"spatial"},
    "self-attention": {"positions", "spatial"},
    "context": {"positions"},
    "large-kernel": {"spatial"},
    "mlp": {"channel"},
    "parameter-free": {"spatial"},
}


def _build(info, channels: int = C) -> nn.Module:
    try:
        return create_attention(info.key, channels)
    except ValueError:
        return create_attention(info.key, channels, **info.cls.small_hyper)


def _randomise(m: nn.Module) -> nn.Module:
    """Non-trivial weights, so zero-initialised (identity) modules attend too."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m


def _input(info, b: int = 2) -> torch.Tensor:
    h, w = info.fixed_size or (13, 17)
    return torch.randn(b, C, h, w, generator=torch.Generator().manual_seed(0))


def test_every_category_has_an_expected_kind() -> None:
    assert {i.category for i in INFOS} <= set(KIND_BY_CATEGORY)


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.key)
@pytest.mark.parametrize("randomised", [False, True], ids=["init", "random"])
def test_map_shape_kind_and_range(info, randomised: bool) -> None:
    torch.manual_seed(0)
    m = _build(info).eval()
    if randomised:
        _randomise(m)
    x = _input(info)
    with torch.no_grad():
        amap = attention_map(m, x)
    assert isinstance(amap, AttentionMap) and amap.key == info.key
    assert amap.kind in MAP_KINDS and amap.kind in KIND_BY_CATEGORY[info.category]
    assert amap.source in ("internal", "generic")
    assert map_description(info.key)[:2] == (amap.kind, amap.source)
    v = amap.values
    assert v.dtype == torch.float32 and not v.requires_grad
    if amap.kind == "channel":
        assert v.shape == (2, C)
        assert amap.spatial() is not None and amap.spatial().shape == (2, *x.shape[2:])
    else:
        assert v.shape == (2, *x.shape[2:])
        assert amap.spatial() is v
    assert torch.isfinite(v).all(), info.key
    lo, hi = amap.bounds
    assert v.min() >= lo - 1e-5 and v.max() <= hi + 1e-5, (info.key, float(v.min()), float(v.max()))
    if amap.kind == "positions":
        assert torch.allclose(v.sum((1, 2)), torch.ones(2), atol=1e-4), info.key
        assert (v >= 0).all()
    for name, t in amap.extra.items():
        assert t.shape[0] == 2 and torch.isfinite(t).all(), (info.key, name)
        if name == "channel":
            assert t.shape == (2, C), info.key


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.key)
def test_capture_leaves_outputs_bit_identical(info) -> None:
    """Train mode (BN updates its statistics) and a backward: hooks must not change anything."""
    torch.manual_seed(0)
    a = _randomise(_build(info)).train()
    b = copy.deepcopy(a)
    x = _input(info)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_plain = a(xa)
    with capture_maps({"m": b}) as maps:
        y_hooked = b(xb)
    assert torch.equal(y_plain, y_hooked), info.key
    assert "m" in maps
    y_plain.square().mean().backward()
    y_hooked.square().mean().backward()
    assert torch.equal(xa.grad, xb.grad), info.key
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert (p.grad is None) == (q.grad is None), (info.key, n)
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), (info.key, n)
    for (n, s), t in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(s, t), (info.key, n)
    # the hooks are gone after the block
    with torch.no_grad():
        b.eval()
        b(x)
    assert len(maps) == 1


def test_capture_keeps_the_latest_forward_and_names() -> None:
    se, cbam = create_attention("se", C, reduction=4).eval(), create_attention("cbam", C).eval()
    x1, x2 = torch.randn(1, C, 8, 8), torch.randn(3, C, 8, 8)
    with torch.no_grad(), capture_maps({"a": se, "b": cbam}) as maps:
        se(x1)
        assert set(maps) == {"a"}
        se(x2)
        cbam(x2)
    assert maps["a"].values.shape == (3, C) and maps["b"].values.shape == (3, 8, 8)


# ---- the maps are the attention the module applies -----------------------------------------


@pytest.mark.parametrize("key", ["se", "ese", "eca", "ceca", "fca", "soca", "srm", "gct"])
def test_channel_gate_is_the_applied_gate(key: str) -> None:
    torch.manual_seed(0)
    m = _randomise(create_attention(key, C)).eval()
    x = torch.randn(2, C, 9, 11)
    with torch.no_grad():
        amap = attention_map(m, x)
        y = m(x)
    assert torch.allclose(x * amap.values[:, :, None, None], y, atol=1e-5, rtol=1e-4), key


def test_cbam_maps_reproduce_the_output() -> None:
    torch.manual_seed(0)
    m = create_attention("cbam", C).eval()
    x = torch.randn(2, C, 9, 11)
    with torch.no_grad():
        amap = attention_map(m, x)
        y = m(x)
    mc, ms = amap.extra["channel"], amap.values
    assert torch.allclose(x * mc[:, :, None, None] * ms[:, None], y, atol=1e-5)


def test_scse_mul_maps_reproduce_the_output() -> None:
    m = _randomise(create_attention("scse", C, fuse="mul")).eval()
    x = torch.randn(2, C, 9, 11)
    with torch.no_grad():
        amap = attention_map(m, x)
        y = m(x)
    assert torch.allclose(x * amap.extra["channel"][:, :, None, None] * amap.values[:, None], y, atol=1e-5)


@pytest.mark.parametrize("key", ["ema", "sge"])
def test_group_gates_reproduce_the_output(key: str) -> None:
    m = _randomise(create_attention(key, C, groups=8)).eval()
    x = torch.randn(2, C, 9, 11)
    with torch.no_grad():
        amap = attention_map(m, x)
        y = m(x)
    g = amap.extra["groups"].repeat_interleave(C // 8, 1)  # B x C x H x W
    assert torch.allclose(x * g, y, atol=1e-5)


def test_effective_gate_recovers_a_broadcast_gate_and_fills_zeros() -> None:
    x = torch.randn(2, 4, 5, 6)
    x[1, 2] = 0.0
    g = torch.rand(2, 4, 1, 1)
    est = effective_gate(x, x * g, (2, 3), fill=-1.0)
    assert torch.allclose(est[0], g[0], atol=1e-6)
    assert est[1, 2].item() == -1.0 and torch.allclose(est[1, [0, 1, 3]], g[1, [0, 1, 3]], atol=1e-6)


def _spike(h: int = 10, w: int = 12, at: tuple[int, int] = (3, 8)) -> torch.Tensor:
    x = torch.randn(1, C, h, w, generator=torch.Generator().manual_seed(3)) * 0.1
    x[0, 0, at[0], at[1]] = 8.0  # one position stands out in channel 0
    return x


def test_gc_context_mask_finds_the_planted_position() -> None:
    m = create_attention("gc", C).eval()
    with torch.no_grad():
        m.conv_mask.weight.zero_()
        m.conv_mask.weight[0, 0] = 2.0  # logits = 2 * x[channel 0]
    amap = attention_map(m, _spike())
    assert amap.kind == "positions"
    assert divmod(int(amap.values[0].argmax()), 12) == (3, 8)
    assert amap.values[0, 3, 8] > 0.9


@pytest.mark.parametrize("key", ["nonlocal", "danet", "a2"])
def test_self_attention_received_peaks_at_the_planted_key(key: str) -> None:
    """Keys respond to channel 0 only, every query likes that direction: all attend to the spike."""
    m = create_attention(key, C, reduction=8).eval()
    q_name, k_name = {"nonlocal": ("theta", "phi"), "danet": ("query", "key"), "a2": (None, "conv_b")}[key]
    with torch.no_grad():
        for conv in m.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.zero_()
                if conv.bias is not None:
                    conv.bias.zero_()
        getattr(m, k_name).weight[:, 0] = 1.0
        if q_name:
            getattr(m, q_name).bias.fill_(1.0)
    at = (6, 4)  # an even position so the nonlocal 2x2 sub-sampling keeps it in one cell
    amap = attention_map(m, _spike(at=at))
    r = amap.values[0]
    assert divmod(int(r.argmax()), 12) == at
    assert r.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_simam_marks_the_distinctive_neuron() -> None:
    amap = attention_map(create_attention("simam", C), _spike(at=(2, 9)))
    assert divmod(int(amap.values[0].argmax()), 12) == (2, 9)


def test_unregistered_module_gets_the_generic_map() -> None:
    class Boost(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.clone()
            y[:, :, 2, 5] *= 3.0  # only one position changes
            return y

    amap = attention_map(Boost(), torch.randn(1, 8, 6, 7))
    assert (amap.kind, amap.source, amap.key) == ("spatial", "generic", "")
    assert amap.values[0, 2, 5] == 1.0 and amap.values.sum() == pytest.approx(1.0)
