"""Built detectors: exact parameter counts, official state-dict layout, forward, fuse, strides."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from yoloattn.attention import registry
from yoloattn.attention.registry import AttentionInfo
from yoloattn.models import Model, build_model, count_flops, profile
from yoloattn.nn import IDetect

# Spec section 5 (nc=80): params, params after fuse(), state-dict entries, head row.
EXPECTED = {
    "yolov5n": (1_872_157, 1_867_405, 349, 24),
    "yolov5s": (7_235_389, 7_225_885, 349, 24),
    "yolov5m": (21_190_557, 21_172_173, 481, 24),
    "yolov5l": (46_563_709, 46_533_693, 613, 24),
    "yolov5x": (86_749_405, 86_705_005, 745, 24),
    "yolov7-tiny": (6_228_762, 6_221_370, 344, 77),
    "yolov7": (37_622_682, 36_907_898, 566, 105),
    "yolov7x": (71_347_394, 71_314_746, 644, 121),
}
ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]

# A small YOLOv7-style network exercising SPPCSPC, MP, SP, RepConv (with identity branch) and IDetect.
TINY_V7 = {
    "nc": 3,
    "depth_multiple": 1.0,
    "width_multiple": 1.0,
    "anchors": ANCHORS,
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "MP", []],
        [-1, 1, "Conv", [16, 1, 1]],  # 3: /8
        [-1, 1, "MP", []],
        [-1, 1, "Conv", [32, 1, 1]],  # 5: /16
        [-1, 1, "MP", []],
        [-1, 1, "SPPCSPC", [32]],  # 7: /32
    ],
    "head": [
        [-1, 1, "SP", [5]],
        [[-1, -2], 1, "Concat", [1]],  # 9: 64 ch
        [3, 1, "RepConv", [16, 3, 1]],
        [5, 1, "RepConv", [32, 3, 1]],
        [9, 1, "RepConv", [64, 3, 1]],
        [[10, 11, 12], 1, "IDetect", ["nc", "anchors"]],
    ],
}


def _n(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomize(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
        if isinstance(model.model[-1], IDetect):
            for mod in list(model.detect.ia) + list(model.detect.im):
                mod.implicit.add_(torch.randn(mod.implicit.shape, generator=g) * 0.2)


@pytest.fixture(scope="module")
def v5n() -> Model:
    torch.manual_seed(0)
    return build_model("yolov5n")


@pytest.fixture(scope="module")
def v7tiny() -> Model:
    torch.manual_seed(0)
    return build_model("yolov7-tiny")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_exact_counts_and_state_dict(name: str) -> None:
    params, fused, entries, head = EXPECTED[name]
    m = build_model(name, device="meta")
    assert _n(m) == params
    sd = m.state_dict()
    assert len(sd) == entries
    assert all(k.startswith("model.") for k in sd)
    assert m.detect.i == head == len(m.model) - 1
    assert m.stride.tolist() == [8.0, 16.0, 32.0] and m.detect.stride.tolist() == [8.0, 16.0, 32.0]
    assert sd[f"model.{head}.anchors"].shape == (3, 3, 2)
    for k in range(3):
        assert sd[f"model.{head}.m.{k}.bias"].shape == (255,)
    keys_in_head = [k.split(".", 2)[2] for k in sd if k.startswith(f"model.{head}.")]
    if name.startswith("yolov5"):
        assert keys_in_head[0] == "anchors" and "anchor_grid" not in keys_in_head
    else:
        assert keys_in_head[:2] == ["anchors", "anchor_grid"]
        assert sd[f"model.{head}.anchor_grid"].shape == (3, 1, 3, 1, 1, 2)
        assert sd[f"model.{head}.im.2.implicit"].shape == (1, 255, 1, 1)
    m.fuse()
    assert _n(m) == fused


def test_spec_section8_keys() -> None:
    s = build_model("yolov5s", device="meta").state_dict()
    assert s["model.0.conv.weight"].shape == (32, 3, 6, 6)
    assert {
        f"model.0.bn.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    } <= set(s)
    assert s["model.2.m.0.cv2.conv.weight"].shape == (32, 32, 3, 3)
    assert {"model.2.cv3.conv.weight", "model.9.cv1.conv.weight", "model.9.cv2.bn.bias"} <= set(s)
    assert s["model.24.m.0.weight"].shape == (255, 128, 1, 1)
    assert list(s)[-7:] == ["model.24.anchors"] + [
        f"model.24.m.{i}.{p}" for i in range(3) for p in ("weight", "bias")
    ]
    v7 = build_model("yolov7", device="meta").state_dict()
    assert v7["model.102.rbr_dense.0.weight"].shape == (256, 128, 3, 3)
    assert v7["model.102.rbr_1x1.0.weight"].shape == (256, 128, 1, 1)
    assert "model.102.rbr_dense.1.num_batches_tracked" in v7 and "model.102.rbr_identity.weight" not in v7
    assert {f"model.51.cv{i}.conv.weight" for i in range(1, 8)} <= set(v7)
    assert v7["model.105.ia.0.implicit"].shape == (1, 256, 1, 1)
    assert list(v7)[-14:-12] == ["model.105.anchors", "model.105.anchor_grid"]
    x = build_model("yolov7x", device="meta").state_dict()
    assert (
        x["model.120.conv.weight"].shape == (1280, 640, 3, 3)
        and x["model.121.ia.2.implicit"].shape[1] == 1280
    )


def test_flops_match_spec() -> None:
    x = torch.zeros(1, 3, 640, 640, device="meta")
    v5s = build_model("yolov5s", device="meta")
    assert round(count_flops(v5s, x), 3) == 16.434
    v7 = build_model("yolov7", device="meta")
    assert round(count_flops(v7, x), 3) == 105.769
    assert round(count_flops(v7.fuse(), x), 3) == 104.511


def test_fresh_build_matches_official_side_effects(v5n: Model) -> None:
    assert v5n.training
    bns = [m for m in v5n.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    assert all(int(m.num_batches_tracked) == 1 for m in bns)
    torch.testing.assert_close(bns[5].running_var, torch.full_like(bns[5].running_var, 0.9))
    torch.testing.assert_close(bns[5].running_mean, torch.zeros_like(bns[5].running_mean))
    torch.testing.assert_close(
        v5n.detect.anchors[0], torch.tensor([[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]])
    )
    b = v5n.detect.m[0].bias.detach().view(3, 85)
    bound = 1 / math.sqrt(64)  # PyTorch's default uniform bias bound for fan_in 64
    assert (b[:, 4] - math.log(8 / 80**2)).abs().max() <= bound
    assert (b[:, 5:] - math.log(0.6 / (80 - 0.99999))).abs().max() <= bound
    assert v5n.names == [str(i) for i in range(80)] and v5n.nc == 80


def test_seeded_build_is_deterministic_and_loads_strict(v7tiny: Model) -> None:
    torch.manual_seed(0)
    again = build_model("yolov7-tiny")
    a, b = v7tiny.state_dict(), again.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(1)
    other = build_model(v7tiny.yaml)
    other.load_state_dict(a, strict=True)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(other.eval()(x)[0], copy.deepcopy(v7tiny).eval()(x)[0])


@pytest.mark.parametrize("fixture", ["v5n", "v7tiny"])
def test_forward_shapes_train_and_eval(fixture: str, request: pytest.FixtureRequest) -> None:
    model = copy.deepcopy(request.getfixturevalue(fixture))
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        raw = model.train()(x)
        assert [tuple(r.shape) for r in raw] == [(2, 3, 8, 12, 85), (2, 3, 4, 6, 85), (2, 3, 2, 3, 85)]
        model.eval()
        dec, levels = model(x)
        assert dec.shape == (2, 3 * (96 + 24 + 6), 85)
        assert [lv.shape for lv in levels] == [r.shape for r in raw]
    # decoded rows are sigmoid/grid transforms of the raw levels (level, anchor, y, x order)
    d = model.detect
    s1 = levels[1].sigmoid()[1, 2, 3, 5]
    row = 3 * 8 * 12 + 2 * 4 * 6 + 3 * 6 + 5
    xy = (s1[:2] * 2 - 0.5 + torch.tensor([5.0, 3.0])) * 16
    wh = (s1[2:4] * 2) ** 2 * d.anchors[1, 2] * 16
    torch.testing.assert_close(dec[1, row, :4], torch.cat([xy, wh]), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(dec[1, row, 4:], s1[4:])
    # a new input size rebuilds the grids
    with torch.no_grad():
        dec2, _ = model(torch.rand(1, 3, 96, 32))
        fresh, _ = copy.deepcopy(request.getfixturevalue(fixture)).eval()(torch.zeros(1, 3, 96, 32))
    assert dec2.shape == fresh.shape == (1, 3 * (48 + 12 + 3), 85)
    assert float(dec2[0, :, 1].max()) < 96 + 16 and float(dec2[0, :, 0].max()) < 32 + 16


@pytest.mark.parametrize("fixture", ["v5n", "v7tiny"])
def test_fuse_keeps_eval_outputs(fixture: str, request: pytest.FixtureRequest) -> None:
    model = copy.deepcopy(request.getfixturevalue(fixture))
    _randomize(model)
    model.eval()
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        ref, ref_raw = model(x)
        model.fuse()
        out, raw = model(x)
    assert model.is_fused and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(raw, ref_raw):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert sum(layer.np for layer in model.model) == _n(model)


def test_tiny_v7_repconv_idetect_fuse() -> None:
    torch.manual_seed(0)
    model = build_model(TINY_V7)
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert model.model[12].rbr_identity is not None  # 64 -> 64, stride 1
    n = _n(model)
    _randomize(model, seed=2)
    model.eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ref, _ = model(x)
        model.fuse()
        out, _ = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert hasattr(model.model[10], "rbr_reparam") and model.detect.fused
    assert _n(model) < n


def test_meta_strides_match_probe_and_rebuild_from_yaml(v5n: Model) -> None:
    meta = build_model(v5n.yaml, device="meta")
    assert meta.stride.tolist() == v5n.stride.tolist()
    assert {k: v.shape for k, v in meta.state_dict().items()} == {
        k: v.shape for k, v in v5n.state_dict().items()
    }
    assert v5n.yaml["ch"] == 3 and v5n.yaml["nc"] == 80


def test_nc_override() -> None:
    m = build_model("yolov7-tiny", nc=3, device="meta")
    assert m.nc == 3 and m.yaml["nc"] == 3 and m.detect.no == 8 and m.names == ["0", "1", "2"]
    assert m.detect.m[0].weight.shape == (24, 128, 1, 1) and m.detect.im[0].implicit.shape == (1, 24, 1, 1)


class _PooledBNGate(nn.Module):
    """Test-only attention with BatchNorm over pooled (N, C, 1, 1) maps: fails in train mode at N=1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.bn(self.fc(x.mean((2, 3), keepdim=True))))


