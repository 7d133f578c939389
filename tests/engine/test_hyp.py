"""Tests for the shipped hyperparameter recipes and yoloattn.engine.hyp."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from yoloattn.engine.hyp import (
    HYP_DIR,
    OPTIONAL_KEYS,
    REQUIRED_KEYS,
    default_hyp_for,
    hyp_path,
    list_hyps,
    load_hyp,
    scale_loss_gains,
)

# Spec section 6.1, columns: v5 scratch-low, v5 scratch-high, v7 scratch.tiny, v7 scratch.p5.
SPEC = {
    "lr0": (0.01, 0.01, 0.01, 0.01),
    "lrf": (0.01, 0.1, 0.01, 0.1),
    "momentum": (0.937,) * 4,
    "weight_decay": (0.0005,) * 4,
    "warmup_epochs": (3.0,) * 4,
    "warmup_momentum": (0.8,) * 4,
    "warmup_bias_lr": (0.1,) * 4,
    "box": (0.05,) * 4,
    "cls": (0.5, 0.3, 0.5, 0.3),
    "cls_pw": (1.0,) * 4,
    "obj": (1.0, 0.7, 1.0, 0.7),
    "obj_pw": (1.0,) * 4,
    "iou_t": (0.2,) * 4,
    "anchor_t": (4.0,) * 4,
    "fl_gamma": (0.0,) * 4,
    "hsv_h": (0.015,) * 4,
    "hsv_s": (0.7,) * 4,
    "hsv_v": (0.4,) * 4,
    "degrees": (0.0,) * 4,
    "translate": (0.1, 0.1, 0.1, 0.2),
    "scale": (0.5, 0.9, 0.5, 0.9),
    "shear": (0.0,) * 4,
    "perspective": (0.0,) * 4,
    "flipud": (0.0,) * 4,
    "fliplr": (0.5,) * 4,
    "mosaic": (1.0,) * 4,
    "mixup": (0.0, 0.1, 0.05, 0.15),
    "copy_paste": (0.0, 0.1, 0.0, 0.0),
    "paste_in": (0.0, 0.0, 0.05, 0.15),  # v5 files lack it: default 0
    "loss_ota": (0, 0, 1, 1),  # v5 files lack it: default 0
}
NAMES = ("hyp.scratch-low", "hyp.scratch-high", "hyp.tiny", "hyp.p5")


@pytest.mark.parametrize("column", range(4))
def test_shipped_recipes_equal_spec_table(column: int) -> None:
    hyp = load_hyp(NAMES[column])
    assert set(hyp) == set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)
    for key, values in SPEC.items():
        assert hyp[key] == values[column], key
    assert hyp["label_smoothing"] == 0.0
    assert isinstance(hyp["loss_ota"], int)


def test_shipped_files_are_plain_yaml() -> None:
    files = sorted(p.name for p in HYP_DIR.glob("*.yaml"))
    assert files == ["hyp.p5.yaml", "hyp.scratch-high.yaml", "hyp.scratch-low.yaml", "hyp.tiny.yaml"]
    raw = yaml.safe_load((HYP_DIR / "hyp.scratch-low.yaml").read_text())
    assert "paste_in" not in raw and raw["mosaic"] == 1.0
    assert list_hyps() == sorted(NAMES)


@pytest.mark.parametrize(
    "name", ["hyp.scratch-low", "scratch-low", "hyp.scratch-low.yaml", "SCRATCH-LOW", "scratch-low.yaml"]
)
def test_name_spellings(name: str) -> None:
    assert load_hyp(name) == load_hyp("hyp.scratch-low")


def test_official_v7_spellings() -> None:
    assert load_hyp("hyp.scratch.tiny.yaml") == load_hyp("hyp.tiny")
    assert load_hyp("scratch.p5") == load_hyp("p5")
    assert hyp_path("p5") == HYP_DIR / "hyp.p5.yaml"


def test_load_from_path_and_mapping(tmp_path: Path) -> None:
    base = load_hyp("hyp.scratch-high")
    f = tmp_path / "my.yaml"
    f.write_text(yaml.safe_dump({k: v for k, v in base.items() if k not in OPTIONAL_KEYS}))
    assert load_hyp(f) == base
    assert load_hyp(str(f)) == base
    assert load_hyp(base) == base


def test_overrides_apply_and_parse_text() -> None:
    hyp = load_hyp("scratch-low", {"lr0": 0.02, "mixup": "0.3", "label_smoothing": 0.1, "loss_ota": "1"})
    assert hyp["lr0"] == 0.02 and hyp["mixup"] == 0.3 and hyp["label_smoothing"] == 0.1
    assert hyp["loss_ota"] == 1
    assert load_hyp("scratch-low")["lr0"] == 0.01  # the shipped file is untouched


def test_unknown_override_key_suggests_close_match() -> None:
    with pytest.raises(
        ValueError, match=r"(?s)unknown hyperparameter key.*'mixpu'.*did you mean 'mixup'"
    ) as err:
        load_hyp("scratch-low", {"mixpu": 0.2})
    assert "overrides" in str(err.value)
    with pytest.raises(ValueError, match=r"did you mean 'weight_decay'"):
        load_hyp("scratch-low", {"weight_decy": 0.001})


def test_unknown_key_in_file_and_missing_keys(tmp_path: Path) -> None:
    base = load_hyp("scratch-low")
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump({**base, "anchor_thr": 4.0}))
    with pytest.raises(ValueError, match=r"(?s)'anchor_thr'.*did you mean 'anchor_t'"):
        load_hyp(f)
    f.write_text(yaml.safe_dump({"lr0": 0.01}))
    with pytest.raises(ValueError, match="lacks required key"):
        load_hyp(f)
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_hyp(f)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"mixup": 1.5}, "probability"),
        ({"lr0": -0.1}, ">= 0"),
        ({"lr0": 0}, "> 0"),
        ({"anchor_t": 1.0}, "anchor_t"),
        ({"loss_ota": 2}, "0 or 1"),
        ({"momentum": 1.0}, r"\[0, 1\)"),
        ({"box": "abc"}, "must be a number"),
        ({"box": True}, "must be a number"),
        ({"box": float("nan")}, "finite"),
    ],
)
def test_value_validation(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_hyp("scratch-low", override)


def test_unknown_recipe_name() -> None:
    with pytest.raises(ValueError, match="neither a shipped recipe"):
        load_hyp("scratch-medium")
    with pytest.raises(ValueError, match="does not exist"):
        load_hyp(Path("/nonexistent/hyp.yaml"))


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ("yolov5n", "hyp.scratch-low"),
        ("yolov5s.yaml", "hyp.scratch-low"),
        ("runs/exp/yolov5s-cbam.yaml", "hyp.scratch-low"),
        ("yolov5m", "hyp.scratch-high"),
        ("yolov5l_se", "hyp.scratch-high"),
        ("yolov5x6", "hyp.scratch-high"),
        ("yolov7-tiny", "hyp.tiny"),
        ("yolov7-tiny-eca.yaml", "hyp.tiny"),
        ("yolov7", "hyp.p5"),
        ("yolov7x.yaml", "hyp.p5"),
        ("yolov7-cbam", "hyp.p5"),
    ],
)
def test_default_hyp_for(cfg: str, expected: str) -> None:
    assert default_hyp_for(cfg) == expected
    load_hyp(expected)


def test_default_hyp_for_unknown() -> None:
    with pytest.raises(ValueError, match="cannot infer"):
        default_hyp_for("resnet50.yaml")
    with pytest.raises(ValueError, match="P6"):
        default_hyp_for("yolov7-w6")


def test_scale_loss_gains() -> None:
    hyp = load_hyp("scratch-low")
    scaled = scale_loss_gains(hyp, nc=20, nl=3, imgsz=320)
    assert scaled["box"] == pytest.approx(0.05)
    assert scaled["cls"] == pytest.approx(0.5 * 20 / 80)
    assert scaled["obj"] == pytest.approx(1.0 * 0.25)
    scaled4 = scale_loss_gains(hyp, nc=80, nl=4, imgsz=640)
    assert scaled4["box"] == pytest.approx(0.05 * 0.75)
    assert hyp["cls"] == 0.5  # input untouched
