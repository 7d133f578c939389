"""The model-level ``attention:`` key: placement written in the YAML itself, renumbered as
``--attention`` is, expanded into a plain config by the build."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from yoloattn.models import Model, build_model, load_config
from yoloattn.models.config import ConfigError, dump_config
from yoloattn.models.parse import resolve_rows
from yoloattn.models.placement import expand_config, insert_mode, place_attention, row_map
from yoloattn.nn.gate import ResidualGate


def _with_key(value: object, name: str = "yolov5n") -> dict:
    cfg = load_config(name)
    cfg["attention"] = value
    return cfg


def _keys_and_shapes(model: Model) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_spec_string_key_builds_what_the_argument_builds() -> None:
    spec = "se@backbone,cbam(reduction=8)@neck"
    by_key = build_model(_with_key(spec), nc=3, device="meta")
    by_arg = build_model("yolov5n", nc=3, attention=spec, device="meta")
    assert "attention" not in by_key.yaml and by_key.yaml == by_arg.yaml
    assert by_key.index_map == by_arg.index_map and by_key.index_map is not None
    assert by_key.index_map[24] == 28 and len(by_key.model) == 29
    assert _keys_and_shapes(by_key) == _keys_and_shapes(by_arg)
    assert by_key.base_yaml == load_config("yolov5n")  # the network the index map starts from
    # the expanded config rebuilds the same network, with nothing left to place
    again = Model(by_key.yaml, device="meta")
    assert again.index_map is None and _keys_and_shapes(again) == _keys_and_shapes(by_key)
    # Model() itself places the key as well
    direct = Model(_with_key(spec), nc=3, device="meta")
    assert direct.yaml == by_key.yaml and direct.index_map == by_key.index_map


def test_list_items_with_after_module_args_and_insert() -> None:
    items = [
        {"after": 8, "module": "SE"},
        {"after": [17, 23], "module": "cbam", "args": {"reduction": 8}, "insert": "identity"},
        "eca@20",
    ]
    model = build_model(_with_key(items), nc=2)
    rows = model.yaml["backbone"] + model.yaml["head"]
    placed = {i: (r[2], r[3]) for i, r in enumerate(rows) if i not in model.index_map.values()}
    assert placed == {
        9: ("se", {}),
        19: ("cbam", {"reduction": 8, "insert": "identity"}),
        23: ("eca", {}),
        27: ("cbam", {"reduction": 8, "insert": "identity"}),
    }
    assert rows[-1][0] == [19, 23, 27]  # the Detect inputs are renumbered
    assert isinstance(model.model[19], ResidualGate) and not isinstance(model.model[9], ResidualGate)
    assert model.state_dict()["model.27.gate"].shape == (1,)
    assert insert_mode(model.yaml) == "mixed" and insert_mode(_with_key(items)) == "mixed"


def test_key_and_argument_are_both_placed_the_config_first() -> None:
    model = build_model(_with_key("se@8"), attention="eca@8,cbam@neck", device="meta")
    assert [r[2] for r in model.yaml["backbone"][9:11]] == ["se", "eca"]  # a chain: key first
    assert model.yaml["backbone"][11][2] == "SPPF"
    assert model.index_map is not None and model.index_map[9] == 11 and model.index_map[24] == 29
    cfg, index_map = place_attention(_with_key("se@8"), "eca@8,cbam@neck")
    assert {**cfg, "ch": 3} == model.yaml and index_map == model.index_map


def test_saved_expanded_yaml_and_yaml_files_with_the_key(tmp_path: Path) -> None:
    src = tmp_path / "v5n-cbam.yaml"
    src.write_text(dump_config(_with_key("cbam@backbone")))
    model = build_model(src, device="meta")
    assert model.yaml_file == "v5n-cbam" and len(model.model) == 26
    out = tmp_path / "expanded.yaml"
    out.write_text(dump_config(model.yaml))
    reloaded = load_config(out)
    assert "attention" not in reloaded and reloaded["backbone"][9] == [-1, 1, "cbam", {}]
    assert _keys_and_shapes(build_model(out, device="meta")) == _keys_and_shapes(model)
    assert [r.name for r in resolve_rows(load_config(src))][9] == "cbam"  # the parser places it too


def test_empty_key_places_nothing() -> None:
    for value in (None, []):
        placed = expand_config(_with_key(value))
        assert placed.index_map is None and "attention" not in placed.cfg
        assert placed.cfg == load_config("yolov5n")


def test_row_map_places_the_key_of_either_config() -> None:
    m = row_map(_with_key("cbam@neck"), build_model("yolov5n", attention="cbam@neck", device="meta").yaml)
    assert m == {i: i for i in range(28)}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("cbma@neck", ["unknown attention module 'cbma'", "cbam"]),
        ("cbam(reductio=8)", ["reductio", "accepted"]),
        ("cbam@25", ["row 25 is out of range"]),
        ("cbam@24", ["row 24 is the Detect head"]),
        ("", ["empty attention spec"]),
        (7, ["spec string", "list of items"]),
        ([{"after": 8}], ["item 0", "needs 'after' and 'module'"]),
        ([{"after": 8, "module": "se", "where": 1}], ["item 0", "unknown field(s) ['where']"]),
        ([{"after": "x", "module": "se"}], ["item 0", "'after' must be"]),
        ([{"after": 8, "module": "se", "args": [8]}], ["item 0", "'args' must be a mapping"]),
        ([{"after": 8, "module": "se", "insert": "maybe"}], ["item 0", "identity or plain"]),
        (["se@8", {"after": 8, "module": "sse"}], ["item 1", "unknown attention module 'sse'"]),
        ([{"after": 40, "module": "se"}], ["row 40 is out of range"]),
    ],
)
def test_errors_are_one_line_naming_the_key(value: object, words: list[str]) -> None:
    with pytest.raises(ConfigError) as ei:
        build_model(_with_key(value), device="meta")
    msg = str(ei.value)
    assert msg.startswith("config: 'attention': ") and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def test_weights_follow_the_index_map_of_the_key() -> None:
    from yoloattn.models.weights import transfer_weights

    torch.manual_seed(0)
    model = build_model(_with_key("cbam@backbone"), nc=2, insert="identity")
    base = build_model(model.base_yaml, nc=2)
    report = transfer_weights(base.state_dict(), model, model.index_map)
    assert not report.unused and not report.skipped
    assert all(k.startswith("model.9.") for k in report.new)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(base.eval()(x)[0], model.eval()(x)[0], atol=1e-6)


def test_model_yaml_stays_plain_lists() -> None:
    """The build's config copy turns tuples into lists, so model.yaml dumps as YAML."""
    cfg = _with_key("se@backbone")
    cfg["anchors"] = tuple(tuple(a) for a in cfg["anchors"])
    cfg["head"][-1] = tuple(cfg["head"][-1])
    model = Model(cfg, device="meta")
    assert isinstance(model.yaml["anchors"][0], list) and isinstance(model.yaml["head"][-1], list)
    assert yaml.safe_load(dump_config(model.yaml)) == model.yaml
