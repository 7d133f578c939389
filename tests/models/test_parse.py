"""Config loading and row parsing: resolved args per the spec tables, and error messages."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from yoloattn.attention import registry
from yoloattn.attention.registry import AttentionInfo
from yoloattn.models.block_table import make_divisible, parse_activation
from yoloattn.models.config import (
    SHIPPED,
    ConfigError,
    backbone_length,
    detect_index,
    dump_config,
    load_config,
)
from yoloattn.models.parse import parse_model, resolve_rows

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]

# Spec section 10.1: "Resolved constructor args after parsing (yolov5s)".
V5S_RESOLVED = [
    [3, 32, 6, 2, 2],
    [32, 64, 3, 2],
    [64, 64, 1],
    [64, 128, 3, 2],
    [128, 128, 2],
    [128, 256, 3, 2],
    [256, 256, 3],
    [256, 512, 3, 2],
    [512, 512, 1],
    [512, 512, 5],
    [512, 256, 1, 1],
    [None, 2, "nearest"],
    [1],
    [512, 256, 1, False],
    [256, 128, 1, 1],
    [None, 2, "nearest"],
    [1],
    [256, 128, 1, False],
    [128, 128, 3, 2],
    [1],
    [256, 256, 1, False],
    [256, 256, 3, 2],
    [1],
    [512, 512, 1, False],
    [80, ANCHORS, [128, 256, 512]],
]
# Spec table 10.1, c_out of the C3 rows 2/4/6/8 and their repeats per model.
V5_C3_ROWS = {
    "yolov5n": ([32, 64, 128, 256], [1, 2, 3, 1]),
    "yolov5s": ([64, 128, 256, 512], [1, 2, 3, 1]),
    "yolov5m": ([96, 192, 384, 768], [2, 4, 6, 2]),
    "yolov5l": ([128, 256, 512, 1024], [3, 6, 9, 3]),
    "yolov5x": ([160, 320, 640, 1280], [4, 8, 12, 4]),
}


class _Gate(nn.Module):
    """Test-only attention module with a channel constraint."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        if channels % reduction:
            raise ValueError(f"gate: channels={channels} must be divisible by reduction={reduction}")
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> str:
    registry._ensure_loaded()
    info = AttentionInfo(
        key="testgate",
        cls=_Gate,
        paper="test",
        venue="test",
        year=2024,
        category="channel",
        reference="none",
        params_fn=lambda c, reduction=4: c * c + c,
        defaults={"reduction": 4},
    )
    monkeypatch.setitem(registry._REGISTRY, "testgate", info)
    return "testgate"


def _tiny(rows_head: list | None = None, **top: object) -> dict:
    cfg = {
        "nc": 2,
        "depth_multiple": 1.0,
        "width_multiple": 1.0,
        "anchors": ANCHORS,
        "backbone": [
            [-1, 1, "Conv", [8, 3, 2]],  # 0 /2
            [-1, 1, "Conv", [16, 3, 2]],  # 1 /4
            [-1, 1, "Conv", [16, 3, 2]],  # 2 /8
            [-1, 1, "Conv", [32, 3, 2]],  # 3 /16
            [-1, 1, "Conv", [32, 3, 2]],  # 4 /32
        ],
        "head": rows_head if rows_head is not None else [[[2, 3, 4], 1, "Detect", ["nc", "anchors"]]],
    }
    cfg.update(top)
    return cfg


