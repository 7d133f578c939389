"""DistributedDataParallel smoke test: 2 CPU processes (gloo) under torchrun, a few steps."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml


def test_torchrun_two_cpu_processes(tiny_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "yoloattn.cli",
        "train",
        "--model",
        "yolov5n",
        "--data",
        str(tiny_data),
        "--epochs",
        "2",
        "--imgsz",
        "64",
        "--batch",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--quiet",
        "--project",
        str(tmp_path / "runs"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["exp"], runs  # only rank 0 creates the run folder
    run = tmp_path / "runs" / "exp"
    assert (run / "weights" / "last.state.safetensors").is_file()
    rows = (run / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs, written once
    assert yaml.safe_load((run / "args.yaml").read_text())["epochs"] == 2
    assert proc.stdout.count("done: 2 epochs") == 1  # rank 0 reports
    assert proc.stderr.count("AutoAnchor:") == 1 and proc.stderr.count("train: 8 images") == 1  # rank 0 logs


_STOP_AND_RESUME = """
import sys, torch
from yoloattn.engine.trainer import TrainConfig, train
torch.set_num_threads(1)
data, project = sys.argv[1], sys.argv[2]
common = dict(quiet=True, workers=0, device="cpu")
res = train(TrainConfig(model="yolov5n", data=data, epochs=3, imgsz=64, batch=2, project=project,
                        cache_dir=project + "/cache", noval=True, stop_after_epochs=1, **common))
if res is not None:
    print("stopped after", res.epochs_done, flush=True)
run = project + "/exp"
res = train(TrainConfig(resume=run, **common))
if res is not None:
    print("resumed to", res.epochs_done, flush=True)
"""


def test_ddp_ranks_stop_together_and_resume(tiny_data, tmp_path):
    # rank 0 decides to stop (here: stop_after_epochs; also --patience); every rank must leave the
    # epoch loop together, or the others hang in the next all-reduce
    script = tmp_path / "stop_resume.py"
    script.write_text(_STOP_AND_RESUME)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518"]
    cmd += [str(script), str(tiny_data), str(tmp_path / "runs")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("stopped after 1") == 1 and proc.stdout.count("resumed to 3") == 1
    rows = (tmp_path / "runs" / "exp" / "results.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
