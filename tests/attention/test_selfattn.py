"""Behaviour tests for the self-attention family (cot, bra, mhsa, acmix, outlook, s2mlp).

Each module's defining computation is checked against a small, loop-based re-statement of
its paper equations (and, where timm has the same definition, against timm after a weight
copy). Parameter counts, shapes, gradients, dtypes and the default ONNX export are covered by
``test_zoo_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from onnx_check import assert_onnx_matches
from torch import nn

from yoloattn.attention import create_attention, get_attention_info
from yoloattn.attention.outlook import overlap_add
from yoloattn.attention.spatial_shift import spatial_shift


def _randomize(m: nn.Module, seed: int = 0, scale: float = 0.2) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if p.ndim <= 1 else 0.0))
        for b in m.buffers():
            if b.dtype.is_floating_point:  # BN running stats
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return m


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------- cot


def test_cot_static_and_dynamic_context_with_strided_kernel_sharing():
    c, h, w = 16, 5, 6
    m = _randomize(create_attention("cot", c)).eval()
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        k1 = m.key_embed(x)  # static context
        wts = m.embed(torch.cat([x, k1], 1)).reshape(2, c // 8, 9, h, w)
        vp = F.pad(m.value(x), (1, 1, 1, 1))
        agg = torch.zeros(2, c, h, w)
        for ch in range(c):
            g = ch % (c // 8)  # channel ch uses dynamic kernel ch mod C/8
            for j in range(9):
                dy, dx = divmod(j, 3)
                agg[:, ch] += wts[:, g, j] * vp[:, ch, dy : dy + h, dx : dx + w]
        k2 = m.act(m.bn(agg))  # dynamic context
        a = m.split((k1 + k2).mean((2, 3), keepdim=True)).reshape(2, c, 2).softmax(-1)
        want = k2 * a[..., 0, None, None] + k1 * a[..., 1, None, None]
        _close(m(x), want)


def test_cot_batch1_train_on_1x1_uses_running_stats():
    m = create_attention("cot", 64).train()
    before = m.split[1].running_mean.clone()
    y = m(torch.randn(1, 64, 1, 1))
    assert y.shape == (1, 64, 1, 1) and torch.isfinite(y).all()
    assert torch.equal(m.split[1].running_mean, before)


# ---------------------------------------------------------------------------------------- bra


def _bra_dense(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Dense statement of BRA: token i attends to token j iff region(j) is routed from region(i)."""
    b, c, h, w = x.shape
    s, nh, topk = m.n_win, m.heads, m.topk
    rh, rw = -(-h // s), -(-w // s)
    q, k, v = m.qkv(x).chunk(3, 1)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    region = ((yy // rh) * s + xx // rw).flatten()  # region id per token
    onehot = F.one_hot(region, s * s).float()  # N x R
    count = onehot.sum(0)
    q_r = torch.einsum("bcn,nr->brc", q.flatten(2), onehot) / count.clamp(min=1)[:, None]
    k_r = torch.einsum("bcn,nr->brc", k.flatten(2), onehot) / count.clamp(min=1)[:, None]
    aff = (q_r @ k_r.transpose(1, 2)).masked_fill(count[None, None] == 0, float("-inf"))
    routed = torch.zeros(b, s * s, s * s, dtype=torch.bool)
    routed.scatter_(2, aff.topk(topk, -1).indices, True)
    allowed = routed[:, region][:, :, region]  # B x N x N
    d = c // nh
    qh, kh, vh = (t.reshape(b, nh, d, h * w) for t in (q, k, v))
    logits = torch.einsum("bhdi,bhdj->bhij", qh, kh) * c**-0.5
    attn = logits.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
    o = torch.einsum("bhij,bhdj->bhdi", attn, vh).reshape(b, c, h, w)
    return m.out(o + m.lepe(v))


@pytest.mark.parametrize(("size", "n_win"), [((8, 8), 4), ((7, 10), 3), ((2, 3), 4)])
def test_bra_matches_dense_routed_attention(size, n_win):
    # 8x8/4: exact region grid (official computation); 7x10/3 and 2x3/4: padded to the grid,
    # padded tokens excluded from region means, routing and attention.
    c = 16
    m = _randomize(create_attention("bra", c, heads=2, n_win=n_win, topk=2), seed=1).eval()
    x = torch.randn(2, c, *size)
    with torch.no_grad():
        _close(m(x), _bra_dense(m, x))


def test_bra_full_routing_is_global_attention():
    c, h, w = 16, 6, 6
    m = _randomize(create_attention("bra", c, heads=4, n_win=3, topk=9)).eval()
    x = torch.randn(1, c, h, w)
    with torch.no_grad():
        q, k, v = (t.reshape(1, 4, 4, h * w) for t in m.qkv(x).chunk(3, 1))
        attn = (torch.einsum("bhdi,bhdj->bhij", q, k) * c**-0.5).softmax(-1)
        o = torch.einsum("bhij,bhdj->bhdi", attn, v).reshape(1, c, h, w)
        _close(m(x), m.out(o + m.lepe(v.reshape(1, c, h, w))))


def test_bra_pads_odd_sizes_and_routing_has_no_gradient():
    info = get_attention_info("bra")
    assert info.size_dependent and info.fixed_size == (14, 14)
    m = create_attention("bra", 64).train()
    for size in ((13, 17), (20, 20), (1, 1)):
        x = torch.randn(2, 64, *size, requires_grad=True)
        y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
    q = torch.randn(1, 49, 4, 8, requires_grad=True)
    idx = m.route(q, q, torch.ones(1, 49, 4, 1))
    assert idx.shape == (1, 49, 4) and not idx.requires_grad


# --------------------------------------------------------------------------------------- mhsa


def test_mhsa_logits_include_relative_position_term():
    c, heads, h, w = 16, 4, 4, 3
    d = c // heads
    m = _randomize(create_attention("mhsa", c, heads=heads, height=h, width=w)).eval()
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        q, k, v = (t.reshape(2, heads, d, h * w) for t in m.qkv(x).chunk(3, 1))
        pos = torch.zeros(2, heads, h * w, h * w)
        for i in range(h * w):
            for j in range(h * w):
                (yi, xi), (yj, xj) = divmod(i, w), divmod(j, w)
                r = m.height_rel[yj - yi + h - 1] + m.width_rel[xj - xi + w - 1]
                pos[:, :, i, j] = torch.einsum("bhd,d->bh", q[..., i], r)
        logits = torch.einsum("bhdi,bhdj->bhij", q, k) * d**-0.5 + pos
        want = torch.einsum("bhij,bhdj->bhdi", logits.softmax(-1), v).reshape(2, c, h, w)
        _close(m(x), want)


def test_mhsa_matches_timm_bottleneck_attn():
    bot = pytest.importorskip("timm.layers.bottleneck_attn")
    c, h, w = 16, 5, 6
    ours = _randomize(create_attention("mhsa", c, height=h, width=w)).eval()
    ref = bot.BottleneckAttn(c, feat_size=(h, w), num_heads=4).eval()
    with torch.no_grad():
        ref.qkv.weight.copy_(ours.qkv.weight)
        ref.pos_embed.height_rel.copy_(ours.height_rel)
        ref.pos_embed.width_rel.copy_(ours.width_rel)
        x = torch.randn(2, c, h, w)
        _close(ours(x), ref(x))


def test_mhsa_size_mismatch_raises_or_interpolates():
    info = get_attention_info("mhsa")
    assert info.size_dependent and info.fixed_size == (14, 14)
    assert info.params(256) == 200064  # spec: P(256) at 14x14
    m = create_attention("mhsa", 64).eval()
    with pytest.raises(ValueError, match=r"14x14.*got 20x20.*height=20, width=20"):
        m(torch.randn(1, 64, 20, 20))
    mi = create_attention("mhsa", 64, resize="interpolate").eval()
    mi.load_state_dict(m.state_dict())
    x = torch.randn(2, 64, 14, 14)
    with torch.no_grad():
        assert torch.equal(mi(x), m(x))  # built size: no resampling
        for size in ((20, 20), (9, 13), (1, 1)):
            y = mi(torch.randn(2, 64, *size))
            assert y.shape == (2, 64, *size) and torch.isfinite(y).all()


def test_mhsa_abs_variant_counts_and_runs():
    info = get_attention_info("mhsa")
    m = create_attention("mhsa", 64, pos="abs", height=6, width=5)
    assert _count(m) == info.params(64, pos="abs", height=6, width=5) == 3 * 64 * 64 + 3 * 64 + 64 * 11
    y = m(torch.randn(2, 64, 6, 5))
    y.sum().backward()
    assert y.shape == (2, 64, 6, 5) and m.height_abs.grad.abs().sum() > 0


# -------------------------------------------------------------------------------------- acmix


def test_acmix_is_alpha_att_plus_beta_shift_conv():
    c, heads, h, w = 16, 4, 6, 7
    d, ka = c // heads, 7
    m = create_attention("acmix", c)
    assert m.alpha.item() == m.beta.item() == 0.5  # paper init
    shift_conv = {k: t.clone() for k, t in m.dep_conv.state_dict().items()}
    _randomize(m).dep_conv.load_state_dict(shift_conv)  # keep the shift-kernel init (bias 0)
    with torch.no_grad():
        m.alpha.fill_(0.3)
        m.beta.fill_(-0.7)
    m.eval()
    x = torch.randn(2, c, h, w) * 0.5
    with torch.no_grad():
        q, k, v = m.q(x), m.k(x), m.v(x)
        # attention path: reflection-padded 7x7 window, relative coordinate encoding
        ys, xs = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)
        grid = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)])[None]  # (x, y)
        pe = m.conv_p(grid)
        p = ka // 2
        qh = q.reshape(2 * heads, d, h, w) * d**-0.5
        kp = F.pad(k.reshape(2 * heads, d, h, w), (p,) * 4, mode="reflect")
        vp = F.pad(v.reshape(2 * heads, d, h, w), (p,) * 4, mode="reflect")
        pep = F.pad(pe, (p,) * 4, mode="reflect")
        logits, vals = [], []
        for i in range(ka):
            for j in range(ka):
                key = kp[..., i : i + h, j : j + w] + pe - pep[..., i : i + h, j : j + w]
                logits.append((qh * key).sum(1))
                vals.append(vp[..., i : i + h, j : j + w])
        a = torch.stack(logits, 1).softmax(1)  # over the 49 window positions
        att = torch.einsum("nkyx,nkdyx->ndyx", a, torch.stack(vals, 1)).reshape(2, c, h, w)
        # convolution path: fc over the 3h stacked heads, then shift-and-sum per group
        f = torch.einsum(
            "oc,bcdn->bodn",
            m.fc.weight[:, :, 0, 0],
            torch.cat([t.reshape(2, heads, d, h * w) for t in (q, k, v)], 1),
        ).reshape(2, 9, d, h, w)
        fp = F.pad(f, (1, 1, 1, 1))
        conv = torch.zeros(2, c, h, w)
        for o in range(c):
            for i in range(9):
                dy, dx = divmod(i, 3)
                conv[:, o] += fp[:, i, o // heads, dy : dy + h, dx : dx + w]
        _close(m(x), 0.3 * att - 0.7 * conv)


def test_acmix_position_bias_cancels_and_small_maps_are_rejected():
    m = _randomize(create_attention("acmix", 16)).eval()
    x = torch.randn(1, 16, 5, 6)
    with torch.no_grad():
        y = m(x)
        m.conv_p.bias.add_(3.0)  # pe - unfold(pe): the bias cancels, as in the official code
        torch.testing.assert_close(m(x), y, rtol=1e-4, atol=1e-4)
    assert m.min_hw == 4
    with pytest.raises(ValueError, match="kernel_att=7"):
        m(torch.randn(1, 16, 3, 8))
    assert create_attention("acmix", 16, kernel_att=3)(torch.randn(1, 16, 2, 2)).shape == (1, 16, 2, 2)


# ------------------------------------------------------------------------------------ outlook


def test_overlap_add_equals_fold():
    for k, (h, w) in ((3, (5, 7)), (5, (4, 6)), (3, (1, 1))):
        cols = torch.randn(2, 3, k * k, h, w)
        want = F.fold(cols.reshape(2, 3 * k * k, h * w), (h, w), k, padding=k // 2)
        _close(overlap_add(cols, k), want)


def test_outlook_window_softmax_matches_unfold_fold_statement():
    c, h, w = 64, 5, 6
    m = _randomize(create_attention("outlook", c), scale=0.05).eval()
    assert m.heads == 2  # head dim 32
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        v = F.unfold(m.v(x), 3, padding=1).reshape(2, 2, 32, 9, h * w)
        a = (m.attn(x).reshape(2, 2, 9, 9, h * w) * 32**-0.5).softmax(3)  # over window inputs
        torch.testing.assert_close(a.sum(3), torch.ones(2, 2, 9, h * w))
        y = torch.einsum("bnapl,bndpl->bndal", a, v).reshape(2, c * 9, h * w)
        _close(m(x), m.proj(F.fold(y, (h, w), 3, padding=1)))


def test_outlook_matches_timm_volo():
    volo = pytest.importorskip("timm.models.volo")
    c = 64
    ours = _randomize(create_attention("outlook", c), scale=0.05).eval()
    ref = volo.OutlookAttention(c, num_heads=2).eval()
    with torch.no_grad():
        for src, dst in ((ours.v, ref.v), (ours.attn, ref.attn), (ours.proj, ref.proj)):
            dst.weight.copy_(src.weight.flatten(1))
            if src.bias is not None:
                dst.bias.copy_(src.bias)
        x = torch.randn(2, c, 7, 5)
        _close(ours(x), ref(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


# -------------------------------------------------------------------------------------- s2mlp


def test_spatial_shift_moves_quarters_in_four_directions():
    x = torch.randn(1, 8, 4, 5)
    for order, dirs in ((1, ("+w", "-w", "+h", "-h")), (2, ("+h", "-h", "+w", "-w"))):
        y = spatial_shift(x, order)
        for qi, direction in enumerate(dirs):
            a, b = x[:, 2 * qi : 2 * qi + 2], y[:, 2 * qi : 2 * qi + 2]
            if direction == "+w":
                assert torch.equal(b[..., 1:], a[..., :-1]) and torch.equal(b[..., 0], a[..., 0])
            elif direction == "-w":
                assert torch.equal(b[..., :-1], a[..., 1:]) and torch.equal(b[..., -1], a[..., -1])
            elif direction == "+h":
                assert torch.equal(b[..., 1:, :], a[..., :-1, :]) and torch.equal(b[..., 0, :], a[..., 0, :])
            else:
                assert torch.equal(b[..., :-1, :], a[..., 1:, :]) and torch.equal(
                    b[..., -1, :], a[..., -1, :]
                )
    assert torch.equal(spatial_shift(torch.ones(1, 4, 1, 1), 1), torch.ones(1, 4, 1, 1))


def test_s2mlp_split_attention_over_three_branches():
    c = 16
    m = _randomize(create_attention("s2mlp", c), scale=0.1).eval()
    x = torch.randn(2, c, 5, 4)
    with torch.no_grad():
        y = m.mlp1(x)
        parts = [spatial_shift(y[:, :c], 1), spatial_shift(y[:, c : 2 * c], 2), y[:, 2 * c :]]
        pooled = sum(parts).mean((2, 3))  # B x C
        hat = F.linear(F.gelu(F.linear(pooled, m.fc1.weight.flatten(1))), m.fc2.weight.flatten(1))
        a = hat.reshape(2, 3, c).softmax(1)  # over the 3 branches
        mixed = sum(a[:, r, :, None, None] * parts[r] for r in range(3))
        _close(m(x), m.mlp2(mixed))


# ------------------------------------------------------------------------- errors, ONNX, misc


@pytest.mark.parametrize(
    ("key", "channels", "hyper", "match"),
    [
        ("cot", 12, {}, "share_planes=8"),
        ("cot", 16, {"kernel_size": 4}, "kernel_size=4"),
        ("bra", 12, {}, "heads=8"),
        ("bra", 16, {"heads": 2, "topk": 50}, "topk=50"),
        ("mhsa", 18, {}, "heads=4"),
        ("mhsa", 16, {"pos": "sin"}, "pos="),
        ("mhsa", 16, {"resize": "crop"}, "resize="),
        ("acmix", 18, {}, "heads=4"),
        ("outlook", 64, {"heads": 3}, "heads=3"),
        ("s2mlp", 18, {}, "divisible by 4"),
    ],
)
def test_bad_hyperparameters_are_named(key, channels, hyper, match):
    with pytest.raises(ValueError, match=match):
        create_attention(key, channels, **hyper)


def test_category_and_small_hyper():
    assert get_attention_info("s2mlp").category == "mlp"
    for key in ("cot", "bra", "mhsa", "acmix", "outlook"):
        assert get_attention_info(key).category == "self-attention"
    with pytest.raises(ValueError, match="heads"):
        create_attention("bra", 36)
    assert create_attention("bra", 36, **get_attention_info("bra").cls.small_hyper).heads == 4


@pytest.mark.parametrize(
    ("key", "hyper", "export_size", "sizes"),
    [
        ("bra", {"heads": 2}, (14, 14), [(13, 17), (7, 5), (1, 1)]),
        ("outlook", {}, (6, 8), [(7, 5), (1, 1)]),
    ],
)
def test_onnx_dynamic_sizes_with_active_weights(key, hyper, export_size, sizes):
    # bra: the padded region grid follows dynamic H, W; outlook: overlap_add replaces col2im.
    c = 16
    m = _randomize(create_attention(key, c, **hyper), scale=0.1).eval()
    assert_onnx_matches(m, c, export_size, sizes, rtol_scale=1e-4, label=key)


def test_acmix_windowed_attention_equals_the_unfold_form():
    # the official ACmix unfolds k, pe and v into k_att^2 copies; ours reads shifted views of the
    # padded maps (4x faster on CPU). Both must give the same attention path, values and gradients.
    from yoloattn.attention.acmix import _coordinate_grid

    def unfold_form(m, q, k, v):
        b, c, h, w = q.shape
        nh, d, ka = m.heads, m.head_dim, m.kernel_att

        def win(t):
            p = ka // 2
            return F.unfold(F.pad(t, (p, p, p, p), mode="reflect"), ka).reshape(
                t.shape[0], t.shape[1], ka * ka, h, w
            )

        pe = m.conv_p(_coordinate_grid(q, q.dtype))
        qh = q.reshape(b * nh, d, h, w) * d**-0.5
        logits = (qh.unsqueeze(2) * (win(k.reshape(b * nh, d, h, w)) + pe.unsqueeze(2) - win(pe))).sum(1)
        return (logits.softmax(1).unsqueeze(1) * win(v.reshape(b * nh, d, h, w))).sum(2).reshape(b, c, h, w)

    torch.manual_seed(0)
    m = create_attention("acmix", 32, kernel_att=5).double()
    q, k, v = (torch.randn(2, 32, 9, 11, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ours, ref = m.attention_path(q, k, v), unfold_form(m, q, k, v)
    assert torch.allclose(ours, ref, atol=1e-12)
    g1 = torch.autograd.grad(ours.sum(), (q, k, v))
    g2 = torch.autograd.grad(ref.sum(), (q, k, v))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(g1, g2))
