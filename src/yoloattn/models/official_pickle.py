"""Read official YOLOv5/YOLOv7 ``.pt`` checkpoints without running any of their code.

An official checkpoint is a torch zip archive: ``<prefix>/data.pkl`` pickles a dict such as
``{'model': <models.yolo.Model>, 'ema': ..., 'epoch': ..., ...}`` and every tensor's bytes are
stored in ``<prefix>/data/<key>`` records, referenced from the pickle by persistent ids
``('storage', <storage type>, key, location, numel)``. Plain ``pickle``/``torch.load`` would
import the ``models.*`` package of the official repository and may execute whatever callable
the pickle names; torch's weights-only loader instead refuses the model classes altogether.

:class:`RestrictedUnpickler` walks a middle path:

1. Before anything is unpickled, the opcode stream is scanned (``pickletools.genops``): opcodes
   that call or import outside ``find_class`` (``INST``, ``OBJ``, ``EXT1/2/4``, text
   ``PERSID``, out-of-band buffers) are refused, and every ``GLOBAL`` target is checked against
   the policy below. The error names what was found.
2. ``find_class`` resolves a global only to (a) inert placeholder classes for module classes of
   the official code and torch layers (``models.*``, ``utils.*``, ``torch.nn.modules.*``,
   ``numpy.*`` scalars, ...), which record their pickled state and never touch the real class;
   (b) our own re-implementations of the torch tensor-rebuild functions, which only reshape
   bytes read from the archive (``as_strided`` + ``clone``); (c) a few harmless builtins
   (``OrderedDict``, ``set``, ``frozenset``, ``slice``, ``complex``, ``bytearray``, torch dtypes,
   ``torch.Size``, ``torch.device``). Anything else (``os.system``, ``builtins.eval``,
   ``subprocess.Popen``, ...) raises :class:`UnsafePickleError` before it can be called.
3. ``BUILD`` (setting an object's state) is allowed only on placeholders (and ignored for
   ``OrderedDict`` state dicts, whose ``_metadata`` is dropped), so a pickle cannot set
   attributes of the allowed functions or classes.

:func:`load_official_checkpoint` then extracts the state dict by walking the placeholders'
``_modules`` / ``_parameters`` / ``_buffers`` (preferring ``ema`` over ``model`` as the
official loaders do) and recovers ``yaml``, ``names`` and ``nc`` where present.

**Bounded cost.** A hostile file of a few KB must be answered within seconds and a bounded
amount of memory, with one :class:`CheckpointError` (a ``ValueError``) naming the file:

- zip records are checked against their *declared* size before anything is decompressed and
  then read with a cap (``data.pkl`` at most :data:`MAX_PICKLE_BYTES`; a storage record exactly
  the bytes its tensor storage needs), so a deflate bomb is never expanded;
- every byte read from storage records and every byte of a rebuilt tensor is charged to a
  budget of :data:`MEMORY_FLOOR` + :data:`MEMORY_PER_FILE_BYTE` x the file size, so views
  larger than their storage (zero strides: ``expand``) cannot allocate gigabytes;
- dict keys and set items are checked before they are hashed (at most
  :data:`MAX_KEY_ITEMS` items, :data:`MAX_DEPTH` levels): hashing a memo-shared tuple would
  otherwise visit ``width ** depth`` leaves;
- extraction (state dict, ``yaml``, ``names``, ...) visits at most :data:`MAX_VISITS` objects
  and :data:`MAX_DEPTH` levels, so containers shared through the memo (a "billion laughs")
  are not expanded, and error messages show bounded summaries of the values they name.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import pickletools
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "UnsafePickleError",
    "Placeholder",
    "RestrictedUnpickler",
    "safe_loads",
    "read_torch_zip",
    "OfficialCheckpoint",
    "load_official_checkpoint",
    "extract_state_dict",
]

LOGGER = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: malformed, or beyond the limits on its cost."""


class UnsafePickleError(CheckpointError):
    """The pickle names something outside the allow-list; nothing from it was executed."""


#: largest ``data.pkl`` read (official YOLOv5x with its EMA copy: ~0.4 MB).
MAX_PICKLE_BYTES = 16 * 2**20
#: tensor bytes read and rebuilt: this floor plus MEMORY_PER_FILE_BYTE bytes per byte of the file.
MEMORY_FLOOR = 256 * 2**20
MEMORY_PER_FILE_BYTE = 4
#: objects visited while extracting the state dict and the plain values (official: ~10k).
MAX_VISITS = 200_000
#: nesting of modules and of plain values (official: < 10).
MAX_DEPTH = 100
#: items of one dict key or set item, nested tuples included (official: 1).
MAX_KEY_ITEMS = 1000
_MAX_DIMS = 64
_MAX_INDEX = 2**62


