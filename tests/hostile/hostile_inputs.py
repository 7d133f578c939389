"""Builders of hostile inputs: torch-zip checkpoints with crafted pickles, lying zip records,
deflate bombs. Everything is made on the fly, small on disk, and never with the code a real
attacker would run: the pickles name only globals that the restricted unpickler allows, or the
canary ``os.system`` call that must never run.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

# ----------------------------------------------------------------------------- pickles


class StorageRef:
    """Pickled as the persistent id ``('storage', torch.<stype>, key, 'cpu', numel)``."""

    def __init__(self, key: str, numel: Any, stype: str = "FloatStorage") -> None:
        self.key, self.numel, self.stype = key, numel, stype


class TensorRef:
    """Pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``, with any
    size, stride and offset (even ones torch itself would never write)."""

    def __init__(self, storage: StorageRef, size: Any, stride: Any, offset: Any = 0) -> None:
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self) -> tuple[Any, ...]:
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, StorageRef):
            return ("storage", getattr(torch, obj.stype), obj.key, "cpu", obj.numel)
        return None


def dumps(obj: Any) -> bytes:
    """Protocol-2 pickle of ``obj`` (as torch.save writes), with StorageRef persistent ids."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


@contextlib.contextmanager
def official_classes() -> Iterator[types.ModuleType]:
    """A temporary ``models.common`` module whose classes pickle as official module classes."""
    names = ("models", "models.common")
    assert not any(n in sys.modules for n in names)
    mods = {n: types.ModuleType(n) for n in names}
    sys.modules.update(mods)
    try:
        yield mods["models.common"]
    finally:
        for n in names:
            sys.modules.pop(n, None)


def module_obj(common: types.ModuleType, cls_name: str, **state: Any) -> Any:
    """An instance of ``models.common.<cls_name>`` whose pickled state is ``state``."""
    cls = getattr(common, cls_name, None)
    if cls is None:
        cls = type(cls_name, (), {"__module__": "models.common"})
        setattr(common, cls_name, cls)
    obj = cls.__new__(cls)
    base = {
        "training": False,
        "_parameters": OrderedDict(),
        "_buffers": OrderedDict(),
        "_modules": OrderedDict(),
    }
    obj.__dict__.update({**base, **state})
    return obj


def shared_nest(width: int, depth: int, kind: type = list) -> Any:
    """``kind`` nested ``depth`` deep, each level holding the level below ``width`` times: a few
    hundred bytes pickled (memo references), ``width ** depth`` leaves when expanded."""
    x: Any = kind([0])
    for _ in range(depth):
        x = kind([x] * width)
    return x


def _deep_lists(depth: int) -> bytes:
    # x on the stack; per level: memoise x, pop it, push [x] (EMPTY_LIST, LONG_BINGET, APPEND)
    out = bytearray()
    for _ in range(depth):
        out += b"r" + struct.pack("<I", 1)  # LONG_BINPUT 1: memo[1] = x ; stack keeps x
        out += b"0"  # POP x
        out += b"]j" + struct.pack("<I", 1) + b"a"  # EMPTY_LIST, LONG_BINGET 1, APPEND
    return bytes(out)


def deep_tuple_opcodes(depth: int) -> bytes:
    """Opcodes leaving ``((((0,),),),...)`` nested ``depth`` deep on the stack."""
    return b"K\x00" + b"\x85" * depth  # BININT1 0, then TUPLE1 depth times


def deep_list_opcodes(depth: int) -> bytes:
    """Opcodes leaving ``[[[...[0]...]]]`` nested ``depth`` deep on the stack."""
    return b"K\x00" + _deep_lists(depth)


def root_dict_with(key: str, value_opcodes: bytes) -> bytes:
    """A protocol-2 pickle ``{key: <value>}`` with the value given as raw opcodes."""
    k = key.encode()
    return b"\x80\x02}X" + struct.pack("<I", len(k)) + k + value_opcodes + b"s."


def nested_modules(depth: int) -> bytes:
    """A ``models.common.M`` module tree ``depth`` deep, one child per level, written as
    opcodes (the stdlib pickler would recurse ``depth`` deep)."""
    gl = b"cmodels.common\nM\n"
    empty_od = b"ccollections\nOrderedDict\n)R"

    def module(child: bytes | None) -> bytes:
        mods = empty_od + (b"X\x01\x00\x00\x000" + child + b"s" if child is not None else b"")
        return (
            gl
            + b")\x81}(X\x08\x00\x00\x00training\x89X\x0b\x00\x00\x00_parameters"
            + empty_od
            + b"X\x08\x00\x00\x00_buffers"
            + empty_od
            + b"X\x08\x00\x00\x00_modules"
            + mods
            + b"ub"
        )

    # innermost first, each level memoised and fetched by the next: iterative, linear size
    out = bytearray(module(None)) + b"r" + struct.pack("<I", 0) + b"0"
    for i in range(1, depth):
        out += module(b"j" + struct.pack("<I", i - 1)) + b"r" + struct.pack("<I", i) + b"0"
    body = bytes(out) + b"j" + struct.pack("<I", depth - 1)
    return b"\x80\x02}(X\x05\x00\x00\x00model" + body + b"u."


# ----------------------------------------------------------------------------- zips


def torch_zip(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None) -> Path:
    """A torch-style zip checkpoint: ``archive/data.pkl``, ``archive/data/<key>``, version."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        for key, data in (records or {}).items():
            zf.writestr(f"archive/data/{key}", data)
        zf.writestr("archive/version", "3\n")
    return path


def deflate_zeros(n_bytes: int, chunk: int = 1 << 20) -> bytes:
    """A raw deflate stream of ``n_bytes`` zero bytes, made without compressing them all: after a
    full flush the compressor's output for the same chunk repeats byte for byte."""
    assert n_bytes % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    c.compress(b"")
    first = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()
    d = zlib.decompressobj(-15)
    assert len(d.decompress(first + again + tail)) == 2 * chunk  # the repetition is valid deflate
    return again * (n_bytes // chunk) + tail


def raw_zip(path: Path, entries: list[tuple[str, bytes, int, int]]) -> Path:
    """A zip written by hand: ``(name, raw_data, method, declared_size)`` per entry, where
    ``raw_data`` is stored as is (already compressed for method 8) and the declared size and
    CRC may lie. Sizes under 4 GiB (no zip64)."""
    buf = bytearray()
    central = bytearray()
    for name, raw, method, size in entries:
        nb = name.encode()
        crc = zlib.crc32(raw) if method == 0 else 0
        offset = len(buf)
        buf += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(raw), size, len(nb), 0
        )
        buf += nb + raw
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            method,
            0,
            0x21,
            crc,
            len(raw),
            size,
            len(nb),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += nb
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(buf), 0)
    path.write_bytes(bytes(buf + central + end))
    return path