@pytest.fixture
def pooled_gate(monkeypatch: pytest.MonkeyPatch) -> str:
    registry._ensure_loaded()
    info = AttentionInfo(
        key="testpooledgate",
        cls=_PooledBNGate,
        paper="test",
        venue="test",
        year=2024,
        category="channel",
        reference="none",
        params_fn=lambda c: c * c + 2 * c,
    )
    monkeypatch.setitem(registry._REGISTRY, "testpooledgate", info)
    return "testpooledgate"


def test_attention_model_with_batch1_bn_builds(pooled_gate: str) -> None:
    cfg = copy.deepcopy(TINY_V7)
    cfg["backbone"].insert(6, [-1, 1, "TestPooledGate", []])  # after row 5; later indices shift by 1
    cfg["head"] = [
        [-1, 1, "SP", [5]],
        [[-1, -2], 1, "Concat", [1]],
        [3, 1, "RepConv", [16, 3, 1]],
        [6, 1, "RepConv", [32, 3, 1]],
        [10, 1, "RepConv", [64, 3, 1]],
        [[11, 12, 13], 1, "IDetect", ["nc", "anchors"]],
    ]
    model = build_model(cfg)
    assert model.training and model.stride.tolist() == [8.0, 16.0, 32.0]
    assert model.model[6].type == "testpooledgate" and model.model[6].np == 32 * 32 + 64
    assert model.model[6].bn.eps == 1e-3  # all BNs get the YOLO eps/momentum
    out = model(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape[2:4]) for o in out] == [(8, 8), (4, 4), (2, 2)]


