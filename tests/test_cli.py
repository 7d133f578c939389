"""The command line: every subcommand's main path and its error messages."""

from __future__ import annotations

import json

import pytest

from yoloattn.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("compare", "train", "val", "predict", "export", "info", "modules", "data", "convert"):
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


def _subparsers():
    import argparse

    from yoloattn.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_train_options_are_generated_from_train_config():
    from dataclasses import fields

    from yoloattn.cli.train import config_from_args
    from yoloattn.engine.train_config import API, RUN, TRAINING, TrainConfig

    subs = _subparsers()
    train, compare = subs["train"], subs["compare"]
    flags = lambda p: sorted(o for a in p._actions for o in a.option_strings)  # noqa: E731
    # every existing flag keeps its name
    assert flags(train) == sorted(
        "-h --help --model --data --attention --weights --seed --project --name --exist-ok --resume "
        "--noplots --epochs --batch --imgsz --hyp --set --optimizer --lr-schedule --device --workers "
        "--threads --val-interval --noval --freeze --sync-bn --no-amp --label-smoothing --nbs --patience "
        "--cache-dir --single-cls --multi-scale --save-period --cache --rect --quiet --tensorboard "
        "--noautoanchor --clip-grad --insert --gate --gate-lr-mult --new-lr-mult --warmup-new "
        "--allow-unused-rows".split()
    )
    dests = lambda p: {a.dest for a in p._actions}  # noqa: E731
    for f in fields(TrainConfig):
        scope = f.metadata["scope"]
        assert scope in (TRAINING, RUN, API) and f.metadata["help"], f.name
        assert (f.name in dests(train)) == (scope != API), f.name
        if scope == TRAINING:
            assert f.name in dests(compare), f.name
    # the parser's defaults are the dataclass's
    assert config_from_args(train.parse_args(["--data", "d.yaml"])) == TrainConfig(data="d.yaml")
    cfg = config_from_args(
        train.parse_args(
            "--data d.yaml --set lr0=0.02,mosaic=0 --set fliplr=0.25 --freeze 3 --no-amp --noautoanchor "
            "--noplots --cache --lr-schedule cos --clip-grad 5 --imgsz 320 --resume".split()
        )
    )
    assert cfg.hyp_overrides == {"lr0": 0.02, "mosaic": 0.0, "fliplr": 0.25} and cfg.freeze == [3]
    assert (cfg.amp, cfg.autoanchor, cfg.plots) == (False, False, False)
    assert (cfg.cache, cfg.lr_schedule, cfg.clip_grad, cfg.imgsz, cfg.resume) == (
        "ram",
        "cos",
        5.0,
        320,
        "latest",
    )
    assert compare.parse_args([]).imgsz is None  # compare: 640, or the demo's 320


def test_help_shows_defaults(capsys):
    for cmd in ("train", "compare"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "batch size per process (default: 16)" in out, cmd
        assert "dataloader workers (default: 2)" in out and "optimizer (default: SGD)" in out
        assert f"(default: runs/{cmd})" in out
        assert "--no-amp disable mixed precision on CUDA --" in out  # a switch: no default shown


def test_a_new_train_config_field_appears_in_train_and_compare(monkeypatch):
    from dataclasses import dataclass

    import yoloattn.cli.train as cli_train
    from yoloattn.engine.train_config import RUN, TrainConfig, option

    @dataclass
    class Extended(TrainConfig):
        warm_restarts: int = option(3, help="restart the schedule N times")
        fancy: bool = option(True, flag="--no-fancy", help="turn fancy off")
        tag: str = option("x", scope=RUN, help="a train-only option")

    monkeypatch.setattr(cli_train, "TrainConfig", Extended)
    subs = _subparsers()
    for cmd in ("train", "compare"):
        args = subs[cmd].parse_args(["--warm-restarts", "5", "--no-fancy"])
        opts = cli_train.train_options(args)
        assert opts["warm_restarts"] == 5 and opts["fancy"] is False, cmd
        assert cli_train.train_options(subs[cmd].parse_args([]))["warm_restarts"] == 3
    assert subs["train"].parse_args(["--tag", "y"]).tag == "y"
    assert not hasattr(subs["compare"].parse_args([]), "tag")
    cfg = cli_train.config_from_args(subs["train"].parse_args(["--data", "d.yaml", "--warm-restarts", "2"]))
    assert isinstance(cfg, Extended) and cfg.warm_restarts == 2 and cfg.tag == "x"
