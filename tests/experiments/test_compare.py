"""The ablation runner: variants, a tiny end-to-end study, resume, failures, summary files."""

from __future__ import annotations

import csv
import json
import math

import pytest

from yoloattn.experiments import compare as cmp
from yoloattn.experiments.compare import CompareConfig, Variant, parse_variants, run_compare
from yoloattn.experiments.report import COLUMNS, summarise


def test_variants_baseline_first_with_default_and_own_placement():
    vs = parse_variants("SE, cbam@backbone,eca", place="neck")
    assert [v.name for v in vs] == ["baseline", "se@neck", "cbam@backbone", "eca@neck"]
    assert vs[0].attention is None and vs[2].attention == "cbam@backbone"
    assert parse_variants("", "neck") == [Variant("baseline", None)]
    assert parse_variants(["gc@6+8"], "neck")[1].slug == "gc@6+8"


def test_variant_errors_are_clear():
    with pytest.raises(KeyError, match="cbam"):
        parse_variants("cbma", "neck")
    with pytest.raises(ValueError, match="twice"):
        parse_variants("se,se@neck", "neck")


def _rec(v, seed, m):
    return {"variant": v, "seed": seed, "metrics": {"map50": m + 0.1, "map": m, "coco_ap": m}}


def test_summary_statistics_on_constructed_results():
    vs = parse_variants("se,cbam", "neck")
    recs = [_rec("baseline", s, 0.30 + d) for s, d in enumerate([0.0, 0.01, -0.01])]
    recs += [_rec("se@neck", s, 0.40 + d) for s, d in enumerate([0.0, 0.01, -0.01])]  # +0.1 on every seed
    recs += [_rec("cbam@neck", s, 0.30 + d) for s, d in enumerate([0.02, -0.01, -0.01])]
    rows = summarise(vs, recs, {})
    base, se, cbam = rows
    assert base["verdict"] == "reference" and base["mAP50-95_mean"] == pytest.approx(0.30)
    assert base["mAP50-95_std"] == pytest.approx(0.01)
    assert se["verdict"] == "better" and se["d_mAP50-95"] == pytest.approx(0.10)
    assert se["d_mAP50-95_ci_low"] == pytest.approx(0.10) and se["p_value"] == 0.0
    assert cbam["verdict"] == "no significant difference" and cbam["d_mAP50-95_ci_low"] < 0
    assert cbam["mAP50_mean"] == pytest.approx(0.4)


def test_failed_runs_are_reported_not_averaged():
    vs = parse_variants("se", "neck")
    recs = [
        _rec("baseline", 0, 0.3),
        _rec("baseline", 1, 0.3),
        _rec("se@neck", 0, 0.35),
        {"variant": "se@neck", "seed": 1, "error": "RuntimeError: boom"},
    ]
    se = summarise(vs, recs, {})[1]
    assert se["seeds"] == 1 and se["failed"] == 1 and "boom" in se["errors"]
    assert "2 seeds" in se["verdict"]
    assert math.isclose(se["mAP50-95_mean"], 0.35)


def test_tiny_end_to_end_study_and_resume(tiny_data, tmp_path, monkeypatch):
    cfg = CompareConfig(
        model="yolov5n",
        data=str(tiny_data),
        attention=["se"],
        seeds=2,
        project=str(tmp_path / "cmp"),
        name="t",
        latency_runs=2,
        train=dict(
            epochs=1, batch=4, imgsz=128, workers=0, quiet=True, noval=True, cache_dir=str(tmp_path / "cache")
        ),
    )
    root = run_compare(cfg)
    for f in (
        "summary.csv",
        "summary.md",
        "map_bar.png",
        "map_vs_gflops.png",
        "map_vs_latency.png",
        "forest.png",
        "summary.json",
        "per_class.csv",
        "study.json",
    ):
        assert (root / f).is_file(), f
    assert not list(root.rglob("last.state.safetensors"))  # finished runs drop their resume state
    assert all(
        (root / f"{v}-s{s}" / "records.npz").is_file() for v in ("baseline", "se@neck") for s in (0, 1)
    )
    assert "bootstrap" in json.loads((root / "summary.json").read_text())["statistics"]["method"]
    rows = list(csv.DictReader((root / "summary.csv").open()))
    assert list(rows[0]) == COLUMNS
    assert [r["variant"] for r in rows] == ["baseline", "se@neck"]
    assert all(r["seeds"] == "2" and r["failed"] == "0" for r in rows)
    assert int(rows[1]["params"]) > int(rows[0]["params"]) and float(rows[0]["gflops"]) > 0
    assert float(rows[0]["latency_ms"]) > 0
    for v in ("baseline", "se@neck"):
        for s in (0, 1):
            done = json.loads((root / f"{v}-s{s}" / "done.json").read_text())
            assert done["seed"] == s and "coco_ap" in done["metrics"] and "map" in done["metrics"]
    md = (root / "summary.md").read_text()
    assert "baseline" in md and "se@neck" in md and "verdict" in md

    # running again trains nothing: every run is finished
    calls = []
    monkeypatch.setattr("yoloattn.engine.trainer.train", lambda c: calls.append(c))
    run_compare(cfg)
    assert calls == []


