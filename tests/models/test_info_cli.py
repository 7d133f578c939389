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
