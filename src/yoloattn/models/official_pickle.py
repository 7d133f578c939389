"""Read official YOLOv5/YOLOv7 and ultralytics YOLOv8/YOLO11 ``.pt`` checkpoints without running
any of their code.

An official checkpoint is a torch zip archive: ``<prefix>/data.pkl`` pickles a dict such as
``{'model': <models.yolo.Model>, 'ema': ..., 'epoch': ..., ...}`` (ultralytics:
``{'model': <ultralytics.nn.tasks.DetectionModel>, 'ema': None, 'version': ..., 'train_args': {...},
...}``) and every tensor's bytes are
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
   the official code and torch layers (``models.*``, ``utils.*``, ``ultralytics.*``,
   ``torch.nn.modules.*``, ``numpy.*`` scalars, ...), which record their pickled state and never
   touch the real class;
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

import logging
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# the names below are re-exported: callers and tests import them from here
from yoloattn.models.config import TOP_LEVEL_KEYS
from yoloattn.models.pickle_policy import (  # noqa: F401
    MAX_DEPTH,
    MAX_KEY_ITEMS,
    MAX_VISITS,
    MEMORY_FLOOR,
    MEMORY_PER_FILE_BYTE,
    PLACEHOLDER_MODULES,
    CheckpointError,
    Placeholder,
    UnsafePickleError,
    _brief,
    _Budget,
)
from yoloattn.models.restricted_unpickler import (  # noqa: F401
    RestrictedUnpickler,
    classify_global,
    safe_loads,
    scan_pickle,
)

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


#: largest ``data.pkl`` read (official YOLOv5x with its EMA copy: ~0.4 MB).
MAX_PICKLE_BYTES = 16 * 2**20


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
        for k in ("epoch", "best_fitness", "date", "updates", "git", "version"):
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
    if cfg is not None:
        # tool-specific keys of a foreign config (ultralytics' ``channels``, ``kpt_shape``, ...)
        # describe nothing we build: drop them, and say so, rather than refuse the checkpoint
        extra = sorted(str(k) for k in cfg if k not in TOP_LEVEL_KEYS)
        if extra:
            LOGGER.info("%s: config keys %s are not used by yoloattn; dropped", path, extra)
            source["dropped_config_keys"] = extra
            cfg = {k: v for k, v in cfg.items() if k in TOP_LEVEL_KEYS}
    if isinstance(model, Placeholder):
        source["class"] = model.qualname()
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in state.values()})
    source["dtypes"] = dtypes
    LOGGER.debug("official checkpoint %s: %d tensors from %s (%s)", path, len(state), which, dtypes)
    return OfficialCheckpoint(state, cfg, names, nc, source)
