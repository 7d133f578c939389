"""Behaviour tests for the large-kernel family (msca, lsk, lska).

Checks the kernel-decomposition facts of the spec (section 3.4): LSKA's (a, b, d) table gives
the effective kernel k = a + d(b - 1) with a dense k x k receptive field, MSCA's strip pairs are
rank-1 k x k depthwise kernels, LSK's decomposed kernel reaches 23 x 23; and that the gates
have no hidden residual (spec rule 5.8).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yoloattn.attention import create_attention, get_attention_info
from yoloattn.attention.large_kernel import LSKA_KERNELS


def _randomize(m: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim <= 1 else 0.0))
    return m


def _support(fn, c: int, size: int) -> tuple[int, int]:
    """Height and width of the input region that the centre output pixel depends on."""
    x = torch.randn(1, c, size, size, dtype=torch.float64, requires_grad=True)
    fn(x)[0, :, size // 2, size // 2].sum().backward()
    nz = x.grad.abs().sum((0, 1)) > 0
    rows, cols = nz.any(1).nonzero(), nz.any(0).nonzero()
    # the support must be a dense rectangle: every row/column inside it is reached
    assert nz[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("k", sorted(LSKA_KERNELS))
def test_lska_effective_kernel(k):
    a, b, d = LSKA_KERNELS[k]
    assert a + d * (b - 1) == k
    m = _randomize(create_attention("lska", 4, kernel_size=k)).double()
    assert _support(m, 4, k + 8) == (k, k)


def test_lska_param_formula_other_kernel():
    info = get_attention_info("lska")
    assert info.params(256, kernel_size=7) == 256 * 256 + 17 * 256 == 69888
    m = create_attention("lska", 256, kernel_size=7)
    assert sum(p.numel() for p in m.parameters()) == 69888


def test_msca_strip_pairs_are_rank_one_kernels():
    c = 4
    m = _randomize(create_attention("msca", c)).double()
    x = torch.randn(1, c, 30, 30, dtype=torch.float64)
    with torch.no_grad():
        for strip, k in zip(m.strips, (7, 11, 21), strict=True):
            h, v = strip[0], strip[1]
            h.bias.zero_()
            v.bias.zero_()
            kernel = v.weight[:, :, :, 0:1] * h.weight[:, :, 0:1, :]  # (C,1,k,1) x (C,1,1,k)
            assert kernel.shape == (c, 1, k, k)
            dense = F.conv2d(x, kernel, padding=k // 2, groups=c)
            torch.testing.assert_close(strip(x), dense)


def test_msca_receptive_field_is_25():
    # DW 5x5 followed by the largest strip pair (21) spans 5 + 21 - 1 = 25
    m = _randomize(create_attention("msca", 4)).double()
    assert _support(m, 4, 33) == (25, 25)


def test_lsk_decomposed_kernel_reaches_23():
    # LSKNet: DW 5x5 then DW 7x7 with dilation 3 -> 5 + 3 * (7 - 1) = 23
    m = _randomize(create_attention("lsk", 4)).double()
    assert _support(lambda x: m.conv_spatial(m.conv0(x)), 4, 31) == (23, 23)


@pytest.mark.parametrize("key", ["msca", "lsk", "lska"])
def test_gate_has_no_hidden_residual(key):
    m = _randomize(create_attention(key, 8)).eval()
    with torch.no_grad():
        assert torch.equal(m(torch.zeros(2, 8, 9, 7)), torch.zeros(2, 8, 9, 7))


def test_lsk_spatial_selection():
    # With the selection conv reduced to its bias, the gate mixes the two kernels with fixed
    # weights sigmoid(b0), sigmoid(b1).
    c = 8
    m = _randomize(create_attention("lsk", c)).eval()
    with torch.no_grad():
        m.squeeze.weight.zero_()
        m.squeeze.bias.copy_(torch.tensor([0.3, -1.2]))
        x = torch.randn(2, c, 9, 10)
        a1 = m.conv0(x)
        u1, u2 = m.reduce1(a1), m.reduce2(m.conv_spatial(a1))
        s0, s1 = torch.sigmoid(torch.tensor(0.3)), torch.sigmoid(torch.tensor(-1.2))
        torch.testing.assert_close(m(x), x * m.expand(u1 * s0 + u2 * s1))


@pytest.mark.parametrize("key", ["msca", "lsk"])
def test_wrap_option(key):
    info = get_attention_info(key)
    c = 16
    m = create_attention(key, c, wrap=True)
    assert sum(p.numel() for p in m.parameters()) == info.params(c, wrap=True)
    assert info.params(c, wrap=True) - info.params(c) == 2 * c * c + 2 * c
    _randomize(m)
    with torch.no_grad():
        m.proj2.weight.zero_()
        m.proj2.bias.zero_()
        x = torch.randn(2, c, 6, 5)
        assert torch.equal(m(x), x)  # x + proj2(...) with proj2 = 0


@pytest.mark.parametrize(
    ("key", "channels", "hyper", "match"),
    [
        ("lsk", 63, {}, "channels=63"),
        ("lska", 32, {"kernel_size": 9}, "kernel_size=9"),
        ("msca", 32, {"kernel_sizes": (7, 8)}, "kernel_sizes="),
    ],
)
def test_bad_construction_is_named(key, channels, hyper, match):
    with pytest.raises(ValueError, match=match):
        create_attention(key, channels, **hyper)
