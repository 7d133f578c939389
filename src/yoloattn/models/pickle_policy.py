"""The allow-list policy behind :mod:`yoloattn.models.official_pickle`: what a checkpoint's
pickle may name, and the inert or bounded objects it gets instead.

- :class:`CheckpointError` / :class:`UnsafePickleError` and the limits on a checkpoint's cost
  (:data:`MEMORY_FLOOR`, :data:`MEMORY_PER_FILE_BYTE`, :data:`MAX_VISITS`, :data:`MAX_DEPTH`,
  :data:`MAX_KEY_ITEMS`) with the budget that enforces them;
- :class:`Placeholder`, the inert stand-in for classes of the official code and torch layers
  (:data:`PLACEHOLDER_MODULES`);
- our own re-implementations of torch's tensor-rebuild functions (``as_strided`` + ``clone``
  of bytes read from the archive, charged to the budget) and a few harmless builtins whose
  dict keys / set items are checked before they are hashed;
- ``_ALLOWED``: the globals a pickle may resolve to.

The opcode scan and the unpickler using this policy live in
:mod:`yoloattn.models.restricted_unpickler`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: malformed, or beyond the limits on its cost."""


class UnsafePickleError(CheckpointError):
    """The pickle names something outside the allow-list; nothing from it was executed."""


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
