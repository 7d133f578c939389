"""YOLOv8 / YOLO11: exact sizes (spec section 4), official key layout, head contract, fuse, FLOPs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from yoloattn.models import build_model, count_flops, load_config, resolve_rows
from yoloattn.models.family import FAMILIES, family_of
from yoloattn.nn import DFLDetect

# shared/spec/yolov8-yolo11.md section 4 (nc=80): params, trainable, fused params, leaf layers
# (fused), and section 3.6: state-dict entries.
EXPECTED = {
    "yolov8n": (3_157_200, 3_157_184, 3_151_904, 129, 72, 355),
    "yolov8s": (11_166_560, 11_166_544, 11_156_544, 129, 72, 355),
    "yolov8m": (25_902_640, 25_902_624, 25_886_080, 169, 92, 475),
    "yolov8l": (43_691_520, 43_691_504, 43_668_288, 209, 112, 595),
    "yolov8x": (68_229_648, 68_229_632, 68_200_608, 209, 112, 595),
    "yolo11n": (2_624_080, 2_624_064, 2_616_248, 181, 100, 499),
    "yolo11s": (9_458_752, 9_458_736, 9_443_760, 181, 100, 499),
    "yolo11m": (20_114_688, 20_114_672, 20_091_712, 231, 125, 649),
    "yolo11l": (25_372_160, 25_372_144, 25_340_992, 357, 190, 1015),
    "yolo11x": (56_966_176, 56_966_160, 56_919_424, 357, 190, 1015),
}
# spec 1.5, per-layer parameters of the n scales
V8N_LAYERS = [464, 4672, 7360, 18560, 49664, 73984, 197632, 295424, 460288, 164608, 0, 0, 148224, 0, 0]
V8N_LAYERS += [37248, 36992, 0, 123648, 147712, 0, 493056, 897664]
Y11N_LAYERS = [464, 4672, 6640, 36992, 26080, 147712, 87040, 295424, 346112, 164608, 249728, 0, 0]
Y11N_LAYERS += [111296, 0, 0, 32096, 36992, 0, 86720, 147712, 0, 378880, 464912]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _n(model: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def _leaves(model: nn.Module) -> int:
    """Leaf modules as the official summary counts them: the official Conv blocks share one SiLU
    instance (``model.modules()`` lists it once); ours have one each."""
    leaves = [m for m in model.modules() if not list(m.children())]
    silu = sum(isinstance(m, nn.SiLU) for m in leaves)
    return len(leaves) - silu + (1 if silu else 0)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_exact_sizes_unfused_and_fused(name: str) -> None:
    params, trainable, fused, leaves, leaves_fused, keys = EXPECTED[name]
    model = build_model(name, nc=80, device="meta")
    assert _n(model) == params
    assert _n(model, trainable=True) == trainable  # the 16 DFL weights are frozen
    assert len(model.state_dict()) == keys
    assert _leaves(model) == leaves
    model.fuse()
    assert _n(model) == fused
    assert _leaves(model) == leaves_fused
    assert model.is_fused


@pytest.mark.parametrize(("name", "layers"), [("yolov8n", V8N_LAYERS), ("yolo11n", Y11N_LAYERS)])
def test_per_layer_parameters_of_the_n_scales(name: str, layers: list[int]) -> None:
    model = build_model(name, nc=80, device="meta")
    assert [layer.np for layer in model.model] == layers


def test_resolved_args_and_scale_rules() -> None:
    v8m = resolve_rows(load_config("yolov8m"))
    assert v8m[8].args == [576, 576, 2, True]  # max_channels 768 * 0.75 = 576
    assert v8m[12].args == [960, 384, 2]
    y11n, y11m = resolve_rows(load_config("yolo11n")), resolve_rows(load_config("yolo11m"))
    assert y11n[2].args == [32, 64, 1, False, 0.25] and y11n[13].args == [384, 128, 1, False]
    assert y11m[2].args == [128, 256, 1, True, 0.25]  # c3k forced True on m/l/x
    assert y11m[13].args == [1024, 512, 1, True]
    assert y11n[-1].args == [80, 16, None, [64, 128, 256]] and y11n[-1].kwargs == {"legacy": False}
    assert resolve_rows(load_config("yolov8n"))[-1].kwargs == {"legacy": True}


def _conv(p: str) -> list[str]:
    return [f"{p}.conv.weight"] + [
        f"{p}.bn.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]


def _c2f(p: str, n: int, c3k: bool = False) -> list[str]:
    out = _conv(f"{p}.cv1") + _conv(f"{p}.cv2")
    for j in range(n):
        if c3k:
            out += _conv(f"{p}.m.{j}.cv1") + _conv(f"{p}.m.{j}.cv2") + _conv(f"{p}.m.{j}.cv3")
            for k in range(2):
                out += _conv(f"{p}.m.{j}.m.{k}.cv1") + _conv(f"{p}.m.{j}.m.{k}.cv2")
        else:
            out += _conv(f"{p}.m.{j}.cv1") + _conv(f"{p}.m.{j}.cv2")
    return out


def _detect(p: str, legacy: bool) -> list[str]:
    out: list[str] = []
    for i in range(3):
        out += (
            _conv(f"{p}.cv2.{i}.0")
            + _conv(f"{p}.cv2.{i}.1")
            + [f"{p}.cv2.{i}.2.weight", f"{p}.cv2.{i}.2.bias"]
        )
        if legacy:
            out += _conv(f"{p}.cv3.{i}.0") + _conv(f"{p}.cv3.{i}.1")
        else:
            for a in range(2):
                out += _conv(f"{p}.cv3.{i}.{a}.0") + _conv(f"{p}.cv3.{i}.{a}.1")
        out += [f"{p}.cv3.{i}.2.weight", f"{p}.cv3.{i}.2.bias"]
    return out + [f"{p}.dfl.conv.weight"]


def _spec_keys_v8n() -> list[str]:
    """The yolov8n state-dict keys written from spec sections 1.3, 2 and 3.6."""
    keys: list[str] = []
    c2f_n = {2: 1, 4: 2, 6: 2, 8: 1, 12: 1, 15: 1, 18: 1, 21: 1}
    for i in range(22):
        if i in (0, 1, 3, 5, 7, 16, 19):
            keys += _conv(f"model.{i}")
        elif i in c2f_n:
            keys += _c2f(f"model.{i}", c2f_n[i])
        elif i == 9:
            keys += _conv("model.9.cv1") + _conv("model.9.cv2")
    return keys + _detect("model.22", legacy=True)


def _spec_keys_11n() -> list[str]:
    keys: list[str] = []
    c3k2 = {2: False, 4: False, 6: True, 8: True, 13: False, 16: False, 19: False, 22: True}
    for i in range(23):
        if i in (0, 1, 3, 5, 7, 17, 20):
            keys += _conv(f"model.{i}")
        elif i in c3k2:
            keys += _c2f(f"model.{i}", 1, c3k2[i])
        elif i == 9:
            keys += _conv("model.9.cv1") + _conv("model.9.cv2")
        elif i == 10:
            keys += _conv("model.10.cv1") + _conv("model.10.cv2")
            for part in ("attn.qkv", "attn.proj", "attn.pe", "ffn.0", "ffn.1"):
                keys += _conv(f"model.10.m.0.{part}")
    return keys + _detect("model.23", legacy=False)


@pytest.mark.parametrize(("name", "spec_keys"), [("yolov8n", _spec_keys_v8n), ("yolo11n", _spec_keys_11n)])
def test_official_key_layout_loads_strict(name: str, spec_keys) -> None:
    keys = spec_keys()
    model = build_model(name, nc=80)
    own = model.state_dict()
    assert sorted(own) == sorted(keys)
    torch.manual_seed(1)
    state = {k: (torch.randn(v.shape) if v.is_floating_point() else v.clone()) for k, v in own.items()}
    model.load_state_dict(state, strict=True)
    torch.testing.assert_close(
        model.state_dict()["model.2.cv1.conv.weight"], state["model.2.cv1.conv.weight"]
    )


def test_spec_example_shapes() -> None:
    sd = build_model("yolo11n", nc=80, device="meta").state_dict()
    shapes = {
        "model.2.cv1.conv.weight": (32, 32, 1, 1),
        "model.2.cv2.conv.weight": (64, 48, 1, 1),
        "model.2.m.0.cv1.conv.weight": (8, 16, 3, 3),
        "model.2.m.0.cv2.conv.weight": (16, 8, 3, 3),
        "model.6.m.0.cv1.conv.weight": (32, 64, 1, 1),
        "model.6.m.0.cv3.conv.weight": (64, 64, 1, 1),
        "model.6.m.0.m.0.cv1.conv.weight": (32, 32, 3, 3),
        "model.10.m.0.attn.qkv.conv.weight": (256, 128, 1, 1),
        "model.10.m.0.attn.pe.conv.weight": (128, 1, 3, 3),
        "model.10.m.0.ffn.0.conv.weight": (256, 128, 1, 1),
        "model.10.m.0.ffn.1.conv.weight": (128, 256, 1, 1),
        "model.23.cv3.0.0.0.conv.weight": (64, 1, 3, 3),
        "model.23.cv3.0.0.1.conv.weight": (80, 64, 1, 1),
        "model.23.cv3.0.1.0.conv.weight": (80, 1, 3, 3),
        "model.23.dfl.conv.weight": (1, 16, 1, 1),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    v8 = build_model("yolov8n", nc=80, device="meta").state_dict()
    assert tuple(v8["model.22.cv3.0.0.conv.weight"].shape) == (80, 64, 3, 3)


@pytest.fixture(scope="module")
def v8n():
    torch.manual_seed(0)
    return build_model("yolov8n", nc=3)


@pytest.fixture(scope="module")
def y11n():
    torch.manual_seed(0)
    return build_model("yolo11n", nc=3)


@pytest.mark.parametrize("fixture", ["v8n", "y11n"])
def test_head_contract_and_bias_init(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    head = model.head
    assert isinstance(head, DFLDetect) and model.model[-1] is head
    assert (head.nc, head.reg_max, head.no, head.nl) == (3, 16, 67, 3)
    assert head.stride.tolist() == [8.0, 16.0, 32.0] and model.stride.tolist() == [8.0, 16.0, 32.0]
    assert "stride" not in "".join(model.state_dict())
    assert head.legacy == (fixture == "v8n")
    assert torch.equal(head.dfl.conv.weight.flatten(), torch.arange(16.0))
    assert not head.dfl.conv.weight.requires_grad
    for i, s in enumerate((8, 16, 32)):
        assert torch.all(head.cv2[i][-1].bias == 2.0)
        torch.testing.assert_close(head.cv3[i][-1].bias, torch.full((3,), math.log(5 / 3 / (640 / s) ** 2)))
    # fresh BN buffers: the stride probe ran in eval mode (spec 3.3)
    bn = model.model[0].bn
    assert int(bn.num_batches_tracked) == 0 and torch.all(bn.running_var == 1)
    assert bn.eps == 1e-3 and bn.momentum == 0.03


@pytest.mark.parametrize("fixture", ["v8n", "y11n"])
def test_forward_train_and_eval(fixture: str, request: pytest.FixtureRequest) -> None:
    model = copy.deepcopy(request.getfixturevalue(fixture))
    x = torch.rand(2, 3, 64, 96)
    model.train()
    maps = model(x)
    assert [tuple(m.shape) for m in maps] == [(2, 67, 8, 12), (2, 67, 4, 6), (2, 67, 2, 3)]
    model.eval()
    with torch.no_grad():
        y, raw = model(x)
    assert tuple(y.shape) == (2, 7, 96 + 24 + 6) and len(raw) == 3
    assert 0 <= float(y[:, 4:].min()) and float(y[:, 4:].max()) <= 1
    # zero box logits: uniform bins, every side 7.5 cells -> a 15-stride box centred on its cell
    head = model.head
    with torch.no_grad():
        zero = [torch.cat((torch.zeros(1, 64, *m.shape[-2:]), m[:1, 64:]), 1) for m in raw]
        dec = head.decode(zero)
    assert torch.allclose(dec[0, 0, :3], torch.tensor([4.0, 12.0, 20.0]))  # cx of row 0, P3
    assert torch.allclose(dec[0, 1, 12], torch.tensor(12.0))  # cy of the second P3 row
    assert torch.allclose(dec[0, 2, :96], torch.full((96,), 120.0))
    assert torch.allclose(dec[0, 3, 96:120], torch.full((24,), 240.0))
    assert torch.allclose(dec[0, 2, 120:], torch.full((6,), 480.0))


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)


@pytest.mark.parametrize("fixture", ["v8n", "y11n"])
def test_fuse_keeps_eval_outputs(fixture: str, request: pytest.FixtureRequest) -> None:
    model = copy.deepcopy(request.getfixturevalue(fixture))
    _randomize_bn(model)
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref, ref_raw = model(x)
        model.fuse()
        out, raw = model(x)
    assert model.is_fused and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for a, b in zip(raw, ref_raw):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-3)
    assert sum(layer.np for layer in model.model) == _n(model)


# spec section 4: THOP GFLOPs of the *fused* models at 640 (FlopCounterMode gives these unfused too)
FUSED_THOP_GFLOPS = {
    "yolov8n": 8.7440,
    "yolov8s": 28.6026,
    "yolov8m": 78.9367,
    "yolov8l": 165.1485,
    "yolov8x": 257.8043,
    "yolo11n": 6.5425,
    "yolo11s": 21.5898,
    "yolo11m": 68.1044,
    "yolo11l": 87.1560,
    "yolo11x": 195.2724,
}


def test_flops_compare_with_the_spec() -> None:
    """FlopCounterMode counts conv/matmul MACs x 2 only (no BN, no bias adds): it equals THOP's
    figure of the fused model, for the unfused model as well (spec section 4)."""
    x = torch.zeros(1, 3, 640, 640, device="meta")
    for name, fused_thop in FUSED_THOP_GFLOPS.items():
        model = build_model(name, nc=80, device="meta")
        g = count_flops(model, x)
        assert abs(g - fused_thop) < 1e-4, (name, g)
        assert abs(count_flops(model.fuse(), x) - g) < 1e-9


def test_family_table() -> None:
    assert set(FAMILIES) == {"v5", "v7", "v8", "11"}
    for key, fam in FAMILIES.items():
        for name in fam.shipped:
            assert family_of(load_config(name)) == key
    assert build_model("yolov8n", nc=2, device="meta").family == "v8"
    assert build_model("yolo11n", nc=2, device="meta").family == "11"
    assert build_model("yolov5n", nc=2, device="meta").family == "v5"
    assert build_model("yolo11n", nc=2, attention="cbam@neck", device="meta").family == "11"


def test_scale_from_file_name_and_errors(tmp_path) -> None:
    import yaml

    from yoloattn.models import ConfigError

    cfg = load_config("yolov8n")
    assert cfg["scale"] == "n" and load_config("yolov8x")["scale"] == "x"
    plain = {k: v for k, v in cfg.items() if k != "scale"}
    p = tmp_path / "yolov8s-custom.yaml"
    p.write_text(yaml.safe_dump(plain))
    assert load_config(p)["scale"] == "s"
    with pytest.raises(ConfigError, match="'scale' 'q' is not one of"):
        resolve_rows({**cfg, "scale": "q"})
    with pytest.raises(ConfigError, match="'scales' must map"):
        resolve_rows({**cfg, "scales": {"n": [0.33, 0.25]}})
