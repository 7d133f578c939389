"""Study fingerprint (refuse / reuse / --fresh), resume state dropped, the statistics in the summary.

Training and evaluation are faked (``train`` writes a run folder, ``evaluate_run`` writes
simulated match records; the ``fake`` fixture, :mod:`fake_study`), so the real :func:`run_one` and
:func:`run_compare` run in milliseconds.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fake_study import LABELS, N_IMG

from yoloattn.engine.records import MatchRecords
from yoloattn.experiments.bootstrap import bootstrap_study
from yoloattn.experiments.compare import CompareConfig, run_compare
from yoloattn.experiments.fingerprint import StudyMismatch, diff_fingerprints, study_fingerprint
from yoloattn.experiments.stats import decide
from yoloattn.experiments.tables import COLUMNS


def _cfg(tmp_path, data, **kw) -> CompareConfig:
    train = dict(epochs=1, batch=4, imgsz=64, workers=0, quiet=True)
    train.update(kw.pop("train", {}))
    base = dict(
        model="yolov5n",
        data=str(data),
        attention=["se"],
        seeds=1,
        project=str(tmp_path / "cmp"),
        name="s",
        train=train,
        n_resamples=200,
    )
    base.update(kw)
    return CompareConfig(**base)


def _weights(tmp_path: Path, content: bytes) -> str:
    p = tmp_path / f"w{len(content)}.safetensors"
    p.write_bytes(content)
    return str(p)


CHANGES = {
    "epochs": {"train": {"epochs": 2}},
    "imgsz": {"train": {"imgsz": 96}},
    "batch": {"train": {"batch": 8}},
    "insert": {"train": {"insert": "plain"}},
    "gate": {"train": {"gate": "channel"}},
    "gate_lr_mult": {"train": {"gate_lr_mult": 10.0}},
    "new_lr_mult": {"train": {"new_lr_mult": 2.0}},
    "warmup_new": {"train": {"warmup_new": 1}},
    "hyp": {"train": {"hyp": "hyp.scratch-high"}},
    "hyp_overrides.lr0": {"train": {"hyp_overrides": {"lr0": 0.001}}},
    "model": {"model": "yolov5s"},
    "weights.sha256": {"weights": "OTHER"},
    "data.hash": {"data": "CHANGED"},
}


@pytest.mark.parametrize("key", list(CHANGES))
def test_rerun_with_other_result_changing_option_is_refused(key, fake, tiny_data, tmp_path):
    weights = _weights(tmp_path, b"base weights")
    run_compare(_cfg(tmp_path, tiny_data, weights=weights))
    study = (tmp_path / "cmp" / "s" / "study.json").read_text()
    change = dict(CHANGES[key])
    train = {**dict(epochs=1, batch=4, imgsz=64, workers=0, quiet=True), **change.pop("train", {})}
    if change.get("weights") == "OTHER":
        change["weights"] = _weights(tmp_path, b"other weights!")
    data = tiny_data
    if change.pop("data", None) == "CHANGED":  # same files, one label edited
        data = shutil.copytree(tiny_data.parent, tmp_path / "data2") / tiny_data.name
        lab = data.parent / "labels" / "val" / "im0.txt"
        lab.write_text(lab.read_text().replace("0 ", "1 ", 1))
    n_before = len(fake)
    with pytest.raises(StudyMismatch) as e:
        run_compare(_cfg(tmp_path, data, weights=change.pop("weights", weights), train=train, **change))
    msg = str(e.value)
    assert "\n" not in msg and key in msg and "--name NEW" in msg and "--fresh" in msg
    assert len(fake) == n_before  # nothing trained
    assert (tmp_path / "cmp" / "s" / "study.json").read_text() == study  # nothing rewritten


def test_identical_options_reuse_runs_and_more_seeds_or_variants_add_runs(fake, tiny_data, tmp_path):
    weights = _weights(tmp_path, b"base weights")
    run_compare(_cfg(tmp_path, tiny_data, weights=weights))
    assert fake == [("baseline", 0), ("se@neck", 0)]
    # the same options, spelled differently: an option at its default and a moved dataset copy
    moved = shutil.copytree(tiny_data.parent, tmp_path / "moved") / tiny_data.name
    run_compare(_cfg(tmp_path, moved, weights=weights, train={"gate": "scalar"}))
    assert len(fake) == 2
    run_compare(_cfg(tmp_path, tiny_data, weights=weights, seeds=2, attention=["se", "cbam"]))
    assert sorted(fake[2:]) == [("baseline", 1), ("cbam@neck", 0), ("cbam@neck", 1), ("se@neck", 1)]


def test_fresh_discards_the_old_study(fake, tiny_data, tmp_path):
    run_compare(_cfg(tmp_path, tiny_data))
    with pytest.raises(StudyMismatch, match="epochs"):
        run_compare(_cfg(tmp_path, tiny_data, train={"epochs": 2}))
    run_compare(_cfg(tmp_path, tiny_data, train={"epochs": 2}, fresh=True))
    assert len(fake) == 4  # everything trained again
    fp = json.loads((tmp_path / "cmp" / "s" / "study.json").read_text())["fingerprint"]
    assert fp["epochs"] == 2


def test_fresh_refuses_a_folder_that_is_not_a_study(fake, tiny_data, tmp_path):
    (tmp_path / "cmp" / "s").mkdir(parents=True)
    (tmp_path / "cmp" / "s" / "precious.txt").write_text("x")
    with pytest.raises(ValueError, match="not a study"):
        run_compare(_cfg(tmp_path, tiny_data, fresh=True))
    assert (tmp_path / "cmp" / "s" / "precious.txt").is_file()


def test_fingerprint_ignores_options_that_do_not_change_results(tiny_data, tmp_path):
    a = study_fingerprint(_cfg(tmp_path, tiny_data))
    b = study_fingerprint(_cfg(tmp_path, tiny_data, train={"workers": 4, "quiet": False, "device": "cpu"}))
    assert diff_fingerprints(a, b) == []
    assert a["version"] and a["data"]["val_images"] == 4 and len(a["data"]["hash"]) == 16


def test_finished_runs_drop_their_resume_state_unless_kept(fake, tiny_data, tmp_path):
    root = run_compare(_cfg(tmp_path, tiny_data))
    assert not list(root.rglob("last.state.safetensors"))
    assert (root / "baseline-s0" / "records.npz").is_file()
    root = run_compare(_cfg(tmp_path, tiny_data, name="k", keep_state=True))
    assert len(list(root.rglob("last.state.safetensors"))) == 2


def test_summary_uses_the_bootstrap_and_states_everything(fake, tiny_data, tmp_path):
    cfg = _cfg(tmp_path, tiny_data, seeds=2, attention=["se", "cbam"])
    root = run_compare(cfg)
    rows = {r["variant"]: r for r in csv.DictReader((root / "summary.csv").open())}
    assert list(next(iter(rows.values()))) == COLUMNS
    # the verdict is the bootstrap + Holm decision on the saved records
    recs = {
        v: [MatchRecords.load(root / f"{v}-s{s}" / "records.npz") for s in (0, 1)]
        for v in ("baseline", "se@neck", "cbam@neck")
    }
    boot = bootstrap_study(recs["baseline"], {k: recs[k] for k in ("se@neck", "cbam@neck")}, 200, 0)
    dec = decide(boot)
    for v in ("se@neck", "cbam@neck"):
        assert rows[v]["verdict"] == dec[v].verdict
        assert float(rows[v]["d_mAP50-95"]) == pytest.approx(dec[v].delta, abs=1e-6)
        assert float(rows[v]["d_mAP50-95_ci_low"]) == pytest.approx(dec[v].ci_low, abs=1e-6)
        assert float(rows[v]["p_holm"]) == pytest.approx(dec[v].p_holm, abs=1e-6)
        assert float(rows[v]["d_mAP50"]) == pytest.approx(boot[v].map50.estimate, abs=1e-6)
        assert "bootstrap" in rows[v]["method"]
    assert rows["se@neck"]["verdict"] == "better"
    assert rows["cbam@neck"]["verdict"] == "no significant difference"

    md = (root / "summary.md").read_text()
    for text in (
        "Δ mAP50 [95% CI]",
        "Δ mAP50-95 [95% CI]",
        "p (Holm)",
        "mAP50-95 @0",
        "engagement",
        "cannot be told from noise",
        "2 seed(s) and 60 images",
        "Holm",
        "## Per-class AP50-95",
        "| c0 |",
        "**epochs** 1",
        "**imgsz** 64",
        "**batch** 4",
        "insert=auto",
        "**seeds** 0, 1",
        "**size on disk**",
        "4 val images",  # the dataset's own count (the fake records have 60)
        f"{LABELS.n_targets} val instances",
        "forest.png",
    ):
        assert text in md, text

    s = json.loads((root / "summary.json").read_text())
    assert s["settings"]["fingerprint"]["epochs"] == 1 and s["settings"]["seeds"] == [0, 1]
    assert s["statistics"]["method"] == "bootstrap" and s["statistics"]["mde_mAP50-95"] > 0
    assert "cannot be told from noise" in s["statistics"]["mde_line"]
    assert s["dataset"]["val_images"] == N_IMG and s["dataset"]["val_instances"] == LABELS.n_targets
    assert s["disk_bytes"] > 0 and s["rows"][0]["mAP50-95@0_mean"] == pytest.approx(0.3)
    assert s["per_class_ap50_95"]["classes"] == ["c0", "c1"]
    assert len(s["per_class_ap50_95"]["se@neck"]) == 2
    assert "yolov5n" in s["title"] and "1 epoch," in s["title"] and "2 seeds" in s["title"]
    assert set(s["plots"]) == {"forest.png", "map_bar.png", "map_vs_gflops.png", "map_vs_latency.png"}
    for p in s["plots"]:
        assert (root / p).stat().st_size > 0
    assert (root / "per_class.csv").read_text().startswith("class,baseline,se@neck,cbam@neck")


def test_one_seed_gets_a_bootstrap_verdict(fake, tiny_data, tmp_path):
    root = run_compare(_cfg(tmp_path, tiny_data, seeds=1))
    row = next(r for r in csv.DictReader((root / "summary.csv").open()) if r["variant"] == "se@neck")
    assert row["verdict"] == "better" and "1 seed(s)" in row["method"]
    assert float(row["d_mAP50-95_ci_low"]) > 0
    assert "1 seed(s) and 60 images" in (root / "summary.md").read_text()


def test_plots_have_titles_and_honest_axes(fake, tiny_data, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen: dict[str, tuple[str, tuple, tuple]] = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, fname, *a, **k):
        ax = fig.axes[0]
        title = ax.get_title() or (fig._suptitle.get_text() if fig._suptitle else "")
        seen[Path(fname).name] = (title, ax.get_xlim(), ax.get_ylim())
        return real_savefig(fig, fname, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    run_compare(_cfg(tmp_path, tiny_data, seeds=1))
    plt.close("all")
    assert set(seen) == {"forest.png", "map_bar.png", "map_vs_gflops.png", "map_vs_latency.png"}
    for name, (title, _xlim, _ylim) in seen.items():
        assert "yolov5n" in title and "1 epoch," in title and "1 seed" in title, name
    for name in ("map_bar.png", "map_vs_gflops.png", "map_vs_latency.png"):
        assert seen[name][2][0] == 0, name  # value axes start at zero
    for name in ("map_vs_gflops.png", "map_vs_latency.png"):
        assert seen[name][1][0] == 0, name
    lo, hi = seen["forest.png"][1]
    assert lo < 0 < hi and np.isclose(-lo, hi)  # symmetric about the zero line


def test_cli_flags_reach_the_config(monkeypatch, tmp_path):
    from yoloattn.cli import compare as cli

    got = {}
    monkeypatch.setattr(
        "yoloattn.experiments.compare.run_compare", lambda cfg: got.setdefault("cfg", cfg) and tmp_path
    )
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    p = cli.add_parser(sub)
    args = p.parse_args(["--data", "d.yaml", "--fresh", "--keep-state", "--resamples", "50"])
    cli.run(args)
    cfg = got["cfg"]
    assert cfg.fresh and cfg.keep_state and cfg.n_resamples == 50
    assert not p.parse_args(["--data", "d.yaml"]).fresh