def _brief(obj: Any) -> str:
    """A short repr (at most 200 characters): never expands memo-shared containers or giant ints."""
    text = _brief_at(obj, 0)
    return text if len(text) <= 200 else text[:196] + " ..."


def _brief_at(obj: Any, depth: int) -> str:
    if isinstance(obj, (str, bytes, bytearray)):
        return repr(obj[:60]) + ("..." if len(obj) > 60 else "")
    if isinstance(obj, int) and not isinstance(obj, bool):
        return repr(obj) if abs(obj) < 10**30 else f"<int of {obj.bit_length()} bits>"
    if obj is None or isinstance(obj, (bool, float, complex, torch.dtype)):
        return repr(obj)
    if isinstance(obj, (list, tuple, set, frozenset, dict)):
        if depth >= 2:
            return f"<{type(obj).__name__} of {len(obj)}>"
        if isinstance(obj, dict):
            items = islice(obj.items(), 4)
            parts = [f"{_brief_at(k, depth + 1)}: {_brief_at(v, depth + 1)}" for k, v in items]
        else:
            parts = [_brief_at(v, depth + 1) for v in islice(obj, 4)]
        more = ", ..." if len(obj) > 4 else ""
        left, right = "[]" if isinstance(obj, list) else "()" if isinstance(obj, tuple) else "{}"
        return f"{left}{', '.join(parts)}{more}{right}"
    if isinstance(obj, (Placeholder, torch.device, _StorageType)):
        return repr(obj)[:100]
    if isinstance(obj, type) and issubclass(obj, Placeholder):
        return f"<class {obj.qualname()}>"[:100]
    if callable(obj):  # an allowed global: named as the pickle names it
        name = next((f"{m}.{n}" for (m, n), v in _ALLOWED.items() if v is obj), None)
        return f"<{name or getattr(obj, '__qualname__', type(obj).__name__)}>"[:100]
    return f"<{type(obj).__name__}>"


class _Budget:
    """What one checkpoint may cost: bytes of tensor data and objects visited."""

    def __init__(self, max_bytes: int = MEMORY_FLOOR, max_visits: int = MAX_VISITS) -> None:
        self.max_bytes, self.max_visits = max_bytes, max_visits
        self.bytes = self.visits = 0

    def take_bytes(self, n: int, what: str) -> None:
        if self.bytes + n > self.max_bytes:
            raise CheckpointError(
                f"{what} needs {n / 2**20:,.1f} MB, which would bring the tensor data read to more than "
                f"{self.max_bytes / 2**20:,.0f} MB ({MEMORY_FLOOR >> 20} MB + {MEMORY_PER_FILE_BYTE} bytes "
                "per byte of the file): the file describes far more data than it holds"
            )
        self.bytes += n

    def visit(self) -> None:
        self.visits += 1
        if self.visits > self.max_visits:
            raise CheckpointError(
                f"the checkpoint's objects are too large once expanded: more than {self.max_visits:,} "
                "objects visited while extracting (containers shared through pickle memo references)"
            )


# ----------------------------------------------------------------------------- placeholders


class Placeholder:
    """Inert stand-in for a class of the pickling program; records what the pickle gives it.

    ``_pickle_module`` / ``_pickle_name`` name the original class, ``_pickle_args`` holds the
    constructor arguments of a REDUCE/NEWOBJ, ``_state`` the BUILD state (a dict for modules).
    """

    _pickle_module = "?"
    _state: dict[str, Any]
    _pickle_args: tuple[Any, ...]
    _pickle_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_pickle_args", args)
        object.__setattr__(obj, "_pickle_kwargs", kwargs)
        object.__setattr__(obj, "_state", {})
        object.__setattr__(obj, "_raw_state", None)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls cls(*args)
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "_raw_state", state)
        merged: dict[str, Any] = dict(self._state)
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        for part in parts:
            if isinstance(part, dict):
                if not all(isinstance(k, str) for k in part):
                    raise UnsafePickleError(f"{self.qualname()}: object state with a non-string attribute")
                merged.update(part)
        object.__setattr__(self, "_state", merged)

    @classmethod
    def qualname(cls) -> str:
        return f"{cls._pickle_module}.{cls._pickle_name}"

    def get(self, name: str, default: Any = None) -> Any:
        return self._state.get(name, default)

    def __repr__(self) -> str:
        return f"<placeholder {self.qualname()}>"


#: module prefixes whose classes become placeholders (official repos, torch layers, numpy scalars).
PLACEHOLDER_MODULES = (
    "models",
    "utils",
    "yolo",
    "common",
    "experimental",
    "ultralytics",
    "torch.nn.modules",
    "numpy",
    "pathlib",
    "argparse",
)


