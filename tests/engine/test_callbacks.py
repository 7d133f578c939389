"""Trainer callbacks: hook order and values, a failing logger, TensorBoard event files."""

from __future__ import annotations

import csv
import math

import pytest

from yoloattn.engine.callbacks import Callback, CallbackList, TensorBoardLogger, tensorboard_missing
from yoloattn.engine.runs import RESULT_COLUMNS
from yoloattn.engine.trainer import TrainConfig, train


def _cfg(data, tmp_path, **kw) -> TrainConfig:
    base = dict(
        model="yolov5n",
        data=str(data),
        epochs=2,
        batch=4,
        imgsz=64,
        workers=0,
        project=str(tmp_path / "runs"),
        name="exp",
        quiet=True,
        cache_dir=str(tmp_path / "cache"),
        plots=False,
        noval=True,
    )
    base.update(kw)
    return TrainConfig(**base)


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_start(self, trainer):
        self.calls.append(("start", trainer.run_dir.is_dir()))

    def on_epoch_end(self, trainer, epoch, values):
        self.calls.append(("epoch", epoch, dict(values)))

    def on_train_end(self, trainer, result):
        self.calls.append(("end", result.epochs_done))


class Broken(Callback):
    def on_train_start(self, trainer):
        raise RuntimeError("disk full")


def test_callbacks_see_each_results_row_and_a_failing_one_is_dropped(tiny_data, tmp_path, caplog):
    rec = Recorder()
    res = train(_cfg(tiny_data, tmp_path), callbacks=[Broken(), rec])
    assert [c[0] for c in rec.calls] == ["start", "epoch", "epoch", "end"]
    assert rec.calls[0] == ("start", True) and rec.calls[-1] == ("end", 2)
    assert [c[1] for c in rec.calls[1:3]] == [0, 1]
    rows = list(csv.DictReader((res.run_dir / "results.csv").open()))
    for (_, epoch, values), row in zip(rec.calls[1:3], rows):
        assert list(values) == RESULT_COLUMNS[1:]
        for k, v in values.items():
            cell = row[k].strip()
            assert (v is None) == (cell == ""), (epoch, k)  # empty cell <-> None
            if v is not None:
                assert math.isclose(float(cell), v, rel_tol=1e-5), (epoch, k)
    # --noval: the first epoch has no metrics, the last one has
    assert rec.calls[1][2]["metrics/mAP_0.5:0.95"] is None
    assert rec.calls[2][2]["metrics/mAP_0.5:0.95"] is not None
    assert "Broken.on_train_start failed (disk full)" in caplog.text


def test_callback_list_removes_only_the_failing_callback():
    rec = Recorder()
    cbs = CallbackList([Broken(), rec])
    cbs.on_train_start(type("T", (), {"run_dir": __import__("pathlib").Path(".")})())
    assert len(cbs.callbacks) == 1 and rec.calls == [("start", True)]


def test_tensorboard_writes_event_files(tiny_data, tmp_path):
    if tensorboard_missing():
        pytest.skip(tensorboard_missing())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = train(_cfg(tiny_data, tmp_path, tensorboard=True))
    events = list(res.run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(res.run_dir))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/box_loss" in tags and "x/lr0" in tags and "metrics/mAP_0.5_0.95" in tags
    assert [e.step for e in acc.Scalars("train/box_loss")] == [0, 1]
    assert [e.step for e in acc.Scalars("metrics/mAP_0.5_0.95")] == [1]  # --noval: empty cell not logged
    rows = list(csv.DictReader((res.run_dir / "results.csv").open()))
    last = acc.Scalars("train/box_loss")[1].value
    assert math.isclose(last, float(rows[1]["train/box_loss"]), rel_tol=1e-5)


def test_tensorboard_missing_is_a_clear_error_before_training(monkeypatch, tiny_data, tmp_path):
    import yoloattn.engine.callbacks as cb

    monkeypatch.setattr(cb, "tensorboard_missing", lambda: "--tensorboard needs ... yoloattn[tensorboard]")
    with pytest.raises(ImportError, match=r"yoloattn\[tensorboard\]"):
        TensorBoardLogger()
    with pytest.raises(ImportError, match=r"yoloattn\[tensorboard\]"):
        train(_cfg(tiny_data, tmp_path, tensorboard=True))
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made
