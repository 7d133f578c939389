"""Torch threads of a training process and its dataloader workers (no CPU oversubscription)."""

from __future__ import annotations

import os

import pytest
import torch

from yoloattn.data.loader import seed_worker
from yoloattn.engine import trainer as tr
from yoloattn.engine.setup import resolve_threads
from yoloattn.engine.trainer import TrainConfig


def _cpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: n)


def test_default_threads_leave_room_for_the_workers(monkeypatch):
    _cpus(monkeypatch, 8)
    assert resolve_threads(None, workers=2) == 2  # 8 // (1 + 2)
    assert resolve_threads(None, workers=0) == 8
    assert resolve_threads(None, workers=2, world=2) == 1  # 4 CPUs per process
    assert resolve_threads(None, workers=8) == 1  # never 0
    assert resolve_threads(3, workers=8) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert resolve_threads(None, workers=2) == 5
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        resolve_threads(0, workers=2)


def test_each_dataloader_worker_runs_one_thread(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    seed_worker(0)
    assert calls == [1]


def test_trainer_applies_and_logs_the_thread_choice_once(tiny_data, tmp_path, monkeypatch, caplog):
    _cpus(monkeypatch, 8)
    caplog.set_level("INFO", logger="yoloattn.train")
    before = torch.get_num_threads()
    cfg = TrainConfig(
        model="yolov5n",
        data=str(tiny_data),
        epochs=1,
        batch=4,
        imgsz=64,
        workers=2,
        project=str(tmp_path / "runs"),
        cache_dir=str(tmp_path / "cache"),
        quiet=True,
        plots=False,
    )
    try:
        tr.Trainer(cfg).setup()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("threads:")]
    assert msgs == ["threads: 2 (+2 workers, 1 thread each)"]


def test_val_runs_with_threads_that_leave_room_for_its_workers(monkeypatch):
    from yoloattn.engine.evaluator import eval_threads

    _cpus(monkeypatch, 8)
    before = torch.get_num_threads()
    torch.set_num_threads(8)
    try:
        with eval_threads(2) as n:
            assert n == 2 and torch.get_num_threads() == 2  # 8 // (1 + 2), as in training
        assert torch.get_num_threads() == 8
        with eval_threads(0) as n:  # no workers: the thread count is left alone
            assert n == 8 and torch.get_num_threads() == 8
        torch.set_num_threads(1)
        with eval_threads(2) as n:  # never more threads than before
            assert n == 1
        with eval_threads(0, threads=3) as n:
            assert n == 3 and torch.get_num_threads() == 3
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
