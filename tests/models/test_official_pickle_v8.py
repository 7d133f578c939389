"""ultralytics YOLOv8 / YOLO11 ``.pt`` checkpoints: read without running their code, converted exactly.

The checkpoints are made here from stand-in classes named like the ultralytics ones
(``ultralytics.nn.tasks.DetectionModel``, ``ultralytics.nn.modules.block.C2f``, ...) that live in
fake modules registered in ``sys.modules`` only while ``torch.save`` pickles them, and hold the
tensors of our own yolov8n / yolo11n (same layout as the official ``.pt`` files: an fp16 model
with ``yaml`` (with ``scale``/``yaml_file``), ``names`` as a dict, ``args``, ``ema: None`` and the
ultralytics top-level keys).
"""

from __future__ import annotations

import contextlib
import copy
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from yoloattn.cli import main as cli_main
from yoloattn.models.detector import build_model
from yoloattn.models.official_pickle import UnsafePickleError, load_official_checkpoint, read_torch_zip

# our class -> (ultralytics module, ultralytics class name)
OFFICIAL = {
    "Model": ("ultralytics.nn.tasks", "DetectionModel"),
    "DFLDetect": ("ultralytics.nn.modules.head", "Detect"),
    "DFL": ("ultralytics.nn.modules.block", "DFL"),
    "Conv": ("ultralytics.nn.modules.conv", "Conv"),
    "DWConv": ("ultralytics.nn.modules.conv", "DWConv"),
    "Concat": ("ultralytics.nn.modules.conv", "Concat"),
    "BottleneckK": ("ultralytics.nn.modules.block", "Bottleneck"),
    "C2f": ("ultralytics.nn.modules.block", "C2f"),
    "C3k": ("ultralytics.nn.modules.block", "C3k"),
    "C3k2": ("ultralytics.nn.modules.block", "C3k2"),
    "SPPF": ("ultralytics.nn.modules.block", "SPPF"),
    "C2PSA": ("ultralytics.nn.modules.block", "C2PSA"),
    "PSABlock": ("ultralytics.nn.modules.block", "PSABlock"),
    "PSAAttention": ("ultralytics.nn.modules.block", "Attention"),
}
FAKE = (
    "ultralytics",
    "ultralytics.nn",
    "ultralytics.nn.tasks",
    "ultralytics.nn.modules",
    "ultralytics.nn.modules.head",
    "ultralytics.nn.modules.block",
    "ultralytics.nn.modules.conv",
    "ultralytics.utils",
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@contextlib.contextmanager
def fake_ultralytics():
    assert not any(n in sys.modules for n in FAKE)
    mods = {n: types.ModuleType(n) for n in FAKE}
    sys.modules.update(mods)
    try:
        yield mods
    finally:
        for n in FAKE:
            sys.modules.pop(n, None)


def _plain(v) -> bool:
    if v is None or isinstance(v, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(v, (list, tuple, set)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(_plain(x) for x in v.values())
    return False


def _stand_in(modname: str, name: str, mods: dict) -> type:
    cls = getattr(mods[modname], name, None)
    if cls is None:
        cls = type(name, (), {"__module__": modname})
        setattr(mods[modname], name, cls)
    return cls


def to_ultralytics(mod: nn.Module, mods: dict) -> object:
    children = OrderedDict(
        (k, to_ultralytics(c, mods) if c is not None else None) for k, c in mod._modules.items()
    )
    if type(mod).__module__.startswith("torch.nn"):
        new = copy.copy(mod)
        new.__dict__["_modules"] = children
        return new
    modname, name = OFFICIAL[type(mod).__name__]
    obj = _stand_in(modname, name, mods).__new__(_stand_in(modname, name, mods))
    attrs = {k: v for k, v in mod.__dict__.items() if k != "_modules" and _plain(v)}
    if name == "Detect":  # the official head keeps its strides as a plain attribute
        attrs["_buffers"] = {}
        attrs["stride"] = mod.stride.clone()
    obj.__dict__.update(attrs)
    obj.__dict__["_modules"] = children
    return obj


def save_ultralytics(model: nn.Module, path: Path, stem: str) -> None:
    with fake_ultralytics() as mods:
        fake = to_ultralytics(copy.deepcopy(model).half(), mods)
        cfg = {k: v for k, v in model.yaml.items() if k not in ("scale", "ch")}
        cfg.update(
            {"scale": None if stem.endswith("noscale") else model.yaml["scale"], "yaml_file": f"{stem}.yaml"}
        )
        if stem.endswith("noscale"):
            cfg["yaml_file"] = f"{model.yaml_file}.yaml"
        cfg["channels"] = 3
        fake.__dict__["yaml"] = cfg
        fake.__dict__["names"] = dict(enumerate(model.names))
        ns = _stand_in("ultralytics.utils", "IterableSimpleNamespace", mods)()
        ns.__dict__.update({"task": "detect", "imgsz": 640})
        fake.__dict__["args"] = ns
        ckpt = {
            "date": "2026-01-01T00:00:00",
            "version": "8.3.100",
            "license": "AGPL-3.0",
            "docs": "https://docs.ultralytics.com",
            "epoch": -1,
            "best_fitness": None,
            "model": fake,
            "ema": None,
            "updates": None,
            "optimizer": None,
            "train_args": {"model": f"{stem}.yaml", "epochs": 100, "optimizer": "auto"},
            "train_metrics": {"metrics/mAP50(B)": 0.5},
        }
        torch.save(ckpt, path)
    assert "ultralytics.nn.tasks" not in sys.modules


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n"])
def test_ultralytics_checkpoint_converts_exactly(tmp_path, name, capsys):
    torch.manual_seed(5)
    model = build_model(name, nc=3).eval()
    model.names = ["cat", "dog", "raccoon"]
    pt = tmp_path / f"{name}.pt"
    save_ultralytics(model, pt, name)
    ck = load_official_checkpoint(pt)
    assert ck.source["class"] == "ultralytics.nn.tasks.DetectionModel" and ck.source["version"] == "8.3.100"
    assert ck.source["taken_from"] == "model" and ck.names == ["cat", "dog", "raccoon"]
    assert list(ck.state_dict) == list(model.state_dict())  # the head's stride is no tensor entry
    assert ck.cfg is not None and ck.cfg["yaml_file"] == f"{name}.yaml"
    out = tmp_path / "conv" / f"{name}.safetensors"
    assert cli_main(["convert", str(pt), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    from yoloattn.models.weights import load_model, read_sidecar

    side = read_sidecar(out)
    assert side["nc"] == 3 and side["names"] == ["cat", "dog", "raccoon"]
    loaded = load_model(out)
    assert loaded.family == model.family
    ref = copy.deepcopy(model).half().float().eval()
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], ref(x)[0])
    fresh = build_model(name, nc=3)
    fresh.load_state_dict(ck.state_dict, strict=True)


def test_scale_from_yaml_file_and_nc_from_the_class_bias(tmp_path):
    torch.manual_seed(6)
    model = build_model("yolov8n", nc=2).eval()
    pt = tmp_path / "ckpt.pt"
    save_ultralytics(model, pt, "noscale")  # yaml without 'scale': read from yaml_file (yolov8n.yaml)
    out = tmp_path / "a.safetensors"
    assert cli_main(["convert", str(pt), "-o", str(out)]) == 0
    from yoloattn.models.weights import read_sidecar

    assert read_sidecar(out)["cfg"]["scale"] == "n"
    sd = tmp_path / "sd.pt"
    torch.save({"model": model.state_dict()}, sd)
    from yoloattn.cli.convert import convert

    assert convert(sd, cfg="yolov8n").exists()  # nc inferred from model.22.cv3.0.2.bias: 2
    assert read_sidecar(tmp_path / "sd.safetensors")["nc"] == 2
    assert cli_main(["convert", str(sd), "-o", str(tmp_path / "bad.safetensors"), "--cfg", "yolo11n"]) == 1


def test_a_checkpoint_with_the_ultralytics_layout_still_refuses_other_globals(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, ("echo pwned",))

    pt = tmp_path / "evil.pt"
    torch.save(
        {"model": Evil(), "version": "8.3.0", "ema": None}, pt, pickle_protocol=pickle.DEFAULT_PROTOCOL
    )
    with pytest.raises(UnsafePickleError, match="system"):
        read_torch_zip(pt)
