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
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
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


class UnsafePickleError(ValueError):
    """The pickle names something outside the allow-list; nothing from it was executed."""


# ----------------------------------------------------------------------------- placeholders


class Placeholder:
    """Inert stand-in for a class of the pickling program; records what the pickle gives it.

    ``_pickle_module`` / ``_pickle_name`` name the original class, ``_pickle_args`` holds the
    constructor arguments of a REDUCE/NEWOBJ, ``_state`` the BUILD state (a dict for modules).
    """

    _pickle_module = "?"
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
        merged: dict[str, Any] = dict(self._state)  # type: ignore[attr-defined]
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        for part in parts:
            if isinstance(part, dict):
                merged.update({str(k): v for k, v in part.items()})
        object.__setattr__(self, "_state", merged)

    @classmethod
    def qualname(cls) -> str:
        return f"{cls._pickle_module}.{cls._pickle_name}"

    def get(self, name: str, default: Any = None) -> Any:
        return self._state.get(name, default)  # type: ignore[attr-defined]

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
    """Bytes of one archive record viewed as a flat tensor of the storage dtype."""

    flat: torch.Tensor
    key: str


def _as_tensor(
    storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None = None
) -> torch.Tensor:
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"tensor rebuild got {type(storage).__name__} instead of an archive storage")
    for name, v in (("size", size), ("stride", stride)):
        if not isinstance(v, (tuple, list)) or not all(isinstance(s, int) and s >= 0 for s in v):
            raise UnsafePickleError(f"tensor rebuild: bad {name} {v!r}")
    if not isinstance(offset, int) or offset < 0 or len(size) != len(stride):
        raise UnsafePickleError(f"tensor rebuild: bad offset/size/stride {offset!r} {size!r} {stride!r}")
    flat = storage.flat
    if dtype is not None and dtype != flat.dtype:
        if flat.dtype != torch.uint8:
            raise UnsafePickleError(f"tensor rebuild: storage dtype {flat.dtype} != requested {dtype}")
        flat = flat.view(dtype)
    numel = 1
    for s in size:
        numel *= s
    if numel:
        last = offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= flat.numel():
            raise UnsafePickleError(
                f"tensor rebuild: view {tuple(size)} at offset {offset} exceeds storage {storage.key} "
                f"of {flat.numel()} elements"
            )
    return torch.as_strided(flat, tuple(size), tuple(stride), offset).clone()


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
        raise UnsafePickleError(f"_rebuild_from_type_v2 with a non-rebuild function {func!r}")
    return func(*args)


def _codecs_encode(obj: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise UnsafePickleError(f"_codecs.encode({type(obj).__name__}, {encoding!r}) is not allowed")
    return obj.encode(encoding)


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls()
    raise UnsafePickleError(f"copyreg._reconstructor for non-placeholder {cls!r}")


def _bytearray(*args: Any) -> bytearray:
    if len(args) > 2 or (args and not isinstance(args[0], (bytes, str))):
        raise UnsafePickleError(f"bytearray{args!r:.100} is not allowed (only from bytes or str)")
    return bytearray(*args)


def _device(*args: Any) -> torch.device:
    if not all(isinstance(a, (str, int)) for a in args):
        raise UnsafePickleError(f"torch.device{args!r} is not allowed")
    return torch.device(*args)


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
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
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
                recent.append(memo.get(int(arg)))  # type: ignore[arg-type]
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = recent[-1] if recent else None  # type: ignore[arg-type]
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


def _load_build(self: RestrictedUnpickler) -> None:
    stack = self.stack  # type: ignore[attr-defined]
    state = stack.pop()
    inst = stack[-1]
    if type(inst) is OrderedDict:  # a pickled state_dict carries its `_metadata` attribute: dropped
        return
    if not isinstance(inst, Placeholder):
        raise UnsafePickleError(
            f"refused BUILD on {type(inst).__name__}: only placeholder objects take state"
        )
    inst.__setstate__(state)


_DISPATCH = dict(pickle._Unpickler.dispatch)
for _op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.PERSID):
    _DISPATCH.pop(_op[0], None)
