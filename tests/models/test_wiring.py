"""The miswire check: a row inserted by hand without renumbering fails with a message that says
why and how to fix it; every shipped config and every preset placement passes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from yoloattn.models import SHIPPED, Model, build_model, load_config
from yoloattn.models.config import ConfigError
from yoloattn.models.parse import resolve_rows
from yoloattn.models.placement import place_attention
from yoloattn.models.wiring import WiringError


def _hand_inserted() -> dict:
    """yolov5n with an attention row inserted after row 8 and nothing renumbered."""
    cfg = load_config("yolov5n")
    cfg["backbone"].insert(9, [-1, 1, "cbam", {"reduction": 8}])
    return cfg


def test_a_row_inserted_by_hand_without_renumbering_fails() -> None:
    with pytest.raises(WiringError) as ei:
        build_model(_hand_inserted())
    msg = str(ei.value)
    assert isinstance(ei.value, ConfigError) and "\n" not in msg
    # names the rows: the last C3 is unused, the Detect row reads the three Concat rows
    assert "row 24 (C3) is read by no other row" in msg
    assert "Detect row 25 reads rows 17 (Concat, stride 8), 20 (Concat, stride 16), 23 (Concat" in msg
    assert "rows 17, 20, 23 (Concat) only route features" in msg
    # says why, and how to fix it
    assert "indices after an inserted row shift by one" in msg
    assert "`attention:` key" in msg and "yoloattn info <model> --attention ... --save" in msg
    assert "allow_unused_rows: true" in msg


def test_the_same_row_renumbered_builds() -> None:
    cfg, _ = place_attention("yolov5n", "cbam(reduction=8)@8")
    rows = resolve_rows(cfg)
    assert rows[9].name == "cbam" and rows[-1].from_ == [18, 21, 24]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_and_preset_placement_passes(name: str) -> None:
    resolve_rows(load_config(name))
    for spec in (
        "cbam@backbone",
        "se@neck",
        "eca@all",
        "gc(ratio=0.25)@all,cbam@neck",
        "se@backbone,ca@neck",
    ):
        cfg, _ = place_attention(name, spec)
        resolve_rows(cfg)


def test_opt_out_key_and_argument() -> None:
    cfg = _hand_inserted()
    model = build_model(cfg, allow_unused_rows=True, device="meta")
    assert model.yaml["allow_unused_rows"] is True and len(model.model) == 26
    assert len(Model(model.yaml, device="meta").model) == 26  # model.yaml rebuilds it
    cfg["allow_unused_rows"] = True
    assert len(build_model(cfg, device="meta").model) == 26
    cfg["allow_unused_rows"] = "yes"
    with pytest.raises(ConfigError, match="'allow_unused_rows' must be true or false"):
        build_model(cfg, device="meta")


def test_detect_inputs_must_be_feature_rows_at_increasing_strides() -> None:
    swapped = load_config("yolov5n")
    swapped["head"][-1][0] = [20, 17, 23]
    with pytest.raises(
        WiringError, match=r"Detect row 24 reads rows 20 \(C3, stride 16\), 17 .*strictly increase"
    ):
        resolve_rows(swapped)
    upsampled = load_config("yolov5n")
    upsampled["head"][-1][0] = [15, 20, 23]  # row 15 is nn.Upsample (stride 8); row 17 is still read
    with pytest.raises(WiringError, match=r"row 15 \(nn.Upsample\) only route features") as ei:
        resolve_rows(upsampled)
    assert "read by no other row" not in str(ei.value)


def test_unused_row_in_the_middle() -> None:
    cfg = load_config("yolov5n")
    cfg["backbone"][3] = [-2, 1, "Conv", [128, 3, 2]]  # reads row 1: row 2 (C3) is read by nobody
    with pytest.raises(WiringError, match=r"miswired rows: row 2 \(C3\) is read by no other row"):
        resolve_rows(cfg)
    resolve_rows({**cfg, "allow_unused_rows": True})


def test_trained_weights_of_a_miswired_config_still_load(tmp_path: Path) -> None:
    from yoloattn.models.weights import load_model, save_model

    model = build_model(_hand_inserted(), nc=2, allow_unused_rows=True)
    path = tmp_path / "w.safetensors"
    save_model(model, path)
    side = path.with_suffix(".json")
    data = json.loads(side.read_text())
    data["cfg"].pop("allow_unused_rows")  # as written before the check existed
    side.write_text(json.dumps(data))
    loaded = load_model(path)
    assert len(loaded.model) == 26 and loaded.yaml["allow_unused_rows"] is True
    assert copy.deepcopy(loaded.yaml)["backbone"][9][2] == "cbam"