def _in_namespace(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# ----------------------------------------------------------------------------- safe rebuilds

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}

_DTYPE_NAMES = {
    str(t).split(".", 1)[1]: t
    for t in (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )
}
_DTYPE_NAMES.update(
    {
        "float": torch.float32,
        "double": torch.float64,
        "half": torch.float16,
        "long": torch.int64,
        "int": torch.int32,
        "short": torch.int16,
    }
)


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: torch.dtype


@dataclass
class _Storage:
    """Bytes of one archive record viewed as a flat tensor of the storage dtype; rebuilds from
    it are charged to ``budget``."""

    flat: torch.Tensor
    key: str
    budget: _Budget = field(default_factory=_Budget)


def _indices(v: Any, name: str) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or len(v) > _MAX_DIMS:
        raise UnsafePickleError(f"tensor rebuild: bad {name} {_brief(v)} (expected at most {_MAX_DIMS} ints)")
    if not all(isinstance(s, int) and 0 <= s < _MAX_INDEX for s in v):
        raise UnsafePickleError(f"tensor rebuild: bad {name} {_brief(v)}")
    return tuple(int(s) for s in v)


def _as_tensor(
    storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``storage`` viewed with ``size``/``stride``/``offset``, copied: the view must lie inside
    the storage and its copy must fit the budget (a zero stride repeats one element)."""
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"tensor rebuild got {type(storage).__name__} instead of an archive storage")
    shape, strides = _indices(size, "size"), _indices(stride, "stride")
    if not isinstance(offset, int) or not 0 <= offset < _MAX_INDEX or len(shape) != len(strides):
        raise UnsafePickleError(
            f"tensor rebuild: bad offset/size/stride {_brief(offset)} {_brief(size)} {_brief(stride)}"
        )
    flat = storage.flat
    if dtype is not None and dtype != flat.dtype:
        if flat.dtype != torch.uint8:
            raise UnsafePickleError(f"tensor rebuild: storage dtype {flat.dtype} != requested {dtype}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if flat.numel() % itemsize:
            raise UnsafePickleError(
                f"tensor rebuild: storage {storage.key} of {flat.numel()} bytes does not hold whole "
                f"{dtype} items"
            )
        flat = flat.view(dtype)
    numel = math.prod(shape)
    if numel:
        last = offset + sum((n - 1) * st for n, st in zip(shape, strides))
        if last >= flat.numel():
            raise UnsafePickleError(
                f"tensor rebuild: view {shape} at offset {offset} exceeds storage {storage.key} "
                f"of {flat.numel()} elements"
            )
    storage.budget.take_bytes(
        numel * flat.element_size(), f"tensor {shape} of storage {storage.key} ({flat.numel()} elements)"
    )
    try:
        return torch.as_strided(flat, shape, strides, offset).clone()
    except (RuntimeError, OverflowError) as e:  # e.g. a stride beyond int64 on a dimension of size 1
        raise UnsafePickleError(f"tensor rebuild of {shape} from storage {storage.key} failed: {e}") from e


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _as_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    return _as_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype):
        raise UnsafePickleError(f"tensor rebuild v3: dtype {dtype!r} is not a torch dtype")
    return _as_tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError(f"parameter rebuild got {type(data).__name__}, not a tensor")
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if func not in _REBUILD_FUNCS:
        raise UnsafePickleError(f"_rebuild_from_type_v2 with a non-rebuild function {_brief(func)}")
    return func(*args)


def _codecs_encode(obj: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise UnsafePickleError(f"_codecs.encode({type(obj).__name__}, {_brief(encoding)}) is not allowed")
    return obj.encode(encoding)


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls()
    raise UnsafePickleError(f"copyreg._reconstructor for non-placeholder {_brief(cls)}")


def _bytearray(*args: Any) -> bytearray:
    if len(args) > 2 or (args and not isinstance(args[0], (bytes, str))):
        raise UnsafePickleError(f"bytearray{_brief(args)} is not allowed (only from bytes or str)")
    return bytearray(*args)


def _device(*args: Any) -> torch.device:
    if not all(isinstance(a, (str, int)) for a in args):
        raise UnsafePickleError(f"torch.device{_brief(args)} is not allowed")
    return torch.device(*args)


def _check_hashable(obj: Any, what: str) -> None:
    """Refuse a dict key or set item whose hash would visit more than :data:`MAX_KEY_ITEMS`
    items or nest deeper than :data:`MAX_DEPTH` (tuple hashes are recomputed, recursively)."""
    todo: list[tuple[Any, int]] = [(obj, 0)]
    n = 0
    while todo:
        x, depth = todo.pop()
        n += 1
        if n > MAX_KEY_ITEMS or depth > MAX_DEPTH:
            raise UnsafePickleError(
                f"refused {what} {_brief(obj)}: a key of more than {MAX_KEY_ITEMS} items or "
                f"{MAX_DEPTH} levels (checkpoints use strings and numbers)"
            )
        if isinstance(x, (tuple, frozenset)):
            todo.extend((y, depth + 1) for y in x)
        elif isinstance(x, slice):
            todo.extend(((x.start, depth + 1), (x.stop, depth + 1), (x.step, depth + 1)))


def _items(items: Any, what: str) -> list[Any]:
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise UnsafePickleError(f"refused {what} from {type(items).__name__} (expected a list)")
    for x in items:
        _check_hashable(x, f"{what} item")
    return list(items)


class _Set:
    """``builtins.set`` for REDUCE: checks the items before hashing them (a class, as the
    original, so that a BUILD on it is refused as one on a type)."""

    def __new__(cls, items: Any = ()) -> set[Any]:  # type: ignore[misc]
        return set(_items(items, "set"))


class _FrozenSet:
    """``builtins.frozenset`` for REDUCE: checks the items before hashing them."""

    def __new__(cls, items: Any = ()) -> frozenset[Any]:  # type: ignore[misc]
        return frozenset(_items(items, "frozenset"))


class _OrderedDict:
    """``collections.OrderedDict`` for REDUCE: checks the keys before hashing them."""

    def __new__(cls, items: Any = ()) -> OrderedDict[Any, Any]:  # type: ignore[misc]
        out: OrderedDict[Any, Any] = OrderedDict()
        if not isinstance(items, (list, tuple)):
            raise UnsafePickleError(f"refused OrderedDict from {type(items).__name__} (expected a list)")
        for pair in items:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise UnsafePickleError(
                    f"refused OrderedDict item {_brief(pair)} (expected a key-value pair)"
                )
            _check_hashable(pair[0], "dict key")
            out[pair[0]] = pair[1]
        return out


_REBUILD_FUNCS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)

_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): _device,
    ("collections", "OrderedDict"): _OrderedDict,
    ("builtins", "set"): _Set,
    ("builtins", "frozenset"): _FrozenSet,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "object"): object,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
}
for _n, _t in _STORAGE_DTYPES.items():
    _ALLOWED[("torch", _n)] = _StorageType(_n, _t)
    _ALLOWED[("torch.storage", _n)] = _StorageType(_n, _t)
for _n, _t in _DTYPE_NAMES.items():
    _ALLOWED[("torch", _n)] = _t

_COMPAT_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

_ALLOWED_OPCODES = frozenset(
    """PROTO FRAME STOP MARK POP POP_MARK DUP INT BININT BININT1 BININT2 LONG LONG1 LONG4 STRING
    BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8 UNICODE SHORT_BINUNICODE
    BINUNICODE BINUNICODE8 FLOAT BINFLOAT NONE NEWTRUE NEWFALSE EMPTY_LIST APPEND APPENDS LIST
    EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS
    FROZENSET PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET GLOBAL STACK_GLOBAL REDUCE
    BUILD NEWOBJ NEWOBJ_EX BINPERSID""".split()
)
_STRING_OPS = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
)


def classify_global(module: str, name: str) -> str:
    """``"allowed"``, ``"placeholder"`` or ``"refused"`` for the global ``module.name``."""
    module = _COMPAT_MODULES.get(module, module)
    if (module, name) in _ALLOWED:
        return "allowed"
    if _in_namespace(module, PLACEHOLDER_MODULES) and name.isidentifier():
        return "placeholder"
    return "refused"


def _refusal(module: str, name: str, where: str) -> UnsafePickleError:
    module = _COMPAT_MODULES.get(module, module)
    return UnsafePickleError(
        f"refused global {module}.{name} {where}: it is not a tensor rebuild function, a torch "
        "layer/official model class or a plain container, so this file is not a plain checkpoint "
        "(nothing from it was executed)"
    )


def scan_pickle(data: bytes) -> list[tuple[str, str]]:
    """Check the opcode stream of ``data`` without executing it; return the globals it names.

    Raises :class:`UnsafePickleError` for an opcode outside the allow-list or a refused global.
    """
    globals_: list[tuple[str, str]] = []
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # values pushed by string/memo-get opcodes (None for anything else)
    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            if name not in _ALLOWED_OPCODES:
                raise UnsafePickleError(
                    f"refused pickle opcode {name} at byte {pos}: torch checkpoints never use it "
                    "(nothing from the file was executed)"
                )
            if name in _STRING_OPS:
                recent.append(arg)
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(int(arg or 0)))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg or 0)] = recent[-1] if recent else None
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name == "GLOBAL":
                mod, _, attr = str(arg).partition(" ")
                globals_.append((mod, attr))
                if classify_global(mod, attr) == "refused":
                    raise _refusal(mod, attr, f"at byte {pos}")
                recent.append(None)
            elif name == "STACK_GLOBAL":
                if len(recent) >= 2 and isinstance(recent[-1], str) and isinstance(recent[-2], str):
                    mod, attr = recent[-2], recent[-1]
                    globals_.append((mod, attr))
                    if classify_global(mod, attr) == "refused":
                        raise _refusal(mod, attr, f"at byte {pos}")
                recent.append(None)  # otherwise find_class checks it when it is resolved
            elif name not in ("MARK", "POP", "POP_MARK", "PROTO", "FRAME", "STOP"):
                recent.append(None)
    except UnsafePickleError:
        raise
    except Exception as e:  # malformed stream: unknown opcode byte, truncated data, ...
        raise UnsafePickleError(f"not a valid pickle stream: {e}") from e
    return globals_


def _load_build(self: Any) -> None:
    stack = self.stack
    state = stack.pop()
    inst = stack[-1]
    if type(inst) is OrderedDict:  # a pickled state_dict carries its `_metadata` attribute: dropped
        return
    if not isinstance(inst, Placeholder):
        raise UnsafePickleError(
            f"refused BUILD on {type(inst).__name__}: only placeholder objects take state"
        )
    inst.__setstate__(state)


# The opcodes that hash (dict keys, set items) check what they hash first; those that add to a
# container or build an object only take lists, dicts, sets and placeholder classes.


def _set_item(target: Any, key: Any, value: Any) -> None:
    if type(target) not in (dict, OrderedDict):
        raise UnsafePickleError(f"refused SETITEM on {type(target).__name__}: only dicts take items")
    _check_hashable(key, "dict key")
    target[key] = value


def _load_setitem(self: Any) -> None:
    value, key = self.stack.pop(), self.stack.pop()
    _set_item(self.stack[-1], key, value)


def _load_setitems(self: Any) -> None:
    items = self.pop_mark()
    target = self.stack[-1]
    for i in range(0, len(items) - 1, 2):
        _set_item(target, items[i], items[i + 1])


def _load_dict(self: Any) -> None:
    items = self.pop_mark()
    d: dict[Any, Any] = {}
    for i in range(0, len(items) - 1, 2):
        _set_item(d, items[i], items[i + 1])
    self.append(d)


def _load_additems(self: Any) -> None:
    items = self.pop_mark()
    target = self.stack[-1]
    if type(target) is not set:
        raise UnsafePickleError(f"refused ADDITEMS on {type(target).__name__}: only sets take items")
    target.update(_items(items, "set"))


def _load_frozenset(self: Any) -> None:
    items = self.pop_mark()  # first: it rebinds self.append to the enclosing stack
    self.append(frozenset(_items(items, "frozenset")))


def _load_append(self: Any) -> None:
    value = self.stack.pop()
    _target_list(self).append(value)


def _load_appends(self: Any) -> None:
    items = self.pop_mark()
    _target_list(self).extend(items)


def _target_list(self: Any) -> list[Any]:
    target = self.stack[-1]
    if type(target) is not list:
        raise UnsafePickleError(f"refused APPEND on {type(target).__name__}: only lists take items")
    return target


_NEWOBJ_TYPES = (object, complex)


def _new(self: Any, args: Any, kwargs: Any) -> None:
    cls = self.stack.pop()
    if not (isinstance(cls, type) and (issubclass(cls, Placeholder) or cls in _NEWOBJ_TYPES)):
        raise UnsafePickleError(
            f"refused NEWOBJ of {_brief(cls)}: only placeholder classes are instantiated that way"
        )
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise UnsafePickleError("refused NEWOBJ: arguments are not a tuple and a dict")
    self.append(cls.__new__(cls, *args, **kwargs))


def _load_newobj(self: Any) -> None:
    args = self.stack.pop()
    _new(self, args, {})


def _load_newobj_ex(self: Any) -> None:
    kwargs, args = self.stack.pop(), self.stack.pop()
    _new(self, args, kwargs)


_DISPATCH: dict[int, Callable[[Any], None]] = dict(pickle._Unpickler.dispatch)
for _op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.PERSID):
    _DISPATCH.pop(_op[0], None)
_DISPATCH[pickle.BUILD[0]] = _load_build
_DISPATCH[pickle.SETITEM[0]] = _load_setitem
_DISPATCH[pickle.SETITEMS[0]] = _load_setitems
_DISPATCH[pickle.DICT[0]] = _load_dict
_DISPATCH[pickle.ADDITEMS[0]] = _load_additems
_DISPATCH[pickle.FROZENSET[0]] = _load_frozenset
_DISPATCH[pickle.APPEND[0]] = _load_append
_DISPATCH[pickle.APPENDS[0]] = _load_appends
_DISPATCH[pickle.NEWOBJ[0]] = _load_newobj
_DISPATCH[pickle.NEWOBJ_EX[0]] = _load_newobj_ex


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that resolves globals only through the allow-list / placeholder policy.

    Built on the pure-Python unpickler so that its dispatch table can be narrowed: opcodes that
    import or call outside ``find_class`` are gone and ``BUILD`` only sets state on placeholders
    (never attributes of allowed functions or classes). ``storage_loader(key, dtype, numel)``
    returns the flat tensor of an archive record; without one, tensor storages are refused.
    """

    dispatch = _DISPATCH

    def __init__(
        self,
        file: io.BytesIO,
        storage_loader: Callable[[str, torch.dtype, int], torch.Tensor] | None,
        budget: _Budget | None = None,
    ):
        super().__init__(file)
        self._storage_loader = storage_loader
        self._storages: dict[str, _Storage] = {}
        self._placeholders: dict[tuple[str, str], type[Placeholder]] = {}
        self.budget = budget if budget is not None else _Budget()

    def find_class(self, module: str, name: str) -> Any:
        module = _COMPAT_MODULES.get(module, module)
        kind = classify_global(module, name)
        if kind == "allowed":
            return _ALLOWED[(module, name)]
        if kind == "placeholder":
            key = (module, name)
            cls = self._placeholders.get(key)
            if cls is None:
                cls = type(
                    name,
                    (Placeholder,),
                    {"_pickle_module": module, "_pickle_name": name, "__module__": __name__},
                )
                self._placeholders[key] = cls
            return cls
        raise _refusal(module, name, "while unpickling")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[0], str) and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {_brief(pid)}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise UnsafePickleError(f"persistent id names {_brief(stype)}, not a torch storage type")
        if not isinstance(key, str) or not key.isdigit() or not isinstance(numel, int) or numel < 0:
            raise UnsafePickleError(f"bad storage reference {_brief(pid)}")
        if self._storage_loader is None:
            raise UnsafePickleError("the pickle references tensor storages but no archive was given")
        st = self._storages.get(key)
        if st is None:
            st = _Storage(self._storage_loader(key, stype.dtype, numel), key, self.budget)
            self._storages[key] = st
        elif st.flat.dtype != stype.dtype or st.flat.numel() != numel:
            raise UnsafePickleError(
                f"storage {key} referenced as {numel} x {stype.dtype} and as "
                f"{st.flat.numel()} x {st.flat.dtype}"
            )
        return st


