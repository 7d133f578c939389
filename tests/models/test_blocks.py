"""Building blocks of yoloattn.nn: structure, state-dict names, math, fusing and head decoding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from yoloattn.nn import (
    C3,
    MP,
    SP,
    SPP,
    SPPCSPC,
    SPPF,
    Bottleneck,
    Concat,
    Conv,
    Detect,
    DWConv,
    IDetect,
    ImplicitA,
    ImplicitM,
    RepConv,
    autopad,
)

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def _randomize_bn(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def test_autopad() -> None:
    assert autopad(3) == 1
    assert autopad(1) == 0
    assert autopad(6, 2) == 2
    assert autopad(3, d=2) == 2
    assert autopad([3, 5]) == [1, 2]


def test_conv_structure_and_v7_activation_form() -> None:
    m = Conv(3, 8, 6, 2, 2)
    assert list(m.state_dict()) == [
        "conv.weight",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    ]
    assert m.conv.bias is None and m.conv.padding == (2, 2) and isinstance(m.act, nn.SiLU)
    # YOLOv7 row form: (c1, c2, k, s, p, g, act) -> act in the dilation slot.
    m7 = Conv(3, 8, 3, 2, None, 1, nn.LeakyReLU(0.1))
    assert isinstance(m7.act, nn.LeakyReLU) and m7.act.negative_slope == 0.1
    assert m7.conv.dilation == (1, 1) and m7.conv.padding == (1, 1)
    assert isinstance(Conv(3, 8, act=False).act, nn.Identity)
    assert DWConv(8, 16, 3).conv.groups == 8
    assert tuple(m(torch.zeros(1, 3, 32, 32)).shape) == (1, 8, 16, 16)


def test_conv_fuse_equivalence() -> None:
    m = Conv(4, 6, 3, 1)
    _randomize_bn(m)
    m.eval()
    x = torch.randn(2, 4, 9, 7)
    ref = m(x)
    m.fuse()
    assert not hasattr(m, "bn") and m.conv.bias is not None
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("c1", "c2", "s", "g", "identity"),
    [(8, 16, 1, 1, False), (8, 8, 1, 1, True), (8, 8, 2, 1, False), (8, 8, 1, 2, True)],
)
def test_repconv_branches_and_reparam(c1: int, c2: int, s: int, g: int, identity: bool) -> None:
    m = RepConv(c1, c2, 3, s, g=g)
    assert (m.rbr_identity is not None) == identity
    keys = list(m.state_dict())
    assert keys[0].startswith("rbr_identity." if identity else "rbr_dense.")
    assert "rbr_dense.0.weight" in keys and "rbr_1x1.0.weight" in keys and "rbr_dense.1.running_var" in keys
    assert m.state_dict()["rbr_1x1.0.weight"].shape == (c2, c1 // g, 1, 1)
    _randomize_bn(m, seed=1)
    m.eval()
    x = torch.randn(2, c1, 10, 12)
    ref = m(x)
    m.fuse()
    assert hasattr(m, "rbr_reparam") and not hasattr(m, "rbr_dense")
    assert m.rbr_reparam.bias is not None
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)


def test_repconv_needs_kernel_3() -> None:
    with pytest.raises(ValueError, match="kernel 3"):
        RepConv(8, 8, 1)


def test_bottleneck_and_c3() -> None:
    b = Bottleneck(8, 8)
    x = torch.randn(1, 8, 6, 6)
    assert b.add and torch.allclose(b(x), x + b.cv2(b.cv1(x)))
    assert not Bottleneck(8, 8, shortcut=False).add and not Bottleneck(4, 8).add
    c3 = C3(16, 16, n=2, shortcut=False)
    assert [k for k in c3.state_dict() if k.endswith("conv.weight")] == [
        "cv1.conv.weight",
        "cv2.conv.weight",
        "cv3.conv.weight",
        "m.0.cv1.conv.weight",
        "m.0.cv2.conv.weight",
        "m.1.cv1.conv.weight",
        "m.1.cv2.conv.weight",
    ]
    assert c3.m[0].cv2.conv.weight.shape == (8, 8, 3, 3) and not c3.m[0].add
    x = torch.randn(1, 16, 8, 8)
    manual = c3.cv3(torch.cat([c3.m(c3.cv1(x)), c3.cv2(x)], 1))  # bottleneck branch first
    torch.testing.assert_close(c3(x), manual)
    # yolov5s row 2 (C3 64->64, n=1) has 18,816 parameters (spec table 10.1)
    assert sum(p.numel() for p in C3(64, 64, 1).parameters()) == 18816


def test_sppf_equals_spp_5_9_13() -> None:
    torch.manual_seed(0)
    fast = SPPF(16, 12, 5)
    slow = SPP(16, 12, (5, 9, 13))
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 16, 13, 11)
    torch.testing.assert_close(fast(x), slow(x))
    assert list(fast.state_dict())[0].startswith("cv1.") and fast.cv1.conv.out_channels == 8


def test_sppcspc_structure() -> None:
    m = SPPCSPC(1024, 512, 1)
    names = [n for n, _ in m.named_children()]
    assert names == ["cv1", "cv2", "cv3", "cv4", "m", "cv5", "cv6", "cv7"]
    assert sum(p.numel() for p in m.parameters()) == 7_609_344  # yolov7 row 51
    small = SPPCSPC(16, 8)
    x = torch.randn(1, 16, 7, 9)
    x1 = small.cv4(small.cv3(small.cv1(x)))
    y1 = small.cv6(small.cv5(torch.cat([x1] + [p(x1) for p in small.m], 1)))
    torch.testing.assert_close(small(x), small.cv7(torch.cat([y1, small.cv2(x)], 1)))


def test_pools_and_concat() -> None:
    x = torch.randn(1, 4, 16, 12)
    assert tuple(MP()(x).shape) == (1, 4, 8, 6)
    for k in (5, 9, 13):
        assert tuple(SP(k)(x).shape) == (1, 4, 16, 12)
    a, b = torch.randn(1, 2, 3, 3), torch.randn(1, 5, 3, 3)
    out = Concat(1)([a, b])
    assert out.shape[1] == 7 and torch.equal(out[:, :2], a)


def test_implicit_layers() -> None:
    torch.manual_seed(0)
    a, m = ImplicitA(256), ImplicitM(256)
    assert a.implicit.shape == (1, 256, 1, 1)
    ai, mi = a.implicit.detach(), m.implicit.detach()
    assert abs(float(ai.mean())) < 0.01 and abs(float(mi.mean()) - 1) < 0.01
    assert 0.01 < float(ai.std()) < 0.03
    x = torch.randn(2, 256, 3, 3)
    torch.testing.assert_close(a(x), x + a.implicit)
    torch.testing.assert_close(m(x), x * m.implicit)


def test_detect_state_dict_order_and_shapes() -> None:
    d = Detect(80, ANCHORS, [64, 128, 256])
    keys = list(d.state_dict())
    assert keys[0] == "anchors" and "stride" not in keys and "anchor_grid" not in keys
    assert keys[1:] == [f"m.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert d.m[2].weight.shape == (255, 256, 1, 1) and d.anchors.shape == (3, 3, 2)
    i = IDetect(80, ANCHORS, [64, 128, 256])
    ikeys = list(i.state_dict())
    assert ikeys[:2] == ["anchors", "anchor_grid"]
    assert i.anchor_grid.shape == (3, 1, 3, 1, 1, 2)
    assert ikeys[2:8] == [f"m.{k}.{p}" for k in range(3) for p in ("weight", "bias")]
    assert ikeys[8:] == [f"ia.{k}.implicit" for k in range(3)] + [f"im.{k}.implicit" for k in range(3)]
    assert i.ia[1].implicit.shape == (1, 128, 1, 1) and i.im[1].implicit.shape == (1, 255, 1, 1)


def test_idetect_rng_order_matches_spec() -> None:
    """Construction order m convs -> ia -> im fixes the RNG stream (seeded builds match)."""
    ch = [8, 16, 32]
    torch.manual_seed(3)
    head = IDetect(2, ANCHORS, ch)
    torch.manual_seed(3)
    convs = [nn.Conv2d(c, 21, 1) for c in ch]
    ias = [ImplicitA(c) for c in ch]
    ims = [ImplicitM(21) for _ in ch]
    for k in range(3):
        assert torch.equal(head.m[k].weight, convs[k].weight)
        assert torch.equal(head.ia[k].implicit, ias[k].implicit)
        assert torch.equal(head.im[k].implicit, ims[k].implicit)


@pytest.mark.parametrize("cls", [Detect, IDetect])
def test_head_decode_math_and_row_order(cls: type[Detect]) -> None:
    """Zero logits decode to cell centres and anchor-sized boxes; order is level, anchor, y, x."""
    nc = 2
    head = cls(nc, ANCHORS, [4, 4, 4])
    strides = [8.0, 16.0, 32.0]
    head.stride = torch.tensor(strides)
    with torch.no_grad():
        head.anchors /= head.stride.view(-1, 1, 1)
        for c in head.m:
            c.weight.zero_()
            c.bias.zero_()
        if isinstance(head, IDetect):
            for im in head.im:
                im.implicit.fill_(1.0)
    head.eval()
    h, w = 64, 96  # non-square
    feats = [torch.randn(1, 4, h // int(s), w // int(s)) for s in strides]
    dec, raw = head(feats)
    assert dec.shape == (1, 3 * sum((h // int(s)) * (w // int(s)) for s in strides), nc + 5)
    assert [tuple(r.shape) for r in raw] == [(1, 3, h // int(s), w // int(s), nc + 5) for s in strides]
    # level 1 (stride 16, grid 4x6), anchor 2, y=3, x=5
    n0 = 3 * 8 * 12
    row = n0 + 2 * (4 * 6) + 3 * 6 + 5
    torch.testing.assert_close(dec[0, row, :2], torch.tensor([(5 + 0.5) * 16, (3 + 0.5) * 16]))
    torch.testing.assert_close(dec[0, row, 2:4], torch.tensor([59.0, 119.0]))
    torch.testing.assert_close(dec[0, row, 4:], torch.full((nc + 1,), 0.5))
    # grids follow a new input size
    dec2, _ = head([torch.randn(1, 4, 2 * s, s) for s in (8, 4, 2)])
    assert dec2.shape[1] == 3 * (16 * 8 + 8 * 4 + 4 * 2)


def test_initialize_biases_priors() -> None:
    for cls, off in ((Detect, 0.99999), (IDetect, 0.99)):
        head = cls(80, ANCHORS, [4, 4, 4])
        with torch.no_grad():
            for c in head.m:
                c.bias.zero_()
        head.initialize_biases([8, 16, 32])
        b = head.m[1].bias.view(3, 85)
        torch.testing.assert_close(b[:, 4], torch.full((3,), math.log(8 / (640 / 16) ** 2)))
        torch.testing.assert_close(b[:, 5:], torch.full((3, 80), math.log(0.6 / (80 - off))))
        torch.testing.assert_close(b[:, :4], torch.zeros(3, 4))


def test_idetect_fuse_equivalence() -> None:
    torch.manual_seed(0)
    head = IDetect(3, ANCHORS, [8, 16, 32])
    head.stride = torch.tensor([8.0, 16.0, 32.0])
    with torch.no_grad():
        for mod in list(head.ia) + list(head.im):
            mod.implicit.add_(torch.randn_like(mod.implicit) * 0.3)
    head.eval()
    feats = [torch.randn(2, c, s, s) for c, s in ((8, 8), (16, 4), (32, 2))]
    ref, _ = head(feats)
    n_params = sum(p.numel() for p in head.parameters())
    head.fuse()
    out, _ = head(feats)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in head.parameters()) == n_params  # ia/im stay registered
