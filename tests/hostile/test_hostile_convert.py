"""``yoloattn convert`` on hostile checkpoints: each is refused with one line naming the file,
within 60 s and 2 GB, without running anything from the file and without writing an output.

Every case is a small file (a few KB, at most ~2 MB) whose naive reading costs gigabytes or
hours: expansion of memo-shared containers, hashing of shared tuples, deflate bombs, tensor
views larger than their storage, deep nesting.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hostile_harness import check_refused
from hostile_inputs import (
    StorageRef,
    TensorRef,
    deep_list_opcodes,
    deep_tuple_opcodes,
    deflate_zeros,
    dumps,
    module_obj,
    nested_modules,
    official_classes,
    raw_zip,
    root_dict_with,
    shared_nest,
    torch_zip,
)

F32 = bytes(16)  # the record of a 4-element float32 storage


def _weight() -> TensorRef:
    return TensorRef(StorageRef("0", 4), (4,), (1,))


def _model_with(**state: object) -> bytes:
    """``{'model': models.common.Model(..., one parameter, **state)}`` pickled."""
    with official_classes() as common:
        model = module_obj(common, "Model", _parameters=OrderedDict(w=_weight()), **state)
        return dumps({"model": model})


# ----------------------------------------------------------------------------- case builders


def shared_list_in_epoch(d: Path) -> Path:
    return torch_zip(d / "c.pt", dumps({"epoch": shared_nest(9, 9)}))


def shared_list_in_yaml(d: Path) -> Path:
    return torch_zip(d / "c.pt", _model_with(yaml={"nc": 3, "backbone": shared_nest(9, 9)}), {"0": F32})


def shared_list_in_names(d: Path) -> Path:
    return torch_zip(d / "c.pt", _model_with(names=shared_nest(9, 9)), {"0": F32})


def self_referencing_list(d: Path) -> Path:
    loop: list = []
    loop += [loop, loop]  # only 50 levels deep, but 2**50 paths
    return torch_zip(d / "c.pt", dumps({"epoch": loop}))


def shared_module_tree(d: Path) -> Path:
    with official_classes() as common:
        node = module_obj(common, "Conv", _parameters=OrderedDict(w=_weight()))
        for _ in range(9):
            node = module_obj(common, "C3", _modules=OrderedDict((str(i), node) for i in range(9)))
        return torch_zip(d / "c.pt", dumps({"model": node}), {"0": F32})


def deep_module_tree(d: Path) -> Path:
    return torch_zip(d / "c.pt", nested_modules(3000))


def deep_list(d: Path) -> Path:
    return torch_zip(d / "c.pt", root_dict_with("epoch", deep_list_opcodes(100_000)))


def _tuple_opcodes() -> bytes:
    """Opcodes pushing a tuple shared 9 ways and nested 12 deep (hashing it visits 9**12 leaves;
    the opcodes are written directly: building the dict or set here would hash it)."""
    return dumps(shared_nest(9, 12, tuple))[2:-1]


def shared_tuple_as_key(d: Path) -> Path:
    return torch_zip(d / "c.pt", root_dict_with("model", b"}" + _tuple_opcodes() + b"K\x01s"))


def deep_tuple_as_key(d: Path) -> Path:
    data = root_dict_with("model", b"}" + deep_tuple_opcodes(200_000) + b"K\x01s")
    return torch_zip(d / "c.pt", data)


def shared_tuples_in_set(d: Path) -> Path:
    data = root_dict_with("model", b"cbuiltins\nset\n]" + _tuple_opcodes() + b"a\x85R")
    return torch_zip(d / "c.pt", data)


def shared_tuples_in_frozenset_newobj(d: Path) -> Path:
    data = root_dict_with("model", b"cbuiltins\nfrozenset\n" + _tuple_opcodes() + b"\x85\x85\x81")
    return torch_zip(d / "c.pt", data)


def shared_tuple_in_storage_id(d: Path) -> Path:  # an error message must not repr it in full
    data = dumps({"model": {"w": TensorRef(StorageRef("0", shared_nest(9, 12, tuple)), (4,), (1,))}})
    return torch_zip(d / "c.pt", data, {"0": F32})


def stride0_1gib(d: Path) -> Path:
    path = d / "c.pt"
    torch.save({"model": {"w": torch.zeros(1).expand(2**28)}}, path)
    return path


def stride0_1e12(d: Path) -> Path:
    path = d / "c.pt"
    torch.save({"model": {"w": torch.zeros(1).expand(10**6, 10**6)}}, path)
    return path


def many_expanded_views(d: Path) -> Path:
    st = StorageRef("0", 4)
    args = TensorRef(st, (2**16,), (0,)).args  # every view shares its arguments: 8 bytes each
    views = []
    for _ in range(20_000):
        t = TensorRef.__new__(TensorRef)
        t.args = args
        views.append(t)
    return torch_zip(d / "c.pt", dumps({"model": {"views": views}}), {"0": F32})


def deflate_bomb_record(d: Path) -> Path:
    n = 2**31 - 2**20
    pkl = dumps({"model": {"w": TensorRef(StorageRef("0", n // 4), (n // 4,), (1,))}})
    return raw_zip(
        d / "c.pt", [("archive/data.pkl", pkl, 0, len(pkl)), ("archive/data/0", deflate_zeros(n), 8, n)]
    )


def deflate_bomb_pickle(d: Path) -> Path:
    n = 2**31 - 2**20
    return raw_zip(d / "c.pt", [("archive/data.pkl", deflate_zeros(n), 8, n)])


def deflate_bomb_byteorder(d: Path) -> Path:
    n = 2**31 - 2**20
    pkl = dumps({"model": None})
    entries = [("archive/data.pkl", pkl, 0, len(pkl)), ("archive/byteorder", deflate_zeros(n), 8, n)]
    return raw_zip(d / "c.pt", entries)


def record_with_bad_crc(d: Path) -> Path:
    pkl = dumps({"model": {"w": _weight()}})
    path = raw_zip(d / "c.pt", [("archive/data.pkl", pkl, 0, len(pkl)), ("archive/data/0", F32, 0, 16)])
    data = bytearray(path.read_bytes())
    crc_at = data.index(b"archive/data/0") - 30 + 14  # the local header's CRC field
    data[crc_at : crc_at + 4] = b"\x01\x02\x03\x04"
    data[data.rindex(b"archive/data/0") - 46 + 16 : data.rindex(b"archive/data/0") - 46 + 20] = (
        b"\x01\x02\x03\x04"
    )
    path.write_bytes(bytes(data))
    return path


def unknown_compression(d: Path) -> Path:
    pkl = dumps({"model": None})
    return raw_zip(d / "c.pt", [("archive/data.pkl", pkl, 99, len(pkl))])


def truncated_zip(d: Path) -> Path:
    src = torch_zip(d / "full.pt", dumps({"model": {"w": _weight()}}), {"0": F32})
    path = d / "c.pt"
    path.write_bytes(src.read_bytes()[:-30])  # the end of the central directory is cut
    return path


def directory(d: Path) -> Path:
    path = d / "c.pt"
    path.mkdir()
    return path


def _tiny_cfg(backbone: list) -> dict:
    anchors = [[10, 13, 16, 30, 33, 23]]
    return {
        "nc": 1,
        "anchors": anchors,
        "backbone": backbone,
        "head": [[[-1], 1, "Detect", ["nc", "anchors"]]],
    }


def wide_config(d: Path) -> Path:  # 2.4 GB of weights to allocate for a checkpoint of 16 bytes
    cfg = _tiny_cfg([[-1, 1, "Conv", [8192, 3, 2]], [-1, 1, "Conv", [8192, 3, 2]]])
    return torch_zip(d / "c.pt", _model_with(yaml=cfg), {"0": F32})


def repeated_config(d: Path) -> Path:  # ten million blocks to build for one tensor
    cfg = _tiny_cfg([[-1, 1, "Conv", [16, 3, 2]], [-1, 10**7, "C3", [16]]])
    return torch_zip(d / "c.pt", _model_with(yaml=cfg), {"0": F32})


def os_system_canary(d: Path) -> Path:
    canary = d / "CANARY"
    cmd = f"touch {canary}".encode()
    data = (
        b"\x80\x02}X\x05\x00\x00\x00modelcos\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85Rs."
    )
    return torch_zip(d / "c.pt", data)


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    # name: (builder, words the one-line answer must contain)
    "shared-list-in-epoch": (shared_list_in_epoch, "too large"),
    "shared-list-in-yaml": (shared_list_in_yaml, "too large"),
    "shared-list-in-names": (shared_list_in_names, "too large"),
    "self-referencing-list": (self_referencing_list, "deep"),
    "shared-module-tree": (shared_module_tree, "too large"),
    "deep-module-tree": (deep_module_tree, "deep"),
    "deep-list": (deep_list, "deep"),
    "shared-tuple-as-key": (shared_tuple_as_key, "key"),
    "deep-tuple-as-key": (deep_tuple_as_key, "key"),
    "shared-tuples-in-set": (shared_tuples_in_set, "item"),
    "frozenset-by-newobj": (shared_tuples_in_frozenset_newobj, "NEWOBJ"),
    "shared-tuple-in-storage-id": (shared_tuple_in_storage_id, "storage"),
    "stride0-2**28": (stride0_1gib, "MB"),
    "stride0-1e6x1e6": (stride0_1e12, "MB"),
    "20000-expanded-views": (many_expanded_views, "MB"),
    "deflate-bomb-record": (deflate_bomb_record, "MB"),
    "deflate-bomb-pickle": (deflate_bomb_pickle, "data.pkl"),
    "deflate-bomb-byteorder": (deflate_bomb_byteorder, "byteorder"),
    "bad-crc": (record_with_bad_crc, "CRC"),
    "unknown-compression": (unknown_compression, "compression"),
    "truncated-zip": (truncated_zip, "zip"),
    "directory": (directory, "not a file"),
    "wide-config": (wide_config, "does not fit"),
    "repeated-config": (repeated_config, "blocks"),
    "os-system-canary": (os_system_canary, "os.system"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_convert_refuses_hostile_checkpoint(runner, tmp_path, name):
    build, words = CASES[name]
    path = build(tmp_path)
    assert not path.is_file() or path.stat().st_size < 3 * 2**20  # small files, big costs
    before = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    out = tmp_path / "out.safetensors"
    r = runner.run(["convert", str(path), "-o", str(out)], cwd=tmp_path)
    assert check_refused(r, path) == [], r
    assert re.search(re.escape(words), r.stderr, re.IGNORECASE), r
    assert not (tmp_path / "CANARY").exists()  # nothing from the file ran
    assert not out.exists() and not out.with_suffix(".json").exists()  # nothing half-written
    after = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    assert after == before  # the input is untouched