def safe_loads(
    data: bytes,
    storage_loader: Callable[[str, torch.dtype, int], torch.Tensor] | None = None,
    budget: _Budget | None = None,
) -> Any:
    """Scan, then unpickle ``data`` with :class:`RestrictedUnpickler` (within ``budget``)."""
    scan_pickle(data)
    try:
        return RestrictedUnpickler(io.BytesIO(data), storage_loader, budget).load()
    except CheckpointError:
        raise
    except KeyError as e:  # an opcode removed from the dispatch table
        op = bytes([e.args[0]]) if e.args and isinstance(e.args[0], int) else e
        raise UnsafePickleError(f"cannot unpickle: opcode {op!r} is not allowed") from e
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        AttributeError,
        IndexError,
        ValueError,
        RuntimeError,  # torch, and RecursionError
        OverflowError,
        MemoryError,
    ) as e:
        raise UnsafePickleError(f"cannot unpickle: {type(e).__name__}: {str(e)[:300]}") from e


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, what: str) -> bytearray:
    """Exactly ``size`` bytes of a record declared at least that long, never decompressing more
    (the CRC is checked when the record ends there)."""
    if info.file_size < size:
        raise UnsafePickleError(f"record {info.filename} has {info.file_size} bytes, need {size}")
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    with zf.open(info) as f:
        while got < size:
            chunk = f.read(min(1 << 24, size - got))
            if not chunk:
                raise CheckpointError(f"record {info.filename} ({what}) ends after {got} of {size} bytes")
            view[got : got + len(chunk)] = chunk
            got += len(chunk)
        if info.file_size == size:
            f.read(1)  # reach the end of the record: its CRC is verified
    return buf