_DISPATCH[pickle.BUILD[0]] = _load_build  # type: ignore[assignment]


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that resolves globals only through the allow-list / placeholder policy.

    Built on the pure-Python unpickler so that its dispatch table can be narrowed: opcodes that
    import or call outside ``find_class`` are gone and ``BUILD`` only sets state on placeholders
    (never attributes of allowed functions or classes). ``storage_loader(key, dtype, numel)``
    returns the flat tensor of an archive record; without one, tensor storages are refused.
    """

    dispatch = _DISPATCH

    def __init__(
        self, file: io.BytesIO, storage_loader: Callable[[str, torch.dtype, int], torch.Tensor] | None
    ):
        super().__init__(file)
        self._storage_loader = storage_loader
        self._storages: dict[str, _Storage] = {}
        self._placeholders: dict[tuple[str, str], type[Placeholder]] = {}

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
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r:.200}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise UnsafePickleError(f"persistent id names storage type {stype!r}, not a torch storage type")
        if not isinstance(key, str) or not key.isdigit() or not isinstance(numel, int) or numel < 0:
            raise UnsafePickleError(f"bad storage reference {pid!r:.200}")
        if self._storage_loader is None:
            raise UnsafePickleError("the pickle references tensor storages but no archive was given")
        st = self._storages.get(key)
        if st is None:
            st = _Storage(self._storage_loader(key, stype.dtype, numel), key)
            self._storages[key] = st
        return st


def safe_loads(
    data: bytes, storage_loader: Callable[[str, torch.dtype, int], torch.Tensor] | None = None
) -> Any:
    """Scan, then unpickle ``data`` with :class:`RestrictedUnpickler`."""
    scan_pickle(data)
    try:
        return RestrictedUnpickler(io.BytesIO(data), storage_loader).load()
    except UnsafePickleError:
        raise
    except KeyError as e:  # an opcode removed from the dispatch table
        op = bytes([e.args[0]]) if e.args and isinstance(e.args[0], int) else e
        raise UnsafePickleError(f"cannot unpickle: opcode {op!r} is not allowed") from e
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, ValueError) as e:
        raise UnsafePickleError(f"cannot unpickle: {type(e).__name__}: {e}") from e


def read_torch_zip(path: str | Path) -> Any:
    """Unpickle the ``data.pkl`` of a torch zip checkpoint with the restricted unpickler."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a torch zip checkpoint (torch >= 1.6 format); the legacy tar/pickle "
            "format is not supported"
        )
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        names = set(zf.namelist())
        order = f"{prefix}byteorder"
        if order in names and zf.read(order).decode().strip() not in ("little", ""):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")

        def load_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            rec = f"{prefix}data/{key}"
            if rec not in names:
                raise UnsafePickleError(f"{path}: storage record {rec} is missing")
            raw = bytearray(zf.read(rec))
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(raw) < numel * itemsize:
                raise UnsafePickleError(f"{path}: record {rec} has {len(raw)} bytes, need {numel * itemsize}")
            raw = raw[: numel * itemsize]
            if not raw:
                return torch.empty(0, dtype=dtype)
            return torch.frombuffer(raw, dtype=dtype)

        return safe_loads(zf.read(pkl[0]), load_storage)


# ----------------------------------------------------------------------------- extraction


def _is_module(obj: Any) -> bool:
    return isinstance(obj, Placeholder) and isinstance(obj.get("_modules"), dict)


def extract_state_dict(module: Placeholder, prefix: str = "") -> dict[str, torch.Tensor]:
    """State dict of a placeholder module tree (parameters, persistent buffers, in order)."""
    out: dict[str, torch.Tensor] = {}
    _walk(module, prefix, out, set())
    return out


def _walk(module: Placeholder, prefix: str, out: dict[str, torch.Tensor], active: set[int]) -> None:
    if id(module) in active:
        raise ValueError(f"module tree has a cycle at {prefix or '<root>'}")
    active.add(id(module))
    non_persistent = module.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        items = module.get(group) or {}
        if not isinstance(items, dict):
            raise ValueError(f"{module.qualname()} at {prefix or '<root>'}: {group} is not a dict")
        for name, t in items.items():
            if t is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{prefix}{name}: expected a tensor, found {type(t).__name__}")
            out[prefix + str(name)] = t
    for name, child in (module.get("_modules") or {}).items():
        if child is None:
            continue
        if not _is_module(child):
            raise ValueError(f"{prefix}{name}: expected a module, found {child!r}")
        _walk(child, f"{prefix}{name}.", out, active)
    active.discard(id(module))


@dataclass
class OfficialCheckpoint:
    """What :func:`load_official_checkpoint` recovered from an official ``.pt`` file."""

    state_dict: dict[str, torch.Tensor]
    cfg: dict[str, Any] | None = None
    names: list[str] | None = None
    nc: int | None = None
    source: dict[str, Any] = field(default_factory=dict)


def _plain(obj: Any, depth: int = 0) -> Any:
    """Plain JSON/YAML-safe copy of a pickled value (placeholders and tensors become None)."""
    if depth > 50:
        raise ValueError("nesting too deep")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {k if isinstance(k, (str, int)) else str(k): _plain(v, depth + 1) for k, v in obj.items()}
    return None


def _names(obj: Any) -> list[str] | None:
    if isinstance(obj, dict):
        try:
            return [str(obj[k]) for k in sorted(obj, key=int)]
        except (TypeError, ValueError):
            return [str(v) for v in obj.values()]
    if isinstance(obj, (list, tuple)):
        return [str(v) for v in obj]
    return None


def load_official_checkpoint(path: str | Path) -> OfficialCheckpoint:
    """Load an official YOLOv5/YOLOv7 ``.pt`` (or a torch-saved state dict) safely."""
    root = read_torch_zip(path)
    source: dict[str, Any] = {"file": Path(path).name}
    model: Any = root
    which = "root"
    if isinstance(root, dict):
        for k in ("epoch", "best_fitness", "date", "updates", "git"):
            v = _plain(root.get(k))
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
        state = extract_state_dict(model)
        cfg = _plain(model.get("yaml")) if isinstance(model.get("yaml"), dict) else None
        names = _names(model.get("names"))
        if isinstance(model.get("nc"), int):
            nc = model.get("nc")
    elif isinstance(model, dict) and model and all(isinstance(v, torch.Tensor) for v in model.values()):
        state = {str(k): v for k, v in model.items()}
    else:
        kind = type(model).__name__ if not isinstance(model, Placeholder) else model.qualname()
        raise ValueError(f"{path}: found no model in the checkpoint ({which} is {kind})")
    if not state:
        raise ValueError(f"{path}: the checkpoint's model has no tensors")
    if nc is None and cfg is not None and isinstance(cfg.get("nc"), int):
        nc = cfg["nc"]
    if isinstance(model, Placeholder):
        source["class"] = model.qualname()
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in state.values()})
    source["dtypes"] = dtypes
    LOGGER.debug("official checkpoint %s: %d tensors from %s (%s)", path, len(state), which, dtypes)
    return OfficialCheckpoint(state, cfg, names, nc, source)
