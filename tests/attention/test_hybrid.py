"""Behaviour tests of the channel+spatial attention family (channel+spatial keys).

Each test checks a module against an independent computation: a hand-computed closed form
(SimAM), a third-party implementation (timm's CBAM), or a manual re-computation from the
module's weights (BAM, BAM-official, Coordinate Attention).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yoloattn.attention import create_attention, get_attention_info
from yoloattn.attention.bam import BAM, BAMOfficial
from yoloattn.attention.cbam import CBAM
from yoloattn.attention.coord import CoordAttention
from yoloattn.attention.simam import SimAM


def _randomize(m: nn.Module, seed: int = 0) -> None:
    """Random weights and BN running statistics, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.2)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)


# ------------------------------------------------------------------------------------------
# SimAM
# ------------------------------------------------------------------------------------------


def test_simam_matches_hand_computed_closed_form():
    # one channel, 2x2 map with values 0, 1, 2, 3: mean 1.5, d = (2.25, .25, .25, 2.25),
    # n = H*W - 1 = 3, v = 5/3, 1/E = d / (4 (v + 1e-4)) + 0.5, out = x * sigmoid(1/E)
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]], dtype=torch.float64)
    out = SimAM(1)(x)
    v = 5.0 / 3.0
    expect = []
    for t in (0.0, 1.0, 2.0, 3.0):
        e_inv = (t - 1.5) ** 2 / (4 * (v + 1e-4)) + 0.5
        expect.append(t / (1 + math.exp(-e_inv)))
    assert torch.allclose(out.flatten(), torch.tensor(expect, dtype=torch.float64), atol=1e-12)
    # two literal values computed by hand from the same formula
    assert out[0, 0, 1, 1].item() == pytest.approx(2.0938024714, abs=1e-9)
    assert out[0, 0, 1, 0].item() == pytest.approx(1.2624602778, abs=1e-9)


def test_simam_channels_are_independent_and_lambda_is_used():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4)
    y = SimAM(3)(x)
    y0 = SimAM(1)(x[:, :1])
    assert torch.allclose(y[:, :1], y0)
    assert not torch.allclose(SimAM(3, e_lambda=10.0)(x), y)


def test_simam_rejects_single_position_map():
    with pytest.raises(ValueError, match="H\\*W >= 2"):
        SimAM(4)(torch.randn(1, 4, 1, 1))


# ------------------------------------------------------------------------------------------
# CBAM vs timm
# ------------------------------------------------------------------------------------------


def test_cbam_matches_timm_after_weight_copy():
    cbam_timm = pytest.importorskip("timm.layers.cbam")
    torch.manual_seed(0)
    c = 64
    # timm's defaults differ from the paper/official code: mlp_bias=False and spatial
    # pooling order [mean, max]; rd_ratio 1/16 and kernel 7 agree. Use biased MLP to compare.
    ref = cbam_timm.CbamModule(c, rd_ratio=1 / 16, spatial_kernel_size=7, mlp_bias=True)
    ours = CBAM(c)
    _randomize(ours)
    with torch.no_grad():
        ref.channel.fc1.weight.copy_(ours.mlp[0].weight[:, :, None, None])
        ref.channel.fc1.bias.copy_(ours.mlp[0].bias)
        ref.channel.fc2.weight.copy_(ours.mlp[2].weight[:, :, None, None])
        ref.channel.fc2.bias.copy_(ours.mlp[2].bias)
        # ours pools [max, mean] (official order), timm [mean, max]: swap the conv inputs
        ref.spatial.conv.conv.weight.copy_(ours.spatial_conv.weight.flip(1))
        bn = ref.spatial.conv.bn
        bn.weight.copy_(ours.spatial_bn.weight)
        bn.bias.copy_(ours.spatial_bn.bias)
        bn.running_mean.copy_(ours.spatial_bn.running_mean)
        bn.running_var.copy_(ours.spatial_bn.running_var)
    x = torch.randn(2, c, 11, 7)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), ref.eval()(x), atol=1e-6)
        # train mode (batch statistics) agrees too
        assert torch.allclose(ours.train()(x), ref.train()(x), atol=1e-5)
    # bias=False reproduces timm's default parameter count (2C^2/r + 2k^2 + 2)
    n_ref_default = sum(p.numel() for p in cbam_timm.CbamModule(c).parameters())
    n_ours = sum(p.numel() for p in CBAM(c, bias=False).parameters())
    assert n_ours == n_ref_default == get_attention_info("cbam").params(c, bias=False)


def test_cbam_is_sequential_channel_then_spatial():
    torch.manual_seed(1)
    m = CBAM(32, reduction=4).eval()
    _randomize(m)
    x = torch.randn(2, 32, 6, 9)
    with torch.no_grad():
        x1 = x * m.channel_gate(x)
        assert torch.allclose(m(x), x1 * m.spatial_gate(x1), atol=1e-6)


