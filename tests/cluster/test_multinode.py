"""Two "nodes" on one machine: two ``torchrun --nnodes 2`` invocations (one process each, gloo on
CPU) with a static rendezvous on 127.0.0.1.

One node is killed after the first checkpoint: the other fails at once with a clear message, the
checkpoint is intact, and ``--resume`` on both nodes finishes the run. The result equals, weight
for weight, a single-node two-process run with the same seed and global batch: the two-node
rendezvous trains exactly like one node, only global rank 0 writes, and the resume is exact.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train(data: Path, project: Path) -> list[str]:
    return [
        "-m", "yoloattn.cli", "train", "--model", "yolov5n", "--data", str(data), "--epochs", "3",
        "--imgsz", "64", "--batch", "2", "--workers", "0", "--device", "cpu", "--quiet", "--noval",
        "--noplots", "--seed", "1", "--project", str(project), "--cache-dir", str(project / "cache"),
    ]  # fmt: skip


def _node(rank: int, port: int, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank)]
    cmd += ["--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLOATTN_DIST_TIMEOUT": "120"}
    # its own session: killing the node kills torchrun's agent and its worker together
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (torchrun starts its workers in sessions of their own, so
    killing the agent's process group would leave the worker running)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _signal_node(proc: subprocess.Popen[bytes], sig: int) -> None:
    for pid in _tree(proc.pid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _state(run: Path) -> dict[str, torch.Tensor]:
    st = load_file(str(run / "weights" / "last.state.safetensors"))
    return {k: v for k, v in st.items() if k.startswith(("model.", "ema.", "optim."))}


@pytest.mark.multinode
def test_two_nodes_kill_one_resume_equals_single_node(make_dataset, tmp_path):
    t0 = time.time()
    data = make_dataset(tmp_path / "data", n_train=48)  # 12 steps per epoch: time to kill a node mid-run
    two = tmp_path / "two"
    n0 = _node(0, port := _free_port(), _train(data, two), tmp_path / "n0.log")
    n1 = _node(1, port, _train(data, two), tmp_path / "n1.log")
    run = two / "exp"
    csv, state = run / "results.csv", run / "weights" / "last.state.safetensors"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and n0.poll() is None:
            if state.is_file() and csv.is_file() and len(csv.read_text().splitlines()) >= 2:
                break
            time.sleep(0.02)
        assert n0.poll() is None and n1.poll() is None, (tmp_path / "n0.log").read_text()[-3000:]
        _signal_node(n1, signal.SIGSTOP)  # freeze node 1 mid-run: node 0 cannot finish without it
        time.sleep(1)
        assert n0.poll() is None
        _signal_node(n1, signal.SIGKILL)  # then it dies, as a node does: agent and worker at once
        t_kill = time.time()
        rc = n0.wait(timeout=180)
        t_fail = time.time() - t_kill
    finally:
        for p in (n0, n1):
            if p.poll() is None:
                _signal_node(p, signal.SIGKILL)
                p.wait()
    log0 = (tmp_path / "n0.log").read_text()
    assert rc != 0
    assert "lost contact with another process" in log0 and f"--resume {run}" in log0, log0[-3000:]
    assert sorted(p.name for p in two.iterdir() if p.name != "cache") == ["exp"]  # only global rank 0 writes
    saved = _state(run)  # the checkpoint is whole: it loads
    done = len(csv.read_text().splitlines()) - 1
    assert 1 <= done < 3

    t1 = time.time()
    resume = ["-m", "yoloattn.cli", "train", "--resume", str(run), "--quiet"]
    port = _free_port()
    r0, r1 = _node(0, port, resume, tmp_path / "r0.log"), _node(1, port, resume, tmp_path / "r1.log")
    assert r0.wait(timeout=300) == 0 and r1.wait(timeout=300) == 0, (tmp_path / "r0.log").read_text()[-3000:]
    assert [r.split(",")[0].strip() for r in csv.read_text().splitlines()[1:]] == ["0", "1", "2"]
    assert sorted(p.name for p in two.iterdir() if p.name != "cache") == ["exp"]
    t2 = time.time()

    one = tmp_path / "one"  # the reference: one node, two processes, same seed and global batch
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(_free_port()), *_train(data, one)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _state(one / "exp"), _state(run)
    assert a.keys() == b.keys() == saved.keys() and len(a) > 100
    for k in a:
        assert torch.equal(a[k], b[k]), k
    print(
        f"\ntwo-node test: first run and kill {t1 - t0:.0f} s (node 0 failed {t_fail:.1f} s after the kill), "
        f"resume {t2 - t1:.0f} s, single-node reference {time.time() - t2:.0f} s"
    )


def test_peer_lost_message_and_timeout(monkeypatch):
    from yoloattn.engine.distributed import dist_timeout, peer_lost_error

    gloo = RuntimeError(
        "[pair.cc:545] Read error [127.0.0.1]:1: Connection reset by peer. This is typically caused"
    )
    assert peer_lost_error(gloo, "runs/x") is None  # not under torchrun
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    err = peer_lost_error(gloo, "runs/x")
    assert err is not None and "rank 3 of 4" in str(err) and "--resume runs/x" in str(err)
    assert "typically" not in str(err)
    assert peer_lost_error(RuntimeError("CUDA out of memory"), "runs/x") is None  # other errors pass through
    assert dist_timeout().total_seconds() == 3 * 3600
    monkeypatch.setenv("YOLOATTN_DIST_TIMEOUT", "90")
    assert dist_timeout().total_seconds() == 90
    monkeypatch.setenv("YOLOATTN_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="YOLOATTN_DIST_TIMEOUT"):
        dist_timeout()
