import pytest
import torch
from torch import nn

from yoloattn.engine import checkpoint as ck
from yoloattn.engine.ema import ModelEMA
from yoloattn.engine.optim import build_optimizer


def _setup():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(m, "SGD", 0.01, 0.9, 1e-4)
    m(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    ema = ModelEMA(m)
    ema.update(m)
    return m, opt, ema


def test_state_round_trip_restores_everything(tmp_path):
    m, opt, ema = _setup()
    path = tmp_path / "last.state.safetensors"
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    ck.save_training_state(path, model=m, ema=ema, optimizer=opt, scaler=scaler, epoch=3, best_fitness=0.25)
    r1 = torch.rand(3)
    tensors, state = ck.load_training_state(path)
    assert state["epoch"] == 3 and state["best_fitness"] == 0.25 and state["ema_updates"] == 1
    m2 = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    m2.load_state_dict(ck.split_prefix(tensors, "model"))
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    opt2 = build_optimizer(m2, "SGD", 0.01, 0.9, 1e-4)
    ck.restore_optimizer(opt2, tensors, state)
    for p1, p2 in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        assert torch.equal(p1["momentum_buffer"], p2["momentum_buffer"])
    ck.restore_rng(tensors, state["rng"])
    assert torch.equal(torch.rand(3), r1)  # RNG continues exactly where it was saved


def test_atomic_write_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    m, opt, ema = _setup()
    path = tmp_path / "last.state.safetensors"
    kw = dict(model=m, ema=ema, optimizer=opt, scaler=None, best_fitness=0.0)
    ck.save_training_state(path, epoch=1, **kw)
    before = path.read_bytes()

    def boom(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        ck.save_training_state(path, epoch=2, **kw)
    assert path.read_bytes() == before
    assert ck.load_training_state(path)[1]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.state.safetensors"]  # no temp left behind


def test_not_a_state_file_is_rejected(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(1)}, str(p))
    with pytest.raises(ValueError, match="not a yoloattn training-state"):
        ck.load_training_state(p)
    with pytest.raises(FileNotFoundError):
        ck.load_training_state(tmp_path / "missing.safetensors")


def test_written_files_are_ordinary_readable_files(tmp_path):
    import os
    import stat

    m, opt, ema = _setup()
    path = tmp_path / "s.safetensors"
    ck.save_training_state(path, model=m, ema=ema, optimizer=opt, scaler=None, epoch=0, best_fitness=0.0)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_saved_weights_are_ordinary_readable_files(tmp_path):
    import os
    import stat

    from yoloattn.models.detector import build_model
    from yoloattn.models.weights import save_model

    p = save_model(build_model("yolov5n", nc=1), tmp_path / "w.safetensors")
    mask = os.umask(0)
    os.umask(mask)
    for f in (p, p.with_suffix(".json")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f
