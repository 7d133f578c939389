"""A training killed with SIGKILL (no clean-up at all) resumes to the same end state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from yoloattn.engine.runs import truncate_results
from yoloattn.engine.trainer import TrainConfig, train


def _args(data, project, name):
    return [
        sys.executable, "-m", "yoloattn.cli", "train", "--model", "yolov5n", "--data", str(data),
        "--epochs", "3", "--imgsz", "64", "--batch", "4", "--workers", "0", "--quiet", "--noplots",
        "--project", str(project), "--name", name, "--cache-dir", str(project / "cache"), "--seed", "3",
    ]  # fmt: skip


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_after_the_first_epoch_then_resume_equals_uninterrupted(tiny_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_args(tiny_data, tmp_path, "killed"), env=env)
    csv_file = tmp_path / "killed" / "results.csv"
    state = tmp_path / "killed" / "weights" / "last.state.safetensors"
    deadline = time.time() + 240
    # kill as soon as epoch 1's row is written: usually before its checkpoint, so the resumed run
    # redoes epoch 1 from epoch 0's state and must not keep the row twice
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and csv_file.is_file() and len(csv_file.read_text().splitlines()) >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    subprocess.run([*_args(tiny_data, tmp_path, "x")[:4], "--resume", str(tmp_path / "killed"), "--quiet"],
                   env=env, check=True, timeout=240)  # fmt: skip
    full = subprocess.run(_args(tiny_data, tmp_path, "full"), env=env, check=True, timeout=240)
    assert full.returncode == 0
    a = load_file(str(tmp_path / "full" / "weights" / "last.state.safetensors"))
    b = load_file(str(tmp_path / "killed" / "weights" / "last.state.safetensors"))
    for k in [k for k in a if k.startswith(("model.", "ema.", "optim."))]:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "full" / "results.csv").read_text() == csv_file.read_text()  # one row per epoch


def test_truncate_results_keeps_rows_before_the_resumed_epoch(tmp_path):
    f = tmp_path / "results.csv"
    f.write_text("epoch,a\n0,1\n1,2\n2,3\n")
    assert truncate_results(f, 2) == 1 and f.read_text() == "epoch,a\n0,1\n1,2\n"
    assert truncate_results(f, 5) == 0 and truncate_results(tmp_path / "none.csv", 1) == 0


def test_resume_before_the_first_checkpoint_says_what_to_do(tmp_path):
    run = tmp_path / "early"
    (run / "weights").mkdir(parents=True)
    (run / "args.yaml").write_text("model: yolov5n\n")
    with pytest.raises(FileNotFoundError, match="stopped before its first epoch finished; start the"):
        train(TrainConfig(resume=str(run), quiet=True))
