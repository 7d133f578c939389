"""Kill points of a checkpoint save: a failure injected before each file replacement of the
final epoch's save; the resumed run must end with the uninterrupted run's weights, ``last`` must
never lag the resume state, and no weights file is read with another epoch's sidecar."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from yoloattn.engine import trainer as tr
from yoloattn.engine.checkpoint import load_training_state
from yoloattn.engine.runs import RunDir
from yoloattn.engine.trainer import TrainConfig, train
from yoloattn.models.weights import read_sidecar


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (BaseException: no handler catches it)."""


def _cfg(data, tmp_path, name, **kw):
    base = dict(
        model="yolov5n", data=str(data), epochs=2, batch=4, imgsz=64, workers=0, seed=3, noval=True,
        project=str(tmp_path / "runs"), name=name, quiet=True, cache_dir=str(tmp_path / "cache"), plots=False,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _kill_at(monkeypatch, k: int | None, counter: list[int]) -> None:
    """Count (k None) or fail at the k-th ``os.replace`` of the final epoch's save."""
    real_save, real_replace = tr.Trainer._save, os.replace

    def save(self, epoch, best, metrics):
        if epoch + 1 < self.epochs:
            return real_save(self, epoch, best, metrics)

        def replace(src, dst):
            if k is not None and counter[0] == k:
                raise Killed(f"killed before replacing {dst}")
            counter[0] += 1
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        try:
            return real_save(self, epoch, best, metrics)
        finally:
            monkeypatch.setattr(os, "replace", real_replace)

    monkeypatch.setattr(tr.Trainer, "_save", save)


@pytest.mark.slow
def test_every_kill_point_of_the_final_save_resumes_to_the_same_weights(tiny_data, tmp_path, monkeypatch):
    counter = [0]
    _kill_at(monkeypatch, None, counter)
    full = train(_cfg(tiny_data, tmp_path, "full"))
    writes = counter[0]
    assert writes >= 3  # last (+ sidecar), best (+ sidecar), the resume state
    ref = load_file(str(full.run_dir / "weights" / "last.safetensors"))
    monkeypatch.undo()
    part = train(_cfg(tiny_data, tmp_path, "part", stop_after_epochs=1))
    for k in range(writes):
        run = RunDir(tmp_path / f"k{k}")
        shutil.copytree(part.run_dir, run.root)
        counter[0] = 0
        _kill_at(monkeypatch, k, counter)
        with pytest.raises(Killed):
            train(TrainConfig(resume=str(run.root), quiet=True, workers=0))
        monkeypatch.undo()
        _, state = load_training_state(run.state)
        side = read_sidecar(run.last)  # the header's copy when the .json is older than the tensors
        assert side["meta"]["epoch"] >= state["epoch"], f"kill point {k}: last lags the resume state"
        if state["epoch"] == 1:  # killed after the commit point: nothing to redo
            with pytest.raises(ValueError, match="already finished"):
                train(TrainConfig(resume=str(run.root), quiet=True, workers=0))
        else:
            train(TrainConfig(resume=str(run.root), quiet=True, workers=0))
        got = load_file(str(run.last))
        assert set(got) == set(ref)
        for name in ref:
            assert torch.equal(got[name], ref[name]), f"kill point {k}: {name}"
        for w in (run.last, run.best):
            assert read_sidecar(w)["meta"]["epoch"] == 1, f"kill point {k}: {w.name}"
        assert not list(run.weights_dir.glob(".*.tmp")), f"kill point {k}: temporary files left"


def test_a_sidecar_older_than_its_tensors_is_not_trusted(tmp_path, caplog):
    from yoloattn.models import build_model
    from yoloattn.models.weights import save_model

    model = build_model("yolov5n", nc=2)
    path = save_model(model, tmp_path / "w.safetensors", meta={"epoch": 0})
    old = path.with_suffix(".json").read_text()
    save_model(model, path, meta={"epoch": 1})
    path.with_suffix(".json").write_text(old)  # as a kill between the two replacements leaves it
    caplog.set_level("WARNING")
    assert read_sidecar(path)["meta"]["epoch"] == 1
    assert "belongs to an earlier write" in caplog.text
