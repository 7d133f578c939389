"""``compare --launcher submitit`` against a real (local, one-node) SLURM cluster.

One study, two commands: a 2-variant x 2-seed job array in which one task is ``scancel``-ed
(reported with its log, the others finish, the summary is written), then a rerun that also adds
a variant that cannot be built: the finished runs are reused, the cancelled one is resubmitted
and finishes, and the failing tasks are reported in the summary with their logs.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from yoloattn.experiments.slurm import parse_time


def _compare(data: Path, tmp: Path, attention: str, prefix: str) -> list[str]:
    return [
        sys.executable, "-m", "yoloattn.cli", "compare", "--model", "yolov5n", "--data", str(data),
        "--attention", attention, "--seeds", "2", "--epochs", "1", "--imgsz", "64", "--batch", "4",
        "--workers", "0", "--quiet", "--noval", "--latency-runs", "1", "--resamples", "50",
        "--cache-dir", str(tmp / "cache"), "--project", str(tmp / "runs"), "--name", "study",
        "--launcher", "submitit", "--slurm-cpus", "1", "--slurm-mem", "1G", "--slurm-time", "0:15:00",
        "--slurm-job-name", prefix,
    ]  # fmt: skip


def _squeue(name: str) -> list[list[str]]:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-n", name, "-o", "%i|%j|%C|%m|%l"], capture_output=True, text=True, timeout=60
    )
    return [line.split("|") for line in out.stdout.split()]


@pytest.mark.slurm
def test_study_as_job_array_scancel_rerun_and_failure(slurm_cluster, tiny_data, tmp_path):
    t0 = time.time()
    prefix = f"yt{os.getpid()}"
    root = tmp_path / "runs" / "study"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = _compare(tiny_data, tmp_path, "se", prefix)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the four tasks appear as one array, with the options asked for; cancel the last one
    deadline, rows = time.time() + 120, []
    while time.time() < deadline and proc.poll() is None and len(rows) < 4:
        rows = _squeue(f"{prefix}-study")
        time.sleep(0.5)
    assert len(rows) == 4, (rows, proc.poll())
    ids = sorted(r[0] for r in rows)
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{i}" for i in range(4)]
    assert all(r[1:] == [f"{prefix}-study", "1", "1G", "15:00"] for r in rows), rows
    subprocess.run(["scancel", f"{array}_3"], check=True, timeout=60)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    assert "cancelled" in out

    finished = ["baseline-s0", "se@neck-s0", "baseline-s1"]
    assert all((root / r / "done.json").is_file() for r in finished)
    err = json.loads((root / "se@neck-s1" / "error.json").read_text())
    assert "cancelled" in err["error"] and "job " in err["error"], err  # pending when cancelled: no log
    assert "cancelled" in (root / "summary.md").read_text()
    mtimes = {r: (root / r / "done.json").stat().st_mtime_ns for r in finished}
    jobs1 = json.loads((root / "slurm" / "jobs.json").read_text())
    assert jobs1 == {r: f"{array}_{i}" for i, r in enumerate([*finished, "se@neck-s1"])}
    t1 = time.time()

    # rerun, adding a variant that fails (row 99 does not exist): only 3 tasks are submitted
    proc2 = subprocess.run(
        _compare(tiny_data, tmp_path, "se,se@99", prefix),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc2.stdout + proc2.stderr
    assert proc2.returncode == 0, out[-4000:]
    jobs2 = json.loads((root / "slurm" / "jobs.json").read_text())
    new = {k: v for k, v in jobs2.items() if v.split("_")[0] != array}
    assert sorted(new) == ["se@99-s0", "se@99-s1", "se@neck-s1"], jobs2
    assert all(jobs2[r] == jobs1[r] for r in finished)  # reused, not resubmitted
    assert {r: (root / r / "done.json").stat().st_mtime_ns for r in finished} == mtimes
    assert (root / "se@neck-s1" / "done.json").is_file() and not (root / "se@neck-s1" / "error.json").exists()
    for s in (0, 1):
        err = json.loads((root / f"se@99-s{s}" / "error.json").read_text())
        assert "out of range" in err["error"] and "Traceback" in err["traceback"]
        assert Path(err["log"]).is_file() and err["log"] in err["error"]
    rows2 = {r["variant"]: r for r in csv.DictReader((root / "summary.csv").open())}
    assert [(rows2[v]["seeds"], rows2[v]["failed"]) for v in ("baseline", "se@neck", "se@99")] == [
        ("2", "0"),
        ("2", "0"),
        ("0", "2"),
    ]
    assert "out of range" in rows2["se@99"]["errors"] and ".err" in rows2["se@99"]["errors"]
    print(f"\nSLURM study test: first run {t1 - t0:.0f} s, rerun {time.time() - t1:.0f} s")


def test_dry_run_shows_the_sbatch_view(tiny_data, tmp_path, capsys):
    pytest.importorskip("submitit")
    from yoloattn.cli import main

    args = ["compare", "--model", "yolov5n", "--data", str(tiny_data), "--attention", "se", "--seeds", "2"]
    args += ["--project", str(tmp_path / "runs"), "--name", "s", "--launcher", "submitit", "--dry-run"]
    args += ["--slurm-partition", "gpu", "--slurm-gpus", "1", "--slurm-cpus", "8", "--slurm-mem", "32G"]
    args += ["--slurm-time", "1-00:00:00", "--slurm-job-name", "abl", "--slurm-opt", "account=lab"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for flag in ("--array=0-3%4", "--partition=gpu", "--gpus-per-task=1", "--cpus-per-task=8", "--mem=32G",
                 "--time=1440", "--job-name=abl-s", "--account=lab", "--signal=USR2@90"):  # fmt: skip
        assert f"#SBATCH {flag}" in out, flag
    assert "task 3: se@neck-s1" in out and "sbatch --array=0-3%4" in out
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_slurm_time_formats():
    specs = ("90", "1:30", "2:00:00", "1-00", "1-2:30", "0:00:01")
    assert [parse_time(t) for t in specs] == [90, 2, 120, 1440, 1590, 1]
    with pytest.raises(ValueError, match="slurm-time"):
        parse_time("soon")
