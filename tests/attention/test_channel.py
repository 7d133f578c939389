"""Behaviour tests of the channel-attention family (channel-category keys).

The shared contract (parameter formulas, shapes, gradients, ONNX, dtypes) is in
``test_zoo_contract.py``; this file checks what is special to each module: the ECA kernel
rule, output parity with timm where timm implements the same definition, hand-computed small
cases, fixed buffers, variants and error messages.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from onnx_check import assert_onnx_matches
from torch import nn

from yoloattn.attention import create_attention, get_attention_info
from yoloattn.attention._common import GuardedBatchNorm2d as _GuardedBatchNorm2d
from yoloattn.attention.eca import eca_kernel_size
from yoloattn.attention.fca import _adaptive_avg_matrix, fca_dct_filters
from yoloattn.attention.nam import NAM, nam_l1_penalty
from yoloattn.attention.soca import _sqrtm_newton_schulz


def _timm():
    """timm is a test-only dependency: only the parity tests skip without it."""
    return pytest.importorskip("timm.layers")


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _copy_state_in_order(dst: nn.Module, src: nn.Module) -> None:
    """Copy ``src``'s state (params + BN buffers) into ``dst`` entry by entry, in order."""
    sd_dst, sd_src = dst.state_dict(), src.state_dict()
    assert len(sd_dst) == len(sd_src), (list(sd_dst), list(sd_src))
    new = {}
    for (k_dst, v_dst), (k_src, v_src) in zip(sd_dst.items(), sd_src.items()):
        assert v_dst.shape == v_src.shape, f"{k_dst} {tuple(v_dst.shape)} vs {k_src} {tuple(v_src.shape)}"
        new[k_dst] = v_src.clone()
    dst.load_state_dict(new)


