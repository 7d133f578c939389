"""The command line: every subcommand's main path and its error messages."""

from __future__ import annotations

import json

import pytest

from yoloattn.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("compare", "train", "val", "predict", "info", "modules", "data", "convert"):
        assert cmd in out


def test_modules_formats(capsys):
    assert main(["modules"]) == 0
    out = capsys.readouterr().out
    assert "cbam" in out and "Convolutional Block Attention Module" in out
    assert main(["modules", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) >= 40
    se = next(r for r in rows if r["key"] == "se")
    assert se["params@256"] == 8464
    assert main(["modules", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("key,category,paper")


def test_train_val_predict_round_trip(tiny_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert (
        main(
            [
                "train",
                "--model",
                "yolov5n",
                "--data",
                str(tiny_data),
                "--epochs",
                "1",
                "--imgsz",
                "64",
                "--batch",
                "4",
                "--workers",
                "0",
                "--quiet",
                "--project",
                str(runs / "train"),
                "--cache-dir",
                str(tmp_path / "c"),
                "--set",
                "mosaic=0,lr0=0.02",
                "--cache",
            ]
        )
        == 0
    )
    run = runs / "train" / "exp"
    assert "mosaic: 0.0" in (run / "args.yaml").read_text()
    assert "cache: ram" in (run / "args.yaml").read_text()
    capsys.readouterr()
    assert main(["info", str(run), "--runs", "0", "--imgsz", "64", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights"].endswith("best.safetensors") and info["nc"] == 2 and len(info["anchors"]) == 3
    assert main(["info", str(run), "--nc", "3"]) == 1
    assert "carries its own architecture" in capsys.readouterr().err
    capsys.readouterr()
    # --resume without a folder finds the newest run under --project (this one has finished)
    assert main(["train", "--resume", "--project", str(runs / "train"), "--quiet", "--workers", "0"]) == 1
    out = capsys.readouterr()
    assert f"resuming {run}" in out.out and "already finished all 1 epochs" in out.err
    assert (
        main(
            [
                "val",
                "--weights",
                str(run),
                "--data",
                str(tiny_data),
                "--imgsz",
                "64",
                "--project",
                str(runs / "val"),
                "--samples",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "mAP50-95" in out and "COCO-standard" in out and "Speed per image" in out
    val = runs / "val" / "exp"
    for f in ("metrics.json", "predictions.json", "confusion_matrix.png", "val_sample0_pred_vs_true.jpg"):
        assert (val / f).is_file(), f
    m = json.loads((val / "metrics.json").read_text())
    assert m["metrics"]["images"] == 4 and "coco_ap" in m["metrics"]
    images = tiny_data.parent / "images" / "val"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    rc = main(
        [
            "predict",
            "--weights",
            str(run / "weights" / "last.safetensors"),
            "--source",
            str(images),
            str(bad),
            str(tmp_path / "missing"),
            "--imgsz",
            "64",
            "--conf",
            "0.0001",
            "--save-txt",
            "--save-json",
            "--project",
            str(runs / "predict"),
        ]
    )
    assert rc == 0
    cap = capsys.readouterr()
    assert "does not exist" in cap.err and "cannot read image" in cap.err
    assert "4 image(s) annotated, 1 skipped" in cap.out
    pred = runs / "predict" / "exp"
    assert len(list(pred.glob("*.jpg"))) == 4 and (pred / "predictions.json").is_file()
    assert len(list((pred / "labels").glob("*.txt"))) == 4


def test_errors_are_reported_without_traceback(tmp_path, capsys):
    assert main(["train", "--model", "yolov5n"]) == 1
    assert "--data is required" in capsys.readouterr().err
    assert main(["train", "--model", "yolov9", "--data", str(tmp_path / "x.yaml")]) == 1
    assert "error" in capsys.readouterr().err
    assert main(["val", "--weights", str(tmp_path / "nope"), "--data", "x.yaml"]) == 1
    assert "weights not found" in capsys.readouterr().err
    assert main(["train", "--data", "d.yaml", "--set", "lr0"]) == 1
    assert "key=value" in capsys.readouterr().err
    assert main(["train", "--resume", "--project", str(tmp_path / "empty")]) == 1
    assert "no run with a checkpoint under" in capsys.readouterr().err
