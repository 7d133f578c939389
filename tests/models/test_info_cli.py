"""``yoloattn info``: table, totals, latency, JSON output, saved YAML round trip, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yoloattn.cli import main
from yoloattn.models import build_model, load_config


def test_info_text_table_and_save(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_yaml = tmp_path / "sub" / "v5n.yaml"
    rc = main(["info", "yolov5n", "--imgsz", "64", "--runs", "2", "--warmup", "1", "--save", str(out_yaml)])
    assert rc == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["#", "from", "n", "module"]
    row9 = next(ln for ln in lines if ln.lstrip().startswith("9 "))
    assert "SPPF" in row9 and "164,608" in row9 and "1x256x2x2" in row9
    assert "1,872,157 parameters" in text and "GFLOPs at 64x64" in text
    assert "median" in text and "over 2 runs" in text
    saved = load_config(out_yaml)
    assert saved == {**load_config("yolov5n"), "ch": 3}
    rebuilt = build_model(out_yaml, device="meta")
    assert sum(p.numel() for p in rebuilt.parameters()) == 1_872_157


def test_info_json_nonsquare_nc_fuse(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "info",
            "yolov7-tiny",
            "--imgsz",
            "64",
            "96",
            "--nc",
            "3",
            "--runs",
            "0",
            "--fuse",
            "--format",
            "json",
        ]
    )
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"] == 78 and data["nc"] == 3 and data["fused"] and data["latency"] is None
    assert data["imgsz"] == [64, 96] and data["stride"] == [8.0, 16.0, 32.0]
    assert data["layers"][77]["shape"] == [1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 8]
    assert data["layers"][0]["shape"] == [1, 32, 32, 48]
    assert data["params"] == sum(r["params"] for r in data["layers"])
    assert data["gflops"] > 0


def test_info_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "yolov5n", "--imgsz", "60", "--runs", "0"]) == 1
    assert "multiples of the max stride 32" in capsys.readouterr().err
    assert main(["info", "yolov5q", "--runs", "0"]) == 1
    assert "Did you mean" in capsys.readouterr().err


def test_info_insertion_mode_gate_and_thread_wording(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    assert (
        main(
            [
                "info",
                "yolov5n",
                "--attention",
                "cbam@neck",
                "--insert",
                "identity",
                "--imgsz",
                "64",
                "--runs",
                "0",
            ]
        )
        == 0
    )
    assert "insertion: identity (3 gated rows)" in capsys.readouterr().out
    assert main(["info", "yolov5n", "--attention", "cbam@neck", "--imgsz", "64", "--runs", "0"]) == 0
    assert "insertion: plain (3 attention rows)" in capsys.readouterr().out  # auto without weights
    argv = ["info", "yolov5n", "--attention", "se@backbone", "--insert", "identity", "--gate", "channel"]
    assert main([*argv, "--imgsz", "64", "--runs", "0", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["insert"], data["attention_rows"], data["gated_rows"], data["gate"]) == (
        "identity",
        1,
        1,
        "channel",
    )
    assert data["layers"][9]["params"] == 256 + 2 * 256 * 16 + 16 + 256  # SE(256, r=16) + its channel gate
    assert main(["info", "yolov5n", "--imgsz", "64", "--runs", "0"]) == 0
    assert "insertion:" not in capsys.readouterr().out  # no attention rows, no mode
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert main(["info", "yolov5n", "--imgsz", "64", "--runs", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "64x64, 1 thread)" in out and "over 1 run (" in out


def test_info_shows_the_insertion_mode_of_trained_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from yoloattn.models.weights import save_model

    model = build_model("yolov5n", nc=2, attention="se@backbone,cbam(insert=plain)@neck", insert="identity")
    weights = tmp_path / "w.safetensors"
    save_model(model, weights)
    assert main(["info", str(weights), "--imgsz", "64", "--runs", "0"]) == 0
    assert "insertion: mixed (1 of 4 attention rows gated)" in capsys.readouterr().out
    assert main(["info", str(weights), "--insert", "plain", "--runs", "0"]) == 1
    err = capsys.readouterr().err
    assert "--insert:" in err and "carries its own architecture" in err


def test_info_attention_key_and_allow_unused_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from yoloattn.models.config import dump_config

    keyed = load_config("yolov5n")
    keyed["attention"] = [{"after": 8, "module": "cbam", "args": {"reduction": 8}}]
    src = tmp_path / "keyed.yaml"
    src.write_text(dump_config(keyed))
    out_yaml = tmp_path / "expanded.yaml"
    assert main(["info", str(src), "--imgsz", "64", "--runs", "0", "--save", str(out_yaml)]) == 0
    assert "keyed.yaml: 26 rows" in capsys.readouterr().out
    saved = load_config(out_yaml)
    assert "attention" not in saved and saved["backbone"][9] == [-1, 1, "cbam", {"reduction": 8}]
    assert saved["head"][-1][0] == [18, 21, 24]

    by_hand = load_config("yolov5n")
    by_hand["backbone"].insert(9, [-1, 1, "cbam", {"reduction": 8}])  # not renumbered
    bad = tmp_path / "by-hand.yaml"
    bad.write_text(dump_config(by_hand))
    assert main(["info", str(bad), "--imgsz", "64", "--runs", "0"]) == 1
    err = capsys.readouterr().err
    assert "miswired rows: row 24 (C3) is read by no other row" in err and "--save" in err
    assert main(["info", str(bad), "--imgsz", "64", "--runs", "0", "--allow-unused-rows"]) == 0
    assert "by-hand.yaml: 26 rows" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "params", "family"), [("yolov8n", 3_157_200, "v8"), ("yolo11n", 2_624_080, "11")]
)
def test_info_anchor_free_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, params: int, family: str
) -> None:
    out_yaml = tmp_path / f"{name}.yaml"
    assert main(["info", name, "--imgsz", "64", "--runs", "0", "--save", str(out_yaml)]) == 0
    text = capsys.readouterr().out
    assert f"{params:,} parameters" in text and "anchor-free head (DFL, reg_max 16): P3  P4  P5" in text
    detect = next(ln for ln in text.splitlines() if " Detect " in ln)
    assert "1x84x84" in detect  # [B, 4 + nc, N]: N = 8*8 + 4*4 + 2*2
    assert load_config(out_yaml)["scale"] == "n"
    assert sum(p.numel() for p in build_model(out_yaml, device="meta").parameters()) == params
    assert main(["info", name, "--imgsz", "64", "--runs", "0", "--fuse", "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["family"] == family and summary["anchors"] is None and summary["fused"]