def test_registered_attention_modules_build() -> None:
    """Any registered, size-independent attention module can be inserted as a row."""
    usable = [i for i in registry.list_attention() if not i.size_dependent]
    preferred = [i for i in usable if i.key in ("se", "cbam", "simam")]
    infos = preferred or usable[:3]
    assert infos, "the attention registry is empty"
    for info in infos:
        cfg = copy.deepcopy(TINY_V7)
        cfg["head"].insert(0, [-1, 1, info.key.upper(), []])
        cfg["head"][1:] = [
            [-1, 1, "SP", [5]],
            [[-1, -2], 1, "Concat", [1]],
            [3, 1, "RepConv", [16, 3, 1]],
            [5, 1, "RepConv", [32, 3, 1]],
            [10, 1, "RepConv", [64, 3, 1]],
            [[11, 12, 13], 1, "IDetect", ["nc", "anchors"]],
        ]
        model = build_model(cfg)
        assert model.model[8].type == info.key
        assert model.model[8].np == info.params(32)
        assert model.eval()(torch.rand(1, 3, 64, 64))[0].shape == (1, 3 * (64 + 16 + 4), 8)


def test_info_and_profile_meta() -> None:
    m = build_model("yolov5s", device="meta")
    info = m.info(imgsz=640)
    assert info["params"] == 7_235_389 and info["rows"] == 25 and round(info["gflops"], 3) == 16.434
    prof = profile(m, imgsz=640)
    assert len(prof["layers"]) == 25 and round(prof["gflops"], 2) == 16.43
    assert prof["layers"][24]["shape"] == [1, 25200, 85]
    assert prof["layers"][0]["shape"] == [1, 32, 320, 320]
    assert sum(r["params"] for r in prof["layers"]) == prof["params"]
    assert m.training  # profile restores the mode