def _randomize(m: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if t.is_floating_point():
                r = torch.randn(t.shape, generator=g) * 0.3
                t.copy_(r.abs() + 0.5 if "running_var" in name else r)


# ------------------------------------------------------------------------------------------
# ECA kernel rule
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels,k", [(64, 3), (256, 5), (512, 5), (1024, 5), (2048, 7), (16, 3)])
def test_eca_adaptive_kernel_rule(channels, k):
    assert eca_kernel_size(channels) == k
    for key in ("eca", "ceca"):
        m = create_attention(key, channels)
        assert m.conv.kernel_size == (k,)
        assert _count(m) == k == get_attention_info(key).params(channels)


def test_eca_kernel_size_override_and_validation():
    m = create_attention("eca", 256, kernel_size=9)
    assert m.conv.kernel_size == (9,) and _count(m) == 9
    assert get_attention_info("eca").params(256, kernel_size=9) == 9
    with pytest.raises(ValueError, match="kernel_size=4"):
        create_attention("eca", 256, kernel_size=4)


def test_eca_equals_explicit_formula():
    torch.manual_seed(0)
    m = create_attention("eca", 64).eval()  # k = 3
    x = torch.randn(2, 64, 5, 6)
    w = m.conv.weight.view(3)
    y = x.mean((2, 3))
    yp = F.pad(y, (1, 1))
    conv = w[0] * yp[:, :-2] + w[1] * yp[:, 1:-1] + w[2] * yp[:, 2:]
    ref = x * torch.sigmoid(conv)[:, :, None, None]
    torch.testing.assert_close(m(x), ref)


# ------------------------------------------------------------------------------------------
# timm parity (same definitions)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [64, 256])
def test_se_matches_timm(channels):
    # timm's default width is make_divisible(C/16, 8); rd_channels=C//16 gives the paper's C/r.
    ref = _timm().SEModule(channels, rd_channels=channels // 16, bias=True).eval()
    ours = create_attention("se", channels).eval()
    _randomize(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, channels, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_ese_matches_timm():
    ref = _timm().EffectiveSEModule(64).eval()
    ours = create_attention("ese", 64).eval()
    _randomize(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 64, 6, 5) * 3
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("key,timm_cls", [("eca", "EcaModule"), ("ceca", "CecaModule")])
@pytest.mark.parametrize("channels", [64, 256, 2048])
def test_eca_and_ceca_match_timm(key, timm_cls, channels):
    # timm derives k from C with the same rule (plus k >= 3, irrelevant for C >= 16).
    ref = getattr(_timm(), timm_cls)(channels).eval()
    ours = create_attention(key, channels).eval()
    assert ours.conv.weight.shape == ref.conv.weight.shape
    _randomize(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, channels, 4, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("train", [False, True])
def test_sk_matches_timm(train):
    # timm's default splits the input across paths; split_input=False, groups=32 and
    # rd_channels=d = max(C/16, 32) is the paper's SKConv (3x3 and dilated 3x3 paths).
    c = 64
    ref = _timm().SelectiveKernel(c, groups=32, rd_channels=max(c // 16, 32), split_input=False)
    ours = create_attention("sk", c)
    assert _count(ours) == _count(ref)
    _randomize(ref)
    _copy_state_in_order(ours, ref)
    ours.train(train)
    ref.train(train)
    x = torch.randn(2, c, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("radix,cardinality", [(2, 1), (4, 2), (1, 1)])
def test_splat_matches_timm(radix, cardinality):
    c = 64
    inter = max(c * radix // 4, 32)
    ref = (
        _timm()
        .SplitAttn(c, radix=radix, groups=cardinality, rd_channels=inter // radix, norm_layer=nn.BatchNorm2d)
        .eval()
    )
    ours = create_attention("splat", c, radix=radix, cardinality=cardinality).eval()
    assert (
        _count(ours)
        == _count(ref)
        == get_attention_info("splat").params(c, radix=radix, cardinality=cardinality)
    )
    _randomize(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, c, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# SE, GCT, SRM: hand-computed cases
# ------------------------------------------------------------------------------------------


def test_se_bias_option_and_reduction_error():
    assert _count(create_attention("se", 256, bias=False)) == 2 * 256 * 16
    assert get_attention_info("se").params(256, bias=False) == 8192
    with pytest.raises(ValueError, match="reduction"):
        create_attention("se", 8)


def test_gct_starts_as_exact_identity():
    m = create_attention("gct", 16)
    x = torch.randn(2, 16, 5, 3)
    assert torch.equal(m(x), x)
    assert get_attention_info("gct").identity_init == "exact"


def test_gct_hand_computed_l2_and_l1():
    x = torch.tensor([[1.0, 2.0], [2.0, 4.0]]).view(1, 2, 1, 2)  # ch0 (1,2), ch1 (2,4)
    m = create_attention("gct", 2, epsilon=0.0)
    with torch.no_grad():
        m.alpha.copy_(torch.tensor([1.0, 0.5]).view(1, 2, 1, 1))
        m.gamma.copy_(torch.tensor([2.0, -1.0]).view(1, 2, 1, 1))
        m.beta.copy_(torch.tensor([0.1, 0.2]).view(1, 2, 1, 1))
    # l2: s = alpha * ||x_c|| = (sqrt5, 0.5*sqrt20 = sqrt5); mean(s^2) = 5 -> n = gamma * 1
    g0, g1 = 1 + math.tanh(2.0 + 0.1), 1 + math.tanh(-1.0 + 0.2)
    want = x * torch.tensor([g0, g1]).view(1, 2, 1, 1)
    torch.testing.assert_close(m(x), want)
    m.mode = "l1"
    # l1: s = alpha * sum|x| = (3, 3); mean|s| = 3 -> n = gamma * 1, same gates
    torch.testing.assert_close(m(x), want)
    with pytest.raises(ValueError, match="mode="):
        create_attention("gct", 2, mode="linf")


def test_srm_hand_computed():
    x = torch.tensor([[0.0, 2.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    m = create_attention("srm", 2).eval()
    with torch.no_grad():
        m.cfc.copy_(torch.tensor([[1.0, 0.5], [-2.0, 3.0]]))
        m.bn.running_mean.copy_(torch.tensor([0.5, 0.0]))
        m.bn.running_var.copy_(torch.tensor([4.0, 1.0]))
        m.bn.weight.copy_(torch.tensor([1.0, 2.0]))
        m.bn.bias.copy_(torch.tensor([0.0, -1.0]))
    # ch0: mean 1, unbiased var 2 -> std sqrt(2 + 1e-5); ch1: mean 1, var 0 -> std sqrt(1e-5)
    z0 = 1.0 + 0.5 * math.sqrt(2 + 1e-5)
    z1 = -2.0 + 3.0 * math.sqrt(1e-5)
    eps = m.bn.eps
    g0 = torch.sigmoid(torch.tensor((z0 - 0.5) / math.sqrt(4 + eps)))
    g1 = torch.sigmoid(torch.tensor(2.0 * z1 / math.sqrt(1 + eps) - 1.0))
    torch.testing.assert_close(m(x), x * torch.stack([g0, g1]).view(1, 2, 1, 1))


def test_srm_rejects_single_pixel_maps():
    with pytest.raises(ValueError, match="H\\*W >= 2"):
        create_attention("srm", 8).eval()(torch.randn(2, 8, 1, 1))


# ------------------------------------------------------------------------------------------
# Batch-1 guard of BatchNorm on pooled statistics (spec rule 5.3)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key,bn_name", [("sk", "bn"), ("splat", "bn1"), ("srm", "bn")])
def test_pooled_bn_batch1_train_uses_running_stats(key, bn_name):
    torch.manual_seed(0)
    m = create_attention(key, 64)
    _randomize(m)
    bn = getattr(m, bn_name)
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(1, 64, 6, 5)
    with torch.no_grad():
        y_eval = m.eval()(x)
        y_train = m.train()(x)  # must not raise "Expected more than 1 value per channel"
    assert torch.isfinite(y_train).all()
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    if key == "srm":  # its only BN is the pooled one: batch-1 training equals eval
        torch.testing.assert_close(y_train, y_eval)
    # with batch 2 the pooled BN uses batch statistics and updates its running mean
    m.train()(torch.randn(2, 64, 6, 5))
    assert not torch.equal(bn.running_mean, mean)


def test_guarded_bn_equals_eval_bn_for_one_value_per_channel():
    bn = _GuardedBatchNorm2d(5)
    _randomize(bn)
    z = torch.randn(1, 5, 1, 1)
    want = bn.eval()(z)
    got = bn.train()(z)
    torch.testing.assert_close(got, want)
    got.sum().backward()
    assert bn.weight.grad is not None and bn.bias.grad is not None


# ------------------------------------------------------------------------------------------
# FcaNet
# ------------------------------------------------------------------------------------------


def test_fca_dct_filters_are_fixed_buffers():
    m = create_attention("fca", 64)
    assert _count(m) == 2 * 64 * 4 == get_attention_info("fca").params(64)
    names = [n for n, _ in m.named_parameters()]
    assert not any("dct" in n for n in names)
    assert m.dct_filters.shape == (64, 7, 7) and "dct_filters" in dict(m.named_buffers())
    f = fca_dct_filters(64)
    torch.testing.assert_close(m.dct_filters, f)
    # part 0 is frequency (0, 0): constant 1/7; part 1 is (0, 1): varies along W only
    torch.testing.assert_close(f[0], torch.full((7, 7), 1 / 7))
    assert torch.allclose(f[4], f[4][:1].expand(7, 7))
    # basis vectors of the DCT are orthonormal: the 16 distinct filters have unit norm
    norms = f[::4].flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(16))


@pytest.mark.parametrize("size,out", [(7, 7), (20, 7), (13, 7), (5, 7), (1, 7), (28, 14)])
def test_fca_pooling_matrix_equals_adaptive_avg_pool(size, out):
    v = torch.randn(3, size)
    mat = _adaptive_avg_matrix(size, out, v)
    want = F.adaptive_avg_pool1d(v[:, None], out)[:, 0]
    torch.testing.assert_close(v @ mat.t(), want)


def test_fca_equals_official_formulation():
    torch.manual_seed(0)
    m = create_attention("fca", 32, reduction=4, freq_sel="top8").eval()
    for h, w in [(7, 7), (13, 10), (3, 4)]:
        x = torch.randn(2, 32, h, w)
        pooled = x if (h, w) == (7, 7) else F.adaptive_avg_pool2d(x, 7)
        y = (pooled * m.dct_filters).sum((2, 3))
        s = torch.sigmoid(m.fc2.weight[:, :, 0, 0] @ torch.relu(m.fc1.weight[:, :, 0, 0] @ y.t()))
        with torch.no_grad():
            torch.testing.assert_close(m(x), x * s.t()[:, :, None, None], rtol=1e-5, atol=1e-6)


def test_fca_constraint_messages():
    with pytest.raises(ValueError, match="freq_sel='top8'"):
        create_attention("fca", 24)
    with pytest.raises(ValueError, match="freq_sel="):
        create_attention("fca", 64, freq_sel="low16")
    with pytest.raises(ValueError, match="dct_size=5"):
        create_attention("fca", 64, dct_size=5)
    assert create_attention("fca", 24, freq_sel="top8", reduction=8) is not None


# ------------------------------------------------------------------------------------------
# NAM
# ------------------------------------------------------------------------------------------


def test_nam_formula_and_detach_variant():
    torch.manual_seed(0)
    m = create_attention("nam", 8).eval()
    _randomize(m)
    x = torch.randn(2, 8, 4, 5)
    g = m.bn.weight.abs()
    w = (g / g.sum()).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), x * torch.sigmoid(w * m.bn(x)))

    # paper formula: gradient flows through w as well; official detaches it
    def grad_of_gamma(detach: bool) -> torch.Tensor:
        n = create_attention("nam", 8, detach_weights=detach).eval()
        n.load_state_dict(m.state_dict())
        n(x).sum().backward()
        return n.bn.weight.grad.clone()

    assert not torch.allclose(grad_of_gamma(False), grad_of_gamma(True))


def test_nam_l1_penalty_helper():
    model = nn.Sequential(NAM(4), nn.Conv2d(4, 4, 1), NAM(2))
    with torch.no_grad():
        model[0].bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 0.5]))
        model[2].bn.weight.copy_(torch.tensor([3.0, -1.0]))
    pen = nam_l1_penalty(model, weight=0.1)
    torch.testing.assert_close(pen, torch.tensor(0.8))
    pen.backward()
    assert model[0].bn.weight.grad is not None
    assert nam_l1_penalty(nn.Conv2d(2, 2, 1)).item() == 0.0


# ------------------------------------------------------------------------------------------
# SK / EPSA / SOCA / ParNet specifics
# ------------------------------------------------------------------------------------------


def test_sk_group_constraint_names_groups():
    with pytest.raises(ValueError, match="pass groups=16"):
        create_attention("sk", 48)
    m = create_attention("sk", 48, groups=16, paths=3)
    assert _count(m) == get_attention_info("sk").params(48, groups=16, paths=3)
    assert m(torch.randn(2, 48, 6, 7)).shape == (2, 48, 6, 7)


def test_epsa_official_order_is_branch_permutation():
    torch.manual_seed(0)
    a = create_attention("epsa", 64).eval()
    b = create_attention("epsa", 64, official_order=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 64, 9, 6)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    torch.testing.assert_close(yb, ya.view(2, 4, 16, 9, 6).flip(1).reshape(2, 64, 9, 6))
    with pytest.raises(ValueError, match="groups="):
        create_attention("epsa", 96)
    with pytest.raises(ValueError, match="reduction"):
        create_attention("epsa", 32, groups=(1, 2, 4, 8))
    assert create_attention("epsa", 32, groups=(1, 2, 4, 8), reduction=8) is not None


def test_soca_newton_schulz_square_root():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    ev = torch.tensor([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], dtype=torch.float64)
    a = (q * ev) @ q.t()
    root = _sqrtm_newton_schulz(a[None], 8)[0]
    torch.testing.assert_close(root, (q * ev.sqrt()) @ q.t(), rtol=1e-6, atol=1e-6)
    # a zero covariance (constant map) gives a zero root, not NaN
    assert torch.equal(_sqrtm_newton_schulz(torch.zeros(1, 3, 3), 5), torch.zeros(1, 3, 3))


def test_soca_descriptor_is_row_mean_of_covariance_root():
    torch.manual_seed(0)
    m = create_attention("soca", 16, reduction=4).double().eval()
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    v = x.flatten(2)
    v = v - v.mean(2, keepdim=True)
    cov = v @ v.transpose(1, 2) / v.shape[2]
    z = _sqrtm_newton_schulz(cov, 5).mean(1)[:, :, None, None]
    s = torch.sigmoid(m.fc2(torch.relu(m.fc1(z))))
    with torch.no_grad():
        torch.testing.assert_close(m(x), x * s)
        assert torch.isfinite(m(torch.ones(1, 16, 1, 1, dtype=torch.float64))).all()


def test_parnet_block_formula():
    torch.manual_seed(0)
    m = create_attention("parnet", 8).eval()
    _randomize(m)
    x = torch.randn(2, 8, 5, 4)
    with torch.no_grad():
        y = m.bn_id(x)
        sse = y * torch.sigmoid(m.se(y.mean((2, 3), keepdim=True)))
        want = F.silu(m.bn3(m.conv3(x)) + m.bn1(m.conv1(x)) + sse)
        torch.testing.assert_close(m(x), want)


@pytest.mark.parametrize(
    "key,hyper", [("ceca", {"kernel_size": 5}), ("fca", {"dct_size": 14, "freq_sel": "top8"})]
)
def test_onnx_dynamic_hw_for_spec_flagged_exports(key, hyper):
    """The spec found circular F.pad (ceca) and non-1 adaptive pooling (fca) broken in ONNX;
    the torch.cat wrap and the explicit pooling matrix export with dynamic H/W."""
    m = create_attention(key, 64, **hyper).eval()
    # sizes smaller and larger than the DCT grid, not the traced size; absolute tolerance 1e-5
    assert_onnx_matches(m, 64, (14, 21), [(5, 3), (33, 9)], atol=1e-5, rtol_scale=0.0, label=key)