_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    OSError,
    RuntimeError,
    MemoryError,
)


def _named(e: CheckpointError, path: Path) -> CheckpointError:
    msg = str(e)
    return e if msg.startswith(str(path)) else type(e)(f"{path}: {msg}")


def read_torch_zip(path: str | Path, budget: _Budget | None = None) -> Any:
    """Unpickle the ``data.pkl`` of a torch zip checkpoint with the restricted unpickler.

    Raises ``FileNotFoundError`` or :class:`CheckpointError` (one line naming ``path``) for a
    file that is not a readable torch checkpoint or that exceeds the reading limits.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if budget is None:
        budget = _Budget(MEMORY_FLOOR + MEMORY_PER_FILE_BYTE * path.stat().st_size)
    try:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} is not a torch zip checkpoint (torch >= 1.6 format); the legacy tar/pickle "
                "format is not supported"
            )
        with zipfile.ZipFile(path) as zf:
            return _read_archive(zf, budget)
    except CheckpointError as e:
        raise _named(e, path) from e
    except _ZIP_ERRORS as e:
        raise CheckpointError(f"{path}: cannot read the zip archive: {type(e).__name__}: {e}") from e


def _read_archive(zf: zipfile.ZipFile, budget: _Budget) -> Any:
    infos = {i.filename: i for i in zf.infolist()}
    pkl = [n for n in infos if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pkl) != 1:
        raise CheckpointError(f"expected one data.pkl in the archive, found {len(pkl)}")
    prefix = pkl[0][: -len("data.pkl")]
    order = infos.get(f"{prefix}byteorder")
    if order is not None:
        if order.file_size > 16:
            raise CheckpointError(f"record {order.filename} of {order.file_size} bytes: not a byteorder")
        if _read_capped(zf, order, order.file_size, "byteorder").decode(errors="replace").strip() not in (
            "little",
            "",
        ):
            raise CheckpointError("big-endian checkpoints are not supported")

    def load_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        info = infos.get(f"{prefix}data/{key}")
        if info is None:
            raise UnsafePickleError(f"storage record {prefix}data/{key} is missing")
        need = numel * torch.empty((), dtype=dtype).element_size()
        if info.file_size < need:
            raise UnsafePickleError(f"record {info.filename} has {info.file_size} bytes, need {need}")
        budget.take_bytes(need, f"storage record {info.filename}")
        raw = _read_capped(zf, info, need, "tensor storage")
        return torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)

    info = infos[pkl[0]]
    if info.file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"{info.filename} declares {info.file_size / 2**20:,.1f} MB, more than the "
            f"{MAX_PICKLE_BYTES >> 20} MB a checkpoint's pickle may have (official ones: < 1 MB)"
        )
    return safe_loads(bytes(_read_capped(zf, info, info.file_size, "data.pkl")), load_storage, budget)


# ----------------------------------------------------------------------------- extraction


def _is_module(obj: Any) -> bool:
    return isinstance(obj, Placeholder) and isinstance(obj.get("_modules"), dict)


def extract_state_dict(
    module: Placeholder, prefix: str = "", budget: _Budget | None = None
) -> dict[str, torch.Tensor]:
    """State dict of a placeholder module tree (parameters, persistent buffers, in order).

    Visits at most ``budget.max_visits`` modules and tensors (a module shared by several parents
    is visited once per path, as ``state_dict`` lists it once per path) and :data:`MAX_DEPTH`
    levels; raises :class:`CheckpointError` beyond them, for a cycle or a malformed module.
    """
    out: dict[str, torch.Tensor] = {}
    _walk(module, prefix, out, set(), budget if budget is not None else _Budget(), 0)
    return out


def _walk(
    module: Placeholder,
    prefix: str,
    out: dict[str, torch.Tensor],
    active: set[int],
    budget: _Budget,
    depth: int,
) -> None:
    where = prefix or "<root>"
    if depth > MAX_DEPTH:
        raise CheckpointError(f"module tree nested more than {MAX_DEPTH} deep at {where[:200]}")
    if id(module) in active:
        raise CheckpointError(f"module tree has a cycle at {where[:200]}")
    budget.visit()
    active.add(id(module))
    non_persistent = module.get("_non_persistent_buffers_set")
    if non_persistent is None:
        non_persistent = set()
    elif not isinstance(non_persistent, (set, frozenset, list, tuple)):
        raise CheckpointError(f"{module.qualname()} at {where}: _non_persistent_buffers_set is not a set")
    for group in ("_parameters", "_buffers"):
        items = module.get(group)
        if items is None:
            continue
        if not isinstance(items, dict):
            raise CheckpointError(f"{module.qualname()} at {where}: {group} is not a dict")
        for name, t in items.items():
            budget.visit()
            if not isinstance(name, str):
                raise CheckpointError(
                    f"{module.qualname()} at {where}: {group} key {_brief(name)} not a string"
                )
            if t is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(t, torch.Tensor):
                raise CheckpointError(f"{prefix}{name}: expected a tensor, found {type(t).__name__}")
            out[prefix + name] = t
    children = module.get("_modules")
    for name, child in children.items() if isinstance(children, dict) else ():
        if child is None:
            continue
        if not isinstance(name, str):
            raise CheckpointError(f"{module.qualname()} at {where}: module key {_brief(name)} not a string")
        if not _is_module(child):
            raise CheckpointError(f"{prefix}{name}: expected a module, found {_brief(child)}")
        _walk(child, f"{prefix}{name}.", out, active, budget, depth + 1)
    active.discard(id(module))


@dataclass
class OfficialCheckpoint:
    """What :func:`load_official_checkpoint` recovered from an official ``.pt`` file."""

    state_dict: dict[str, torch.Tensor]
    cfg: dict[str, Any] | None = None
    names: list[str] | None = None
    nc: int | None = None
    source: dict[str, Any] = field(default_factory=dict)


def _plain(obj: Any, budget: _Budget, depth: int = 0) -> Any:
    """Plain JSON/YAML-safe copy of a pickled value (placeholders, tensors and integers beyond
    64 bits become None), visiting at most the budget's objects and :data:`MAX_DEPTH` levels."""
    budget.visit()
    if depth > MAX_DEPTH:
        raise CheckpointError(f"values nested more than {MAX_DEPTH} deep")
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj if -(2**63) <= obj < 2**64 else None
    if obj is None or isinstance(obj, (bool, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_plain(v, budget, depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {
            (k if isinstance(k, (str, int)) else _brief(k)): _plain(v, budget, depth + 1)
            for k, v in obj.items()
        }
    return None


def _names(obj: Any, budget: _Budget) -> list[str] | None:
    plain = _plain(obj, budget)
    if isinstance(plain, dict):
        try:
            values = [plain[k] for k in sorted(plain, key=int)]
        except (TypeError, ValueError):
            values = list(plain.values())
    elif isinstance(plain, list):
        values = plain
    else:
        return None
    if not all(isinstance(v, (str, int, float)) for v in values):
        LOGGER.warning("ignoring the checkpoint's class names: not a list of strings")
        return None
    return [str(v) for v in values]


def load_official_checkpoint(path: str | Path) -> OfficialCheckpoint:
    """Load an official YOLOv5/YOLOv7 ``.pt`` (or a torch-saved state dict) safely.

    Raises ``FileNotFoundError`` or :class:`CheckpointError` (a ``ValueError``) with one line
    naming ``path``.
    """
    path = Path(path)
    root = read_torch_zip(path)
    try:
        return _extract(root, path, _Budget())
    except CheckpointError as e:
        raise _named(e, path) from e
    except (RecursionError, MemoryError) as e:
        raise CheckpointError(f"{path}: cannot extract the model: {type(e).__name__}") from e


def _extract(root: Any, path: Path, budget: _Budget) -> OfficialCheckpoint:
    source: dict[str, Any] = {"file": path.name}
    model: Any = root
    which = "root"
    if isinstance(root, dict):
        for k in ("epoch", "best_fitness", "date", "updates", "git"):
            v = _plain(root.get(k), budget)
            if v is not None:
                source[k] = v
        if root.get("ema") is not None:
            model, which = root["ema"], "ema"
        elif root.get("model") is not None:
            model, which = root["model"], "model"
        elif root.get("state_dict") is not None:
            model, which = root["state_dict"], "state_dict"
    source["taken_from"] = which

    cfg = names = nc = None
    if _is_module(model):
        state = extract_state_dict(model, budget=budget)
        cfg = _plain(model.get("yaml"), budget) if isinstance(model.get("yaml"), dict) else None
        names = _names(model.get("names"), budget)
        if isinstance(model.get("nc"), int) and 0 < model.get("nc") < 2**31:
            nc = model.get("nc")
    elif isinstance(model, dict) and model and all(isinstance(v, torch.Tensor) for v in model.values()):
        state = {k if isinstance(k, str) else _brief(k): v for k, v in model.items()}
    else:
        kind = type(model).__name__ if not isinstance(model, Placeholder) else model.qualname()
        raise CheckpointError(f"found no model in the checkpoint ({which} is {kind})")
    if not state:
        raise CheckpointError("the checkpoint's model has no tensors")
    if nc is None and cfg is not None and isinstance(cfg.get("nc"), int):
        nc = cfg["nc"]
    if isinstance(model, Placeholder):
        source["class"] = model.qualname()
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in state.values()})
    source["dtypes"] = dtypes
    LOGGER.debug("official checkpoint %s: %d tensors from %s (%s)", path, len(state), which, dtypes)
    return OfficialCheckpoint(state, cfg, names, nc, source)