def test_load_config_forms(tmp_path: Path) -> None:
    a = load_config("yolov5s")
    assert a["width_multiple"] == 0.5 and len(a["backbone"]) == 10 and len(a["head"]) == 15
    assert load_config("yolov5s.yaml") == a
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(a))
    assert load_config(p) == a and load_config(str(p)) == a
    b = load_config(a)
    b["backbone"][0][3][0] = 1
    assert a["backbone"][0][3][0] == 64  # deep copy
    assert load_config({"x": (1, 2)})["x"] == [1, 2]  # tuples become lists (YAML-dumpable)
    for name in SHIPPED:
        expected = {"yolov7-tiny": 77, "yolov7": 105, "yolov7x": 121}.get(name, 24)
        if name.startswith(("yolov8", "yolo11")):
            expected = 22 if name.startswith("yolov8") else 23
        assert detect_index(load_config(name)) == expected
    assert backbone_length(load_config("yolov7")) == 51


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean: yolov5s"):
        load_config("yolov5ss")
    bad = tmp_path / "bad.yaml"
    bad.write_text("!!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="invalid YAML"):  # safe_load refuses python tags
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_yolov5s_resolved_args_match_spec() -> None:
    rows = resolve_rows(load_config("yolov5s"))
    assert [r.args for r in rows] == V5S_RESOLVED
    assert [r.name for r in rows][11] == "nn.Upsample"
    assert [r.stride for r in rows[:10]] == [2, 4, 4, 8, 8, 16, 16, 32, 32, 32]
    assert rows[24].head_strides == [8, 16, 32]


@pytest.mark.parametrize("name", list(V5_C3_ROWS))
def test_yolov5_scaling(name: str) -> None:
    rows = resolve_rows(load_config(name))
    c2, reps = V5_C3_ROWS[name]
    assert [rows[i].c2 for i in (2, 4, 6, 8)] == c2
    assert [rows[i].repeats for i in (2, 4, 6, 8)] == reps
    assert [rows[i].args[2] for i in (2, 4, 6, 8)] == reps  # n inserted at position 2
    assert all(rows[i].number == 1 for i in (2, 4, 6, 8))


def test_yolov7_rows() -> None:
    rows = resolve_rows(load_config("yolov7"))
    assert rows[10].c2 == 256 and rows[10].c1 == [64, 64, 64, 64]
    assert rows[51].args == [1024, 512, 1]  # SPPCSPC with n inserted
    assert rows[102].args == [128, 256, 3, 1] and rows[102].name == "RepConv"
    assert [rows[i].stride for i in (12, 25, 38, 53, 65, 76, 89)] == [8, 16, 32, 16, 8, 16, 32]
    assert rows[105].args[2] == [256, 512, 1024]
    tiny = resolve_rows(load_config("yolov7-tiny"))
    assert str(tiny[0].args[-1]) == "nn.LeakyReLU(0.1)"
    assert tiny[31].args == [5] and tiny[34].c1 == [256, 256, 256, 256]


def test_save_list_and_layer_attributes() -> None:
    layers, save, _ = parse_model(load_config("yolov5s"))
    assert save == [4, 6, 10, 14, 17, 20, 23]
    m = layers[12]
    assert (m.i, m.f, m.type, m.np) == (12, [-1, 6], "Concat", 0)
    assert layers[13].np == 361_984 and layers[24].type == "Detect"


def test_make_divisible() -> None:
    assert make_divisible(64 * 0.25, 8) == 16
    assert make_divisible(1024 * 0.75, 8) == 768
    assert make_divisible(20, 8) == 24


def test_activation_parsing() -> None:
    spec = parse_activation("nn.LeakyReLU(0.1)")
    assert spec is not None and spec.build().negative_slope == 0.1
    assert parse_activation("nn.SiLU()").build().__class__ is nn.SiLU
    assert parse_activation("torch.nn.ReLU(inplace=True)").build().inplace is True
    assert parse_activation("nearest") is None
    with pytest.raises(ValueError, match="unsupported activation"):
        parse_activation("nn.Linear(3, 4)")
    with pytest.raises(ValueError, match="not a number"):
        parse_activation("nn.LeakyReLU(__import__('os'))")


def test_yaml_activation_key_applies_to_all_default_convs() -> None:
    cfg = load_config("yolov5n")
    cfg["activation"] = "nn.ReLU()"
    layers, _, _ = parse_model(cfg)
    acts = {type(m.act) for m in layers.modules() if hasattr(m, "conv") and hasattr(m, "act")}
    assert acts == {nn.ReLU}
    cfg["activation"] = "relu"
    with pytest.raises(ConfigError, match="activation"):
        parse_model(cfg)


def test_strings_are_never_executed() -> None:
    cfg = _tiny()
    cfg["backbone"][0] = [-1, 1, "Conv", [8, 3, 2, None, 1, "__import__('os').getcwd()"]]
    rows = resolve_rows(cfg)
    assert rows[0].args[-1] == "__import__('os').getcwd()"  # an inert string, as upstream's fallback


def test_attention_rows(gate: str) -> None:
    head = [
        [-1, 1, "TestGate", []],  # 5, case-insensitive lookup
        [3, 1, "testgate", {"reduction": 8}],  # 6
        [[2, 6, 5], 1, "Detect", ["nc", "anchors"]],
    ]
    rows = resolve_rows(_tiny(head))
    assert rows[5].name == "testgate" and rows[5].c1 == rows[5].c2 == 32
    assert rows[6].kwargs == {"reduction": 8} and rows[6].stride == 16
    layers, save, _ = parse_model(_tiny(head))
    assert isinstance(layers[5], _Gate) and layers[5].type == "testgate"
    assert layers[5].np == 32 * 32 + 32 and save == [2, 3, 5, 6]
    layers2, _, _ = parse_model(_tiny([[-1, 2, "testgate", []], [[2, 3, 5], 1, "Detect", ["nc", "anchors"]]]))
    assert isinstance(layers2[5], nn.Sequential) and len(layers2[5]) == 2


def _err(cfg: dict, match: str) -> ConfigError:
    with pytest.raises(ConfigError, match=match) as ei:
        parse_model(cfg)
    return ei.value


def test_error_unknown_module_suggests() -> None:
    cfg = _tiny()
    cfg["backbone"][3][2] = "Cnov"
    e = _err(cfg, r"^row 3 \(backbone\[3\]\): unknown module 'Cnov'")
    assert "Did you mean: Conv" in str(e) and e.row == 3 and isinstance(e, ValueError)


def test_error_bad_from() -> None:
    cfg = _tiny()
    cfg["backbone"][2][0] = 4
    _err(cfg, r"row 2 .*'from' index 4 refers to row 4")
    cfg = _tiny()
    cfg["backbone"][1][0] = -3
    _err(cfg, r"row 1 .*'from' index -3")
    cfg = _tiny()
    cfg["backbone"][2][0] = "x"
    _err(cfg, r"row 2 .*'from' must be an int")
    cfg = _tiny()
    cfg["head"][0][0] = 4
    _err(cfg, r"row 5 \(head\[0\]\): Detect takes a list of inputs")


def test_error_argument_count() -> None:
    cfg = _tiny()
    cfg["backbone"][1][3] = [16, 3, 2, None, 1, 1, True, 9, 9]
    _err(cfg, r"row 1 .*Conv does not take these arguments")
    cfg = _tiny()
    cfg["backbone"][1][3] = []
    _err(cfg, r"row 1 .*needs the output channel count")
    cfg = _tiny([[[2, 3], 1, "Detect", ["nc", "anchors"]]])
    _err(cfg, r"row 5 .*2 inputs but 3 anchor levels")
    cfg = _tiny()
    cfg["backbone"][1] = [-1, 1, "Conv"]
    _err(cfg, r"row 1 .*a row is \[from, number, module, args\]")


def test_error_concat_stride_mismatch() -> None:
    cfg = _tiny([[[-1, 2], 1, "Concat", [1]], [[2, 3, 4], 1, "Detect", ["nc", "anchors"]]])
    _err(cfg, r"row 5 .*different strides")


def test_error_attention_rows(gate: str) -> None:
    old = _tiny([[-1, 1, "TestGate", [1024]], [[2, 3, 5], 1, "Detect", ["nc", "anchors"]]])
    e = _err(old, r"row 5 \(head\[0\]\): attention rows take no channel count")
    assert "{reduction: 8}" in str(e) and "(32)" in str(e)
    hyp = _tiny([[-1, 1, "testgate", {"ratio": 2}], [[2, 3, 5], 1, "Detect", ["nc", "anchors"]]])
    _err(hyp, r"row 5 .*unknown hyperparameter\(s\) \['ratio'\]; accepted: \['reduction'\]")
    chans = _tiny([[-1, 1, "testgate", {"reduction": 3}], [[2, 3, 5], 1, "Detect", ["nc", "anchors"]]])
    _err(chans, r"row 5 .*channels=32 must be divisible by reduction=3")


def test_error_top_level() -> None:
    _err({**_tiny(), "nc": 0}, r"^config: 'nc' must be a positive int")
    _err({**_tiny(), "anchors": [[1, 2, 3]]}, r"'anchors' must be")
    _err({**_tiny(), "backbone": None}, r"'backbone' must be a list")


def test_dump_config_round_trip(tmp_path: Path) -> None:
    for name in SHIPPED:
        cfg = load_config(name)
        p = tmp_path / f"{name}.yaml"
        p.write_text(dump_config(cfg))
        assert load_config(p) == cfg
    with_att = copy.deepcopy(cfg)
    with_att["head"].insert(0, [-1, 1, "cbam", {"reduction": 8}])
    assert yaml.safe_load(dump_config(with_att)) == with_att