# ------------------------------------------------------------------------------------------
# BAM (paper) and BAM (official)
# ------------------------------------------------------------------------------------------


def _bn_eval(t: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    shape = (1, -1) + (1,) * (t.ndim - 2)
    mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    return (t - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def test_bam_is_parallel_sum_with_residual():
    torch.manual_seed(0)
    m = BAM(64, reduction=16, dilation=2).eval()
    _randomize(m)
    x = torch.randn(2, 64, 9, 13)
    with torch.no_grad():
        # channel branch from the raw weights: BN_C(W1 ReLU(W0 GAP(x) + b0) + b1)
        z = F.linear(x.mean((2, 3)), m.channel_fc0.weight, m.channel_fc0.bias).relu()
        z = F.linear(z, m.channel_fc1.weight, m.channel_fc1.bias)
        mc = _bn_eval(z, m.channel_bn)[:, :, None, None]
        # spatial branch: 1x1 -> two dilated 3x3 -> 1x1, ReLU between, BN_1 at the end
        t = F.conv2d(x, m.spatial_reduce.weight, m.spatial_reduce.bias).relu()
        for conv in m.spatial_dilated:
            t = F.conv2d(t, conv.weight, conv.bias, padding=2, dilation=2).relu()
        ms = _bn_eval(F.conv2d(t, m.spatial_out.weight, m.spatial_out.bias), m.spatial_bn)
        expect = x * (1 + torch.sigmoid(mc + ms))
        assert torch.allclose(m(x), expect, atol=1e-5)
        assert torch.allclose(m.channel_map(x), mc, atol=1e-5)
        assert torch.allclose(m.spatial_map(x), ms, atol=1e-5)


def test_bam_official_is_product_with_hidden_bn():
    torch.manual_seed(0)
    m = BAMOfficial(64).eval()
    _randomize(m)
    x = torch.randn(2, 64, 10, 7)
    with torch.no_grad():
        mc = m.channel_map(x)
        ms = m.spatial_map(x)
        assert mc.shape == (2, 64, 1, 1) and ms.shape == (2, 1, 10, 7)
        assert torch.allclose(m(x), x * (1 + torch.sigmoid(mc * ms)), atol=1e-6)


def test_bam_and_bam_official_differ_structurally():
    c, r = 256, 16
    paper, official = BAM(c), BAMOfficial(c)

    def bn_widths(mod):
        return sorted(b.num_features for b in mod.modules() if isinstance(b, nn.BatchNorm1d | nn.BatchNorm2d))

    # paper: BN over the C-vector of the channel branch and over the 1-channel spatial map
    assert bn_widths(paper) == [1, c]
    # official: BN after every hidden layer (C/r wide), none at the branch outputs
    assert bn_widths(official) == [c // r] * 4
    assert sum(p.numel() for p in paper.parameters()) == 17747
    assert sum(p.numel() for p in official.parameters()) == 17361
    assert get_attention_info("bam").cls is not get_attention_info("bam_official").cls
    assert get_attention_info("bam").cls is not get_attention_info("cbam").cls


@pytest.mark.parametrize(
    ("key", "frozen_prefix"),
    [
        ("bam", ""),
        ("bam_official", ""),
        ("cbam", ""),
        ("gam", ""),
        ("triplet", "gate_hw."),  # the rotated branches see C*W / H*C values per channel
        ("ca", None),  # its BN sees H + W = 2 values: ordinary batch statistics
    ],
)
def test_batch1_train_at_1x1_keeps_running_stats(key, frozen_prefix):
    m = create_attention(key, 64).train()
    before = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
    y = m(torch.randn(1, 64, 1, 1))
    assert y.shape == (1, 64, 1, 1) and torch.isfinite(y).all()
    if frozen_prefix is None:
        return
    # BNs that saw a single value per channel must not be updated by that forward
    frozen = [k for k in before if k.startswith(frozen_prefix)]
    assert frozen
    changed = [k for k in frozen if not torch.equal(before[k], m.state_dict()[k])]
    assert not changed, f"{key}: running stats changed by a batch-1 1x1 forward: {changed}"


def test_bam_batch1_train_uses_running_stats_and_keeps_grad():
    torch.manual_seed(0)
    m = BAM(64)
    _randomize(m)
    x = torch.randn(1, 64, 8, 8)
    y_train = m.train()(x)
    y_train.sum().backward()
    assert m.channel_bn.weight.grad is not None and m.channel_bn.weight.grad.abs().sum() > 0
    # channel BN used running statistics; the spatial BN (64 values) used batch statistics
    with torch.no_grad():
        assert torch.allclose(m.channel_map(x), m.eval().channel_map(x))


# ------------------------------------------------------------------------------------------
# Coordinate attention
# ------------------------------------------------------------------------------------------


def test_ca_uses_strip_means():
    torch.manual_seed(0)
    c, h, w = 64, 6, 9
    m = CoordAttention(c).eval()
    _randomize(m)
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        # strip pooling computed with explicit loops and with the official-style adaptive pooling
        zh = torch.stack([x[:, :, i, :].sum(-1) / w for i in range(h)], dim=2)[..., None]
        zw = torch.stack([x[:, :, :, j].sum(-1) / h for j in range(w)], dim=2)[..., None]
        assert torch.allclose(zh, nn.AdaptiveAvgPool2d((None, 1))(x), atol=1e-6)
        y = torch.cat([zh, zw], dim=2)
        y = F.conv2d(y, m.conv1.weight, m.conv1.bias)
        y = _bn_eval(y, m.bn1)
        y = y * F.relu6(y + 3) / 6  # h-swish
        ah = torch.sigmoid(F.conv2d(y[:, :, :h], m.conv_h.weight, m.conv_h.bias))
        aw = torch.sigmoid(F.conv2d(y[:, :, h:], m.conv_w.weight, m.conv_w.bias)).transpose(2, 3)
        assert torch.allclose(m(x), x * ah * aw, atol=1e-5)


def test_ca_hidden_width_rule():
    assert CoordAttention(64).conv1.out_channels == 8  # max(8, 64 // 32)
    assert CoordAttention(512).conv1.out_channels == 16


# ------------------------------------------------------------------------------------------
# Constraints and options
# ------------------------------------------------------------------------------------------


def test_sa_bad_groups_names_the_hyperparameter_and_its_hint_works():
    with pytest.raises(ValueError, match="groups") as err:
        create_attention("sa", 48)
    msg = str(err.value)
    assert "2*groups=128" in msg and "channels=48" in msg
    hint = int(re.search(r"pass groups=(\d+)", msg).group(1))
    m = create_attention("sa", 48, groups=hint)
    assert m(torch.randn(2, 48, 5, 6)).shape == (2, 48, 5, 6)


@pytest.mark.parametrize(
    ("key", "channels", "hyper", "needle"),
    [
        ("sge", 48, {"groups": 32}, "groups=32"),
        ("ema", 40, {}, "groups=32"),
        ("cbam", 8, {}, "reduction"),
        ("psa_p", 63, {}, "even"),
        ("scse", 64, {"fuse": "concat"}, "fuse"),
        ("triplet", 64, {"kernel_size": 4}, "kernel_size"),
    ],
)
def test_constraint_errors_are_explicit(key, channels, hyper, needle):
    with pytest.raises(ValueError, match=needle):
        create_attention(key, channels, **hyper)


def test_scse_fuse_modes_and_cpca_share_proj():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 5, 5)
    m = create_attention("scse", 32).eval()
    with torch.no_grad():
        gc = torch.sigmoid(m.fc2(m.fc1(x.mean((2, 3))).relu()))[:, :, None, None]
        gs = torch.sigmoid(F.conv2d(x, m.spatial.weight, m.spatial.bias))
        expect = {"max": torch.maximum(x * gc, x * gs), "add": x * gc + x * gs, "mul": x * gc * gs}
        for fuse, want in expect.items():
            m.fuse = fuse
            assert torch.allclose(m(x), want, atol=1e-6), fuse
    shared = create_attention("cpca", 64)
    separate = create_attention("cpca", 64, share_proj=False)
    diff = sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in shared.parameters())
    assert diff == 2 * 64 * 64 + 2 * 64
    assert get_attention_info("cpca").params(64, share_proj=False) == sum(
        p.numel() for p in separate.parameters()
    )


def test_psa_layouts_differ_and_share_branches():
    torch.manual_seed(0)
    p = create_attention("psa_p", 32).eval()
    s = create_attention("psa_s", 32).eval()
    s.load_state_dict(p.state_dict())
    x = torch.randn(2, 32, 6, 7)
    with torch.no_grad():
        assert torch.allclose(p(x), p.channel_only(x) + p.spatial_only(x))
        assert torch.allclose(s(x), p.spatial_only(p.channel_only(x)))
        assert not torch.allclose(p(x), s(x))


def test_gam_groups_option():
    m = create_attention("gam", 64, groups=4)
    assert sum(p.numel() for p in m.parameters()) == get_attention_info("gam").params(64, groups=4)
    assert m(torch.randn(2, 64, 5, 7)).shape == (2, 64, 5, 7)