def test_unfinished_run_resumes_and_failure_does_not_stop_others(tiny_data, tmp_path, monkeypatch):
    cfg = CompareConfig(
        model="yolov5n",
        data=str(tiny_data),
        attention=["se"],
        seeds=1,
        project=str(tmp_path / "cmp"),
        name="r",
        skip_latency=True,
        train=dict(
            epochs=1, batch=4, imgsz=64, workers=0, quiet=True, noval=True, cache_dir=str(tmp_path / "cache")
        ),
    )
    seen = []

    def fake_run_one(c, v, s):
        seen.append(v.name)
        if v.name == "se@neck":
            raise RuntimeError("out of memory")
        return {"variant": v.name, "seed": s, "metrics": {"map50": 0.5, "map": 0.3, "coco_ap": 0.3}}

    monkeypatch.setattr(cmp, "run_one", fake_run_one)
    root = run_compare(cfg)
    assert seen == ["baseline", "se@neck"]
    err = json.loads((root / "se@neck-s0" / "error.json").read_text())
    assert "out of memory" in err["error"] and "Traceback" in err["traceback"]
    assert "out of memory" in (root / "summary.md").read_text()


def test_run_one_resumes_from_checkpoint(tiny_data, tmp_path):
    from yoloattn.engine.trainer import TrainConfig, train

    cfg = CompareConfig(
        model="yolov5n",
        data=str(tiny_data),
        attention=[],
        seeds=1,
        project=str(tmp_path / "cmp"),
        name="x",
        train=dict(
            epochs=2, batch=4, imgsz=64, workers=0, quiet=True, noval=True, cache_dir=str(tmp_path / "cache")
        ),
    )
    v = Variant("baseline", None)
    run_dir = tmp_path / "cmp" / "x" / "baseline-s0"
    # simulate a study killed after epoch 1 of this run
    train(
        TrainConfig(
            **{
                **cfg.train,
                "model": "yolov5n",
                "data": str(tiny_data),
                "seed": 0,
                "project": str(run_dir.parent),
                "name": run_dir.name,
                "exist_ok": True,
                "stop_after_epochs": 1,
            }
        )
    )
    rec = cmp.run_one(cfg, v, 0)
    rows = list(csv.reader((run_dir / "results.csv").open()))
    assert [r[0] for r in rows[1:]] == ["0", "1"]  # resumed at epoch 1, not restarted
    assert rec["metrics"]["images"] == 4


@pytest.mark.parametrize("missing", ["sbatch", "submitit"])
def test_submitit_without_cluster_explains(tmp_path, monkeypatch, missing):
    import sys

    from yoloattn.experiments import slurm

    if missing == "sbatch":  # e.g. submitit installed on a machine that is no SLURM login node
        monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    else:
        monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    cfg = CompareConfig(model="yolov5n", data="x.yaml", launcher="submitit", project=str(tmp_path))
    with pytest.raises(cmp.LauncherError, match="submitit|SLURM"):
        run_compare(cfg)
    assert not (tmp_path / "exp").exists()  # nothing written before the check
