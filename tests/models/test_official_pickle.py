"""Official .pt checkpoints: read without running their code, convert to our format, and
refuse malicious pickles before anything runs.

The official-shaped checkpoints are made here: stand-in classes named like the official ones
(``models.yolo.Model``, ``models.common.Conv``, ...) live in fake modules registered in
``sys.modules`` only while ``torch.save`` pickles them, and hold the tensors of our own yolov5n,
so the converted weights must load strictly and reproduce its outputs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import pickle
import pickletools
import re
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from yoloattn.cli import main as cli_main
from yoloattn.models.official_pickle import (
    Placeholder,
    UnsafePickleError,
    load_official_checkpoint,
    read_torch_zip,
    safe_loads,
    scan_pickle,
)

try:
    from yoloattn.models.detector import build_model
except ImportError:
    build_model = None

needs_model = pytest.mark.skipif(
    build_model is None, reason="yoloattn.models.detector.build_model not available yet"
)
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- fake official code

HEAD_CLASSES = {"Model", "Detect", "IDetect"}


@contextlib.contextmanager
def fake_official_modules():
    """Register empty ``models``, ``models.yolo`` and ``models.common`` modules temporarily."""
    names = ("models", "models.yolo", "models.common")
    assert not any(n in sys.modules for n in names)
    mods = {n: types.ModuleType(n) for n in names}
    sys.modules.update(mods)
    try:
        yield mods
    finally:
        for n in names:
            sys.modules.pop(n, None)


def _plain_attr(v):
    if v is None or isinstance(v, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(v, (list, tuple, set)):
        return all(_plain_attr(x) for x in v)
    if isinstance(v, dict):
        return all(_plain_attr(x) for x in v.values())
    return False


def to_official(mod: nn.Module, mods: dict) -> object:
    """Mirror a module tree with official-named stand-in classes (torch layers stay real)."""
    children = OrderedDict(
        (k, to_official(c, mods) if c is not None else None) for k, c in mod._modules.items()
    )
    if type(mod).__module__.startswith("torch.nn"):
        new = copy.copy(mod)
        new.__dict__["_modules"] = children
        return new
    name = type(mod).__name__
    modname = "models.yolo" if name in HEAD_CLASSES else "models.common"
    cls = getattr(mods[modname], name, None)
    if cls is None:
        cls = type(name, (), {"__module__": modname})
        setattr(mods[modname], name, cls)
    obj = cls.__new__(cls)
    obj.__dict__.update({k: v for k, v in mod.__dict__.items() if k != "_modules" and _plain_attr(v)})
    obj.__dict__["_modules"] = children
    return obj


def save_official(
    model: nn.Module,
    path: Path,
    *,
    ema: nn.Module | None = None,
    yaml_attr: bool = True,
    names_as_dict: bool = True,
) -> None:
    """torch.save an official-shaped checkpoint (fp16, like the released files)."""
    with fake_official_modules() as mods:
        fake = to_official(copy.deepcopy(model).half(), mods)
        if not yaml_attr:
            del fake.__dict__["yaml"]
        if names_as_dict:
            fake.__dict__["names"] = dict(enumerate(model.names))
        fake_ema = to_official(copy.deepcopy(ema).half(), mods) if ema is not None else None
        ckpt = {
            "epoch": -1,
            "best_fitness": np.float64(0.625),
            "model": fake,
            "ema": fake_ema,
            "updates": 1234,
            "optimizer": None,
            "opt": {"epochs": 300, "hyp": "data/hyps/hyp.scratch-low.yaml"},
            "git": {"remote": "x", "branch": "main", "commit": "abc"},
            "date": "2026-01-01T00:00:00",
        }
        torch.save(ckpt, path)
    assert "models.yolo" not in sys.modules


@pytest.fixture(scope="module")
def v5n():
    torch.manual_seed(3)
    m = build_model("yolov5n", nc=3)
    m.names = ["cat", "dog", "raccoon"]
    return m.eval()


def _fp16_reference(model):
    return copy.deepcopy(model).half().float().eval()


# ----------------------------------------------------------------------------- conversion


@needs_model
@pytest.mark.parametrize("name", ["yolov5n", "yolov7-tiny"])
def test_official_checkpoint_converts_exactly(tmp_path, v5n, name, capsys):
    if name != "yolov5n":
        torch.manual_seed(4)
        v5n = build_model(name, nc=3).eval()
        v5n.names = ["cat", "dog", "raccoon"]
    pt = tmp_path / f"{name}_official.pt"
    save_official(v5n, pt)
    ck = load_official_checkpoint(pt)
    assert ck.nc == 3 and ck.names == ["cat", "dog", "raccoon"] and ck.cfg == v5n.yaml
    assert ck.source["taken_from"] == "model" and ck.source["class"] == "models.yolo.Model"
    assert ck.source["epoch"] == -1 and ck.source["dtypes"] == ["float16", "int64"]
    assert list(ck.state_dict) == list(v5n.state_dict())  # non-persistent buffers left out, order kept

    out = tmp_path / "conv" / "y.safetensors"
    assert cli_main(["convert", str(pt), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    from yoloattn.models.weights import load_model, read_sidecar

    side = read_sidecar(out)
    assert side["names"] == ["cat", "dog", "raccoon"] and side["meta"]["converted_from"]["file"] == pt.name
    m = load_model(out)
    ref = _fp16_reference(v5n)
    for k, v in ref.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(m(x)[0], ref(x)[0])
    # the strict load into our model of the same config works directly as well
    fresh = build_model(name, nc=3)
    fresh.load_state_dict(ck.state_dict, strict=True)


@needs_model
def test_ema_is_preferred_and_cfg_names_options(tmp_path, v5n):
    other = copy.deepcopy(v5n)
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    pt = tmp_path / "ema.pt"
    save_official(other, pt, ema=v5n)
    ck = load_official_checkpoint(pt)
    assert ck.source["taken_from"] == "ema"
    assert torch.equal(ck.state_dict["model.0.conv.weight"], v5n.state_dict()["model.0.conv.weight"].half())

    bare = tmp_path / "noyaml.pt"
    save_official(v5n, bare, yaml_attr=False, names_as_dict=False)
    assert cli_main(["convert", str(bare)]) == 1  # no config in the file: asks for --cfg
    out = tmp_path / "named.safetensors"
    rc = cli_main(["convert", str(bare), "-o", str(out), "--cfg", "yolov5n", "--names", "a, b ,c", "--half"])
    assert rc == 0
    from yoloattn.models.weights import load_model, read_sidecar

    side = read_sidecar(out)
    assert side["names"] == ["a", "b", "c"] and side["nc"] == 3 and side["dtype"] == "float16"
    assert load_model(out).names == ["a", "b", "c"]
    # a wrong config is reported, not half-loaded
    assert cli_main(["convert", str(bare), "-o", str(tmp_path / "bad.safetensors"), "--cfg", "yolov5s"]) == 1
    assert not (tmp_path / "bad.safetensors").exists()


@needs_model
def test_plain_state_dict_checkpoint_and_transfer_loader(tmp_path, v5n):
    pt = tmp_path / "sd.pt"
    torch.save({"model": v5n.state_dict()}, pt)
    from yoloattn.cli.convert import convert
    from yoloattn.models.weights import load_state_for_transfer

    with pytest.raises(ValueError, match="--cfg"):
        convert(pt)
    out = convert(pt, cfg="yolov5n")  # nc inferred from the head: 3 * (5 + 3) rows
    assert out == tmp_path / "sd.safetensors"
    from yoloattn.models.weights import load_model

    assert load_model(out).nc == 3
    state, meta = load_state_for_transfer(pt)
    assert meta["cfg"] is None and list(state) == list(v5n.state_dict())


def test_roundtrip_of_plain_torch_objects(tmp_path):
    """Tensors of several dtypes, views, parameters, numpy scalars and sets come back inert."""
    base = torch.arange(24, dtype=torch.float32).view(4, 6)
    obj = {
        "view": base[1:, ::2],
        "half": torch.randn(3).half(),
        "bf16": torch.randn(2).bfloat16(),
        "long": torch.arange(5),
        "bool": torch.tensor([True, False]),
        "param": nn.Parameter(torch.ones(2)),
        "empty": torch.empty(0, 3),
        "np": np.float32(1.5),
        "misc": (set([1, 2]), frozenset([3]), slice(1, 2), complex(1, 2), b"\x00\x01", OrderedDict(a=1)),
        "mod": nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.SiLU()),
    }
    path = tmp_path / "plain.pt"
    torch.save(obj, path)
    back = read_torch_zip(path)
    for k in ("view", "half", "bf16", "long", "bool", "param", "empty"):
        assert type(back[k]) is torch.Tensor and back[k].dtype == obj[k].dtype
        assert torch.equal(back[k], obj[k].detach())
    assert back["misc"] == obj["misc"]
    assert isinstance(back["np"], Placeholder) and back["np"].qualname().endswith("multiarray.scalar")
    assert (
        isinstance(back["mod"], Placeholder)
        and back["mod"].qualname() == "torch.nn.modules.container.Sequential"
    )
    sd = obj["mod"].state_dict()
    with pytest.raises(ValueError, match="found no model"):  # no model/ema key, not a state dict
        load_official_checkpoint(path)
    from yoloattn.models.official_pickle import extract_state_dict

    got = extract_state_dict(back["mod"])
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


# ----------------------------------------------------------------------------- malicious pickles


def _binunicode(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _global_reduce(module: str, name: str, arg: str) -> bytes:
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + _binunicode(arg) + b"\x85R."


def _wrap_zip(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize(
    ("module", "name", "shown"),
    [
        ("os", "system", "os.system"),
        ("posix", "system", "posix.system"),
        ("subprocess", "Popen", "subprocess.Popen"),
        ("builtins", "eval", "builtins.eval"),
        ("__builtin__", "eval", "builtins.eval"),
        ("builtins", "getattr", "builtins.getattr"),
        ("torch", "load", "torch.load"),
    ],
)
def test_malicious_global_is_refused_before_running(tmp_path, module, name, shown):
    sentinel = tmp_path / "pwned"
    payload = _global_reduce(
        module, name, f"touch {sentinel}" if name != "eval" else f"open('{sentinel}','w')"
    )
    list(pickletools.genops(payload))  # a well-formed pickle: it would run with pickle.loads
    with pytest.raises(UnsafePickleError, match=re.escape(f"refused global {shown}")):
        safe_loads(payload)
    pt = _wrap_zip(tmp_path / "evil.pt", payload)
    with pytest.raises(UnsafePickleError, match=re.escape(shown)):
        load_official_checkpoint(pt)
    assert cli_main(["convert", str(pt)]) == 1
    assert not sentinel.exists()
    assert not (tmp_path / "evil.safetensors").exists()


def test_stack_global_and_find_class_gate(tmp_path):
    sentinel = tmp_path / "pwned"
    p4 = (
        b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93"
        + b"\x8c"
        + bytes([len(f"touch {sentinel}")])
        + f"touch {sentinel}".encode()
        + b"\x85R."
    )
    with pytest.raises(UnsafePickleError, match=r"refused global os\.system"):
        scan_pickle(p4)
    # names the scan cannot resolve statically (built from memo tricks) still meet find_class
    from yoloattn.models.official_pickle import RestrictedUnpickler

    with pytest.raises(UnsafePickleError, match=r"refused global os\.system while unpickling"):
        RestrictedUnpickler(io.BytesIO(p4), None).load()
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"\x80\x02(X\x04\x00\x00\x00echoios\nsystem\n.", "opcode INST"),
        (b"\x80\x02\x82\x01.", "opcode EXT1"),
        (b"\x80\x02P0\n.", "opcode PERSID"),
        (b"\x80\x02\xff.", "not a valid pickle"),
        (b"\x80\x02ccollections\nOrderedDict\n}X\x01\x00\x00\x00aK\x01sb.", "refused BUILD on type"),
    ],
)
def test_unexpected_opcodes_are_refused(payload, words):
    with pytest.raises(UnsafePickleError, match=re.escape(words)):
        safe_loads(payload)


def test_placeholder_classes_never_run(tmp_path):
    sentinel = tmp_path / "pwned"
    obj = safe_loads(_global_reduce("models.yolo", "system", f"touch {sentinel}"))
    assert isinstance(obj, Placeholder) and obj.qualname() == "models.yolo.system"
    assert obj._pickle_args == (f"touch {sentinel}",)
    assert not sentinel.exists()


def test_storage_references_are_checked(tmp_path):
    # a tensor view larger than its storage record
    buf = io.BytesIO()
    torch.save({"t": torch.zeros(4)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    bad = tmp_path / "short.pt"
    with zipfile.ZipFile(bad, "w") as zf:
        for n in src.namelist():
            data = src.read(n)
            zf.writestr(n, data[:8] if "/data/" in n and not n.endswith("serialization_id") else data)
    with pytest.raises(UnsafePickleError, match="has 8 bytes, need 16"):
        read_torch_zip(bad)
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ValueError, match="not a torch zip checkpoint"):
        read_torch_zip(tmp_path / "legacy.pt")


def test_no_unsafe_torch_load_in_src():
    pattern = re.compile(r"weights_only\s*=\s*False")
    hits = [str(p) for p in SRC.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert hits == []


# ----------------------------------------------------------------------------- bounded cost


def test_protocol_4_pickles_and_expanded_views_still_load(tmp_path):
    """The checked opcodes (sets, frozensets, dict keys, appends) and small zero-stride views."""
    obj = {
        "expanded": torch.arange(3.0).expand(4, 3),  # stride 0: 12 elements from a storage of 3
        "offset_view": torch.arange(10)[3:7],
        "misc": ({1, "a", (2, 3)}, frozenset({4}), {(1, 2): "tuple key", 5: [6, 7]}, complex(1, 2)),
        "od": OrderedDict([("a", 1), (("b", 2), 3)]),
    }
    for proto in (2, 4):
        path = tmp_path / f"p{proto}.pt"
        torch.save(obj, path, pickle_protocol=proto)
        back = read_torch_zip(path)
        assert back["expanded"].stride() == (3, 1)  # materialised, not a view any more
        assert torch.equal(back["expanded"], obj["expanded"]) and torch.equal(
            back["offset_view"], obj["offset_view"]
        )
        assert back["misc"] == obj["misc"] and back["od"] == obj["od"] and type(back["od"]) is OrderedDict


def test_tensor_bytes_are_budgeted_relative_to_the_file(tmp_path, monkeypatch):
    import yoloattn.models.official_pickle as op

    path = tmp_path / "t.pt"
    torch.save({"w": torch.zeros(2**18), "e": torch.zeros(1).expand(2**20)}, path)  # 1 MB + 4 MB
    assert read_torch_zip(path)["e"].shape == (2**20,)
    monkeypatch.setattr(op, "MEMORY_FLOOR", 2**20)  # 1 MB + 4 x ~1 MB: w (read + copy) fits, e's copy not
    with pytest.raises(op.CheckpointError, match=r"t\.pt: tensor \(1048576,\) of storage 1 .* needs 4\.0 MB"):
        read_torch_zip(path)
    monkeypatch.setattr(op, "MEMORY_FLOOR", 2**21)
    monkeypatch.setattr(op, "MEMORY_PER_FILE_BYTE", 0)  # 2 MB: w's 1 MB record and 1 MB copy fit, no more
    with pytest.raises(op.CheckpointError, match=r"storage record t/data/1 needs 0\.0 MB"):
        read_torch_zip(path)


def test_zip_records_are_read_by_declared_size(tmp_path, monkeypatch):
    import yoloattn.models.official_pickle as op

    buf = io.BytesIO()
    torch.save({"t": torch.arange(4, dtype=torch.float32)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    long_rec = tmp_path / "long.pt"  # a record longer than its storage: only the storage's bytes
    with zipfile.ZipFile(long_rec, "w", zipfile.ZIP_DEFLATED) as zf:
        for n in src.namelist():
            zf.writestr(n, src.read(n) + (bytes(2**20) if n.endswith("/data/0") else b""))
    assert torch.equal(read_torch_zip(long_rec)["t"], torch.arange(4, dtype=torch.float32))
    monkeypatch.setattr(op, "MAX_PICKLE_BYTES", 100)
    with pytest.raises(op.CheckpointError, match=r"long\.pt: archive/data\.pkl declares 0\.0 MB, more than"):
        read_torch_zip(long_rec)


def test_hostile_structures_fail_fast_with_bounded_messages(tmp_path):
    import yoloattn.models.official_pickle as op

    nest: object = (0,)
    for _ in range(7):
        nest = (nest,) * 9  # hashing it visits 9**7 leaves (a hostile file nests deeper); not hashed here
    body = pickle.dumps(nest, protocol=2)[2:-1]
    with pytest.raises(UnsafePickleError, match="refused dict key") as e:
        safe_loads(b"\x80\x02}" + body + b"K\x01s.")
    assert len(str(e.value)) < 400  # the key is summarised, never expanded
    with pytest.raises(UnsafePickleError, match="refused NEWOBJ"):
        safe_loads(b"\x80\x02cbuiltins\nfrozenset\n" + body + b"\x85\x85\x81.")
    with pytest.raises(UnsafePickleError, match="refused APPEND on bytearray"):
        safe_loads(b"\x80\x02cbuiltins\nbytearray\nC\x01a\x85RK\x01a.")
    shared: list = [0]
    for _ in range(9):
        shared = [shared] * 9
    budget = op._Budget()
    with pytest.raises(op.CheckpointError, match="too large once expanded"):
        op._plain(shared, budget)
    assert budget.visits == op.MAX_VISITS + 1
    assert len(op._brief(shared)) <= 200 and op._brief(10**5000).startswith("<int of")


def test_checkpoint_errors_name_the_file(tmp_path):
    from yoloattn.models.official_pickle import CheckpointError

    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"dir\.pt is not a file"):
        read_torch_zip(tmp_path / "dir.pt")
    pt = _wrap_zip(tmp_path / "deep.pt", b"\x80\x02}X\x05\x00\x00\x00epoch" + b"]" * 200 + b"a" * 199 + b"s.")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(pt))}: values nested more than 100 deep$"):
        load_official_checkpoint(pt)
    assert issubclass(CheckpointError, ValueError) and issubclass(UnsafePickleError, CheckpointError)
