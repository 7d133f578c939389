"""The restricted unpickler of :mod:`yoloattn.models.official_pickle`.

:func:`scan_pickle` checks the opcode stream before anything is unpickled (refusing opcodes that
call or import outside ``find_class`` and globals outside the policy of
:mod:`yoloattn.models.pickle_policy`); :class:`RestrictedUnpickler` narrows the pure-Python
unpickler's dispatch table (``BUILD`` only on placeholders, dict keys and set items checked
before hashing, ``NEWOBJ`` only for placeholders) and resolves globals through the allow-list;
:func:`safe_loads` does both and turns every failure into an :class:`UnsafePickleError`.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from yoloattn.models.pickle_policy import (
    _ALLOWED,
    PLACEHOLDER_MODULES,
    CheckpointError,
    Placeholder,
    UnsafePickleError,
    _brief,
    _Budget,
    _check_hashable,
    _in_namespace,
    _items,
    _Storage,
    _StorageType,
)

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
