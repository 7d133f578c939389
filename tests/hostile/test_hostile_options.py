"""Hostile options and model YAMLs: refused at config time with one line naming the option (or
field), the value and the allowed range, within 60 s and 2 GB, before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_harness import check_refused

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "yoloattn" / "models" / "configs" / "yolov5n.yaml"

# (extra argv, text the one line must hold)
TRAIN_OPTIONS = [
    (["--imgsz", "0"], "--imgsz 0: out of range; allowed: >= 32"),
    (["--patience", "-1"], "--patience -1: out of range; allowed: >= 0"),
    (["--label-smoothing", "2"], "--label-smoothing 2: out of range; allowed: 0 <= x < 1"),
    (["--save-period", "-2"], "--save-period -2: out of range; allowed: >= -1"),
    (["--nbs", "0"], "--nbs 0: out of range; allowed: >= 1"),
    (["--val-interval", "0"], "--val-interval 0: out of range; allowed: >= 1"),
    (["--batch", "0"], "--batch 0: out of range"),
    (["--freeze", "-1"], "--freeze -1: out of range"),
    (["--label-smoothing", "nan"], "--label-smoothing nan: out of range"),
]


@pytest.mark.parametrize(("argv", "says"), TRAIN_OPTIONS, ids=[a[0] for a, _ in TRAIN_OPTIONS])
def test_train_option_out_of_range_is_one_line(runner, tmp_path, argv, says):
    # the dataset does not exist: the option must be refused before it is looked for
    r = runner.run(["train", "--data", "missing.yaml", *argv], cwd=tmp_path)
    assert not check_refused(r, says), r


def test_compare_seeds_zero(runner, tmp_path):
    r = runner.run(["compare", "--data", "missing.yaml", "--seeds", "0"], cwd=tmp_path)
    assert not check_refused(r, "--seeds 0: out of range; allowed: >= 1"), r


def test_save_period_minus_one_means_off_as_officially():
    from yoloattn.engine.train_config import TrainConfig

    assert TrainConfig(save_period=-1).save_period == -1


def test_freeze_999_names_the_range_not_every_row():
    from yoloattn.engine.train_config import freeze_rows

    with pytest.raises(ValueError, match=r"^--freeze 999: out of range; allowed: 0\.\.25 ") as e:
        freeze_rows([999], 25)
    assert len(str(e.value)) < 120
    with pytest.raises(ValueError, match=r"row\(s\) \[25\.\.998\]"):
        freeze_rows([1, *range(25, 999)], 25)


def test_stacked_identical_placements_are_refused(runner, tmp_path):
    for spec in ("cbam@neck,cbam@neck", "se@all,se@neck"):
        r = runner.run(["info", "yolov5n", "--attention", spec, "--runs", "0"], cwd=tmp_path)
        assert not check_refused(r, "placed twice after row 17"), r
    ok = runner.run(["info", "yolov5n", "--attention", "se@neck,cbam@neck", "--runs", "0"], cwd=tmp_path)
    assert ok.rc == 0, ok


def test_exist_ok_never_mixes_two_runs(tmp_path):
    from yoloattn.engine.runs import RunDir

    (tmp_path / "exp" / "weights").mkdir(parents=True)
    (tmp_path / "exp" / "args.yaml").write_text("model: yolov5n\n")
    with pytest.raises(ValueError, match="holds another run .*--resume"):
        RunDir.new(tmp_path, "exp", exist_ok=True)
    (tmp_path / "empty").mkdir()
    assert RunDir.new(tmp_path, "empty", exist_ok=True).root == tmp_path / "empty"


def test_resume_of_a_missing_folder(runner, tmp_path):
    r = runner.run(["train", "--resume", str(tmp_path / "nope")], cwd=tmp_path)
    assert not check_refused(r, f"--resume {tmp_path / 'nope'}: no such run folder"), r


# ----------------------------------------------------------------------------- model YAMLs


def _bomb(levels: int = 9) -> list[str]:
    out = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    out += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return out


YAMLS = {
    "billion-laughs-extra-key": (
        lambda t: t + "".join(f"x{i}: {b}\n" for i, b in enumerate(_bomb())),
        "unknown top-level key(s) ['x0'",
    ),
    "billion-laughs-in-attention": (
        lambda t: t.replace("nc: 80", f"nc: 80\nattention: [{', '.join(_bomb())}]"),
        "once YAML aliases are expanded",
    ),
    "self-alias": (lambda t: t.replace("nc: 80", "nc: 80\nattention: &s [1, *s]"), "nested more than 64"),
    "deep-lists": (
        lambda t: t.replace("nc: 80", "nc: 80\nattention: " + "[" * 3000 + "]" * 3000),
        "nested more than 64",
    ),
    "number-1e9": (
        lambda t: t.replace("[-1, 3, C3, [128]]", "[-1, 1000000000, C3, [128]]"),
        "'number' 1000000000 x depth_multiple",
    ),
    "depth-1e6": (
        lambda t: t.replace("depth_multiple: 0.33", "depth_multiple: 1000000.0"),
        "'depth_multiple'",
    ),
    "nan-width": (lambda t: t.replace("width_multiple: 0.25", "width_multiple: .nan"), "'width_multiple'"),
    "nan-anchor": (lambda t: t.replace("[10, 13,", "[.nan, 13,"), "'anchors' level 0"),
    "negative-anchor": (lambda t: t.replace("[10, 13,", "[-10, 13,"), "'anchors' level 0"),
    "anchor-levels": (
        lambda t: t.replace("  - [10, 13, 16, 30, 33, 23]       # P3/8\n", ""),
        "'anchors' needs one list of w,h pairs per Detect input",
    ),
    "huge-channels": (
        lambda t: t.replace("[-1, 1, Conv, [64, 6, 2, 2]]", "[-1, 1, Conv, [100000000, 6, 2, 2]]"),
        "at most 65536",
    ),
}


@pytest.mark.parametrize("case", list(YAMLS))
def test_hostile_model_yaml_is_one_line(runner, tmp_path, case):
    build, says = YAMLS[case]
    text = SHIPPED.read_text()
    hostile = build(text)
    assert hostile != text, "the case did not change the config"
    (tmp_path / "m.yaml").write_text(hostile)
    r = runner.run(["info", "m.yaml", "--runs", "0"], cwd=tmp_path)
    assert not check_refused(r, says), r
