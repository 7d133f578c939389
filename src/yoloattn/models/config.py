"""The model config format, in one place: load, dump, rows, ``from`` sources, the Detect row.

A model config is the official YOLOv5 / YOLOv7 YAML format (``shared/spec/yolo-architectures.md``
section 2): top-level keys ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors``, ``backbone``
and ``head``, rows ``[from, number, module, args]`` numbered over ``backbone + head``. The YOLOv8 /
YOLO11 format (``shared/spec/yolov8-yolo11.md`` section 1) replaces the two multiples by
``scales`` (letter -> ``[depth, width, max_channels]``) and the chosen ``scale``: one file per
family (``yolov8.yaml``), the scale read from the model name (``yolov8n`` -> scale ``n``). This module
owns everything that reads the format without building anything; the parser
(:mod:`yoloattn.models.parse`) and the placement code (:mod:`yoloattn.models.placement`) both go
through it:

* :func:`load_config`, :func:`dump_config`, :func:`config_name`: dict <-> YAML, display names;
* :func:`config_rows`, :func:`backbone_length`: the row list and the backbone/head split;
* :func:`sources`: a row's ``from`` resolved to absolute row indices (one set of messages);
* :func:`detect_row`, :func:`detect_index`: the detection head row;
* :func:`module_name`, :func:`module_key`: module-name normalisation;
* :func:`scale_values`: depth, width and channel cap of a config (either format);
* :func:`check_top_level`: the model-level keys (``nc``, ``anchors``, ``insert``, ``gate``, ...).

Model-level keys of this toolkit besides the official ones: ``insert`` (:data:`INSERT_MODES`),
``gate`` (``scalar``/``channel``), ``attention`` (a placement spec applied at build time, see
:mod:`yoloattn.models.placement`) and ``allow_unused_rows`` (turns off the miswire check).
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from yoloattn.nn.gate import GATE_SHAPES

__all__ = [
    "SHIPPED",
    "INSERT_MODES",
    "DETECT_MODULES",
    "ConfigError",
    "load_config",
    "dump_config",
    "config_name",
    "config_rows",
    "where_of",
    "backbone_length",
    "sources",
    "detect_row",
    "detect_index",
    "module_name",
    "module_key",
    "is_int",
    "check_top_level",
    "scale_values",
    "guess_scale",
    "SCALED_FAMILIES",
    "TOP_LEVEL_KEYS",
    "MAX_MULTIPLE",
    "MAX_REPEATS",
    "MAX_CHANNELS",
]

LOGGER = logging.getLogger(__name__)

#: Families shipped as one YAML file with ``scales`` (file stem -> scale letters).
SCALED_FAMILIES: dict[str, str] = {"yolov8": "nsmlx", "yolo11": "nsmlx"}
#: ``yolov8n``, ``yolo11x-custom.yaml``: family digits then the scale letter (spec 1.1).
_SCALE_RE = re.compile(r"^(yolov?\d+)([nsmlx])(?![a-z0-9])", re.IGNORECASE)

#: the model-level keys a config may have (official ones first; see the module docstring)
TOP_LEVEL_KEYS = (
    "nc",
    "depth_multiple",
    "width_multiple",
    "anchors",
    "backbone",
    "head",
    "ch",
    "channel_multiple",
    "activation",
    "insert",
    "gate",
    "attention",
    "allow_unused_rows",
    "scales",  # YOLOv8/YOLO11: [depth, width, max_channels] per scale letter
    "scale",  # the scale letter picked from ``scales`` (read from the model name when absent)
    "yaml_file",  # ultralytics checkpoints record their source file name
)
#: limits that keep a small hostile file from costing hours or gigabytes (the shipped configs
#: stay far below: depth 1.33, width 1.25, 9 repeats, 1280 channels)
MAX_MULTIPLE = 16.0  # depth_multiple, width_multiple
MAX_REPEATS = 1000  # a row's number after depth scaling
MAX_CHANNELS = 65536  # a row's output channels after width scaling
MAX_YAML_BYTES = 4 * 2**20
_MAX_NODES = 1_000_000  # values visited with YAML aliases expanded (a "billion laughs" file)
_MAX_DEPTH = 64  # nested lists/mappings

SHIPPED = (
    "yolov5n",
    "yolov5s",
    "yolov5m",
    "yolov5l",
    "yolov5x",
    "yolov7-tiny",
    "yolov7",
    "yolov7x",
    *(f"{fam}{s}" for fam, letters in SCALED_FAMILIES.items() for s in letters),
)

#: Insertion modes of attention rows: as the paper's module (``plain``), as the identity at
#: step 0 through a zero-initialised residual gate (``identity``), or chosen from whether
#: trained weights are transferred (``auto``; see :func:`yoloattn.models.placement.resolve_insert`).
INSERT_MODES = ("auto", "identity", "plain")

#: head modules (lowercase, without an ``nn.`` prefix; see :func:`module_key`) whose ``from``
#: list defines the neck outputs.
DETECT_MODULES = frozenset({"detect", "idetect", "iauxdetect", "ibin", "segment"})


class ConfigError(ValueError):
    """A model config is invalid. ``row`` is the 0-based row index (None for top-level keys)."""

    def __init__(self, reason: str, row: int | None = None, where: str = "") -> None:
        self.row = row
        self.reason = reason
        prefix = "config" if row is None else f"row {row}" + (f" ({where})" if where else "")
        super().__init__(f"{prefix}: {reason}")


def is_int(v: Any) -> TypeGuard[int]:
    """An int that is not a bool (YAML ``true`` must not count as 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------- load / dump


def _plain(obj: Any) -> Any:
    """Deep copy with tuples turned into lists (so the config stays YAML-serialisable)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return copy.deepcopy(obj)


def _shipped_text(name: str) -> str:
    m = _SCALE_RE.match(name)
    if m is not None and m.group(1) in SCALED_FAMILIES:
        name = m.group(1)  # yolov8n -> yolov8.yaml (scale n)
    return (importlib.resources.files("yoloattn.models") / "configs" / f"{name}.yaml").read_text(
        encoding="utf-8"
    )


def guess_scale(cfg: dict[str, Any], name: str) -> None:
    """Set ``cfg['scale']`` of a ``scales`` config from the file name (``yolov8s...`` -> ``s``)
    when it has none; else the first scale, with a warning (spec 1.1)."""
    scales = cfg.get("scales")
    if not isinstance(scales, Mapping) or not scales or cfg.get("scale") is not None:
        return
    m = _SCALE_RE.match(name)
    if m is not None and m.group(2).lower() in scales:
        cfg["scale"] = m.group(2).lower()
        return
    first = next(iter(scales))
    LOGGER.warning("no model scale in %r; using the first of %s: %s", name, list(scales), first)
    cfg["scale"] = first


def scale_values(cfg: Mapping[str, Any]) -> tuple[float, float, float]:
    """``(depth, width, max_channels)``: from ``scales[scale]`` for the YOLOv8/11 format, else
    ``depth_multiple``, ``width_multiple`` and no channel cap (``inf``)."""
    scales = cfg.get("scales")
    if isinstance(scales, Mapping) and scales:
        scale = cfg.get("scale")
        if scale is None:
            scale = next(iter(scales))
        if scale not in scales:
            raise ConfigError(f"'scale' {scale!r} is not one of the config's scales {list(scales)}")
        d, w, mc = scales[scale]
        return float(d), float(w), float(mc)
    return float(cfg.get("depth_multiple", 1.0)), float(cfg.get("width_multiple", 1.0)), float("inf")


def load_config(cfg: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep-copied config dict from a shipped name, a YAML path or a dict.

    Shipped names: :data:`SHIPPED` (``"yolov5s"`` and ``"yolov5s.yaml"`` both work when no
    such file exists in the working directory). YAML is read with ``yaml.safe_load``.
    """
    if isinstance(cfg, Mapping):
        _check_size(cfg, "config", keys=False)  # a dict of code: its keys are checked when built
        out = _plain(cfg)
    elif isinstance(cfg, (str, Path)):
        path = Path(cfg)
        stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
        if path.is_file():
            if path.stat().st_size > MAX_YAML_BYTES:
                raise ConfigError(
                    f"{cfg}: {path.stat().st_size / 2**20:,.1f} MB is too large for a model YAML"
                )
            try:
                text = path.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{cfg}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        elif str(cfg) in SHIPPED or (str(cfg) == path.name and stem in SHIPPED):
            text = _shipped_text(stem)
        else:
            close = difflib.get_close_matches(stem, SHIPPED, n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"{str(cfg)!r} is neither a YAML file nor a shipped model.{hint} "
                f"Shipped: {', '.join(SHIPPED)}"
            )
        try:
            out = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{cfg}: invalid YAML: {' '.join(str(e).split())}") from None
        except RecursionError:
            raise ConfigError(f"{cfg}: invalid YAML: nested more than {_MAX_DEPTH} levels deep") from None
        if not isinstance(out, dict):
            raise ConfigError(f"{cfg}: expected a mapping at the top level, got {type(out).__name__}")
        _check_size(out, str(cfg))
        guess_scale(out, stem)
    else:
        raise TypeError(f"cfg must be a model name, a YAML path or a dict, got {type(cfg).__name__}")
    return out


def _check_size(cfg: Mapping[str, Any], where: str, keys: bool = True) -> None:
    """Refuse unknown top-level keys, nesting deeper than :data:`_MAX_DEPTH` and more than
    :data:`_MAX_NODES` values with YAML aliases expanded (shared or self-referencing lists), in
    bounded time and without recursion, before anything copies or prints the config."""
    unknown = [str(k)[:40] for k in cfg if k not in TOP_LEVEL_KEYS]
    if unknown and keys:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; known: {', '.join(TOP_LEVEL_KEYS)}")
    stack: list[tuple[Any, int]] = [(v, 1) for v in cfg.values()]
    seen = 0
    while stack:
        obj, depth = stack.pop()
        seen += 1
        if seen > _MAX_NODES:
            raise ConfigError(f"{where}: more than {_MAX_NODES:,} values once YAML aliases are expanded")
        if isinstance(obj, (list, tuple, Mapping)):
            if depth >= _MAX_DEPTH:
                raise ConfigError(
                    f"{where}: nested more than {_MAX_DEPTH} levels deep (a self-referencing alias?)"
                )
            items = obj.values() if isinstance(obj, Mapping) else obj
            stack.extend((v, depth + 1) for v in items)


def config_name(cfg: str | Path | Mapping[str, Any]) -> str:
    """A short display name for a config argument (``yolov5s``, a file stem, or ``model``)."""
    if isinstance(cfg, (str, Path)):
        n = Path(cfg).name
        return n[:-5] if n.endswith(".yaml") else n
    return "model"


def dump_config(cfg: Mapping[str, Any]) -> str:
    """YAML text of a config, one flow-style line per anchor level and per row.

    ``load_config`` of the text gives back an equal dict (``yaml.safe_dump`` scalars).
    """

    def flow(v: Any) -> str:
        return yaml.safe_dump(v, default_flow_style=True, width=10**9).strip()

    lines: list[str] = []
    for key, value in cfg.items():
        if key in ("anchors", "backbone", "head") and isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"  - {flow(item)}" for item in value)
        else:
            lines.append(yaml.safe_dump({key: value}, sort_keys=False, width=10**9).rstrip())
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- rows


def where_of(i: int, n_backbone: int) -> str:
    """``backbone[k]`` or ``head[k]`` for row ``i`` (for messages)."""
    return f"backbone[{i}]" if i < n_backbone else f"head[{i - n_backbone}]"


def config_rows(cfg: Mapping[str, Any]) -> tuple[list[list[Any]], int]:
    """``(rows, n_backbone)``: copies of the ``backbone + head`` rows, each checked to be a
    4-element ``[from, number, module, args]`` list."""
    for key in ("backbone", "head"):
        if not isinstance(cfg.get(key), list):
            raise ConfigError(f"'{key}' must be a list of [from, number, module, args] rows")
    nb = len(cfg["backbone"])
    rows = list(cfg["backbone"]) + list(cfg["head"])
    for i, r in enumerate(rows):
        if not isinstance(r, (list, tuple)) or len(r) != 4:
            raise ConfigError(f"a row is [from, number, module, args], got {r!r}", i, where_of(i, nb))
    return [list(r) for r in rows], nb


def backbone_length(cfg: Mapping[str, Any]) -> int:
    """Number of backbone rows (the head's first row index)."""
    return len(cfg.get("backbone") or [])


def sources(row: Sequence[Any], i: int, where: str = "") -> list[tuple[int, int]]:
    """``(written, absolute)`` for each entry of row ``i``'s ``from``; ``-1`` of row 0 is the
    network input (absolute ``-1``). Raises :class:`ConfigError` naming the row."""
    f = row[0]
    f_list = [f] if is_int(f) else f
    if not isinstance(f_list, list) or not f_list or not all(is_int(j) for j in f_list):
        raise ConfigError(f"'from' must be an int or a non-empty list of ints, got {f!r}", i, where)
    out: list[tuple[int, int]] = []
    for j in f_list:
        if i == 0:
            if j != -1:
                raise ConfigError(f"row 0 can only take the input image (from -1), got from {f!r}", i, where)
            out.append((j, -1))
            continue
        a = i + j if j < 0 else j
        if not 0 <= a < i:
            raise ConfigError(
                f"'from' index {j} refers to row {a}, but only rows 0..{i - 1} come before "
                f"row {i} (use -1 for the previous row, -k for k rows back)",
                i,
                where,
            )
        out.append((j, a))
    return out


def module_name(name: Any) -> str:
    """The module name as the block table spells it: stripped, ``torch.nn.X`` -> ``nn.X``."""
    canon = str(name).strip()
    return canon[len("torch.") :] if canon.startswith("torch.nn.") else canon


def module_key(row: Sequence[Any]) -> str:
    """The row's module name lowercased without an ``nn.``/``torch.nn.`` prefix (``sppf``,
    ``detect``, ``upsample``), for matching families such as :data:`DETECT_MODULES`."""
    m = module_name(row[2])
    return (m[len("nn.") :] if m.startswith("nn.") else m).lower()


def detect_row(rows: Sequence[Any]) -> int | None:
    """Index of the last detection head row (:data:`DETECT_MODULES`), or None."""
    for i in range(len(rows) - 1, -1, -1):
        r = rows[i]
        if isinstance(r, (list, tuple)) and len(r) == 4 and module_key(r) in DETECT_MODULES:
            return i
    return None


def detect_index(cfg: Mapping[str, Any]) -> int:
    """Row index of the last ``Detect``/``IDetect`` row (raises ConfigError if none)."""
    i = detect_row(list(cfg.get("backbone") or []) + list(cfg.get("head") or []))
    if i is None:
        raise ConfigError("no Detect or IDetect row")
    return i


# --------------------------------------------------------------------------- top-level keys


def _check_anchors(anchors: Any) -> None:
    if anchors is None:
        return
    if is_int(anchors):
        if not 1 <= anchors <= 64:
            raise ConfigError(f"'anchors' as an int is the anchors per level, 1..64, got {anchors!r}")
        return
    ok = (
        isinstance(anchors, list)
        and anchors
        and all(
            isinstance(a, list)
            and a
            and len(a) % 2 == 0
            and len(a) == len(anchors[0])
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in a)
            for a in anchors
        )
    )
    if not ok:
        raise ConfigError(
            "'anchors' must be an int (anchors per level) or a list of levels, each a list "
            "of w,h pixel pairs of the same length, e.g. [[10,13, 16,30, 33,23], ...]"
        )
    for k, level in enumerate(anchors):
        bad = [v for v in level if not (math.isfinite(v) and v > 0)]
        if bad:
            raise ConfigError(f"'anchors' level {k}: sizes must be positive finite pixels, got {bad[0]!r}")


def _check_scales(cfg: Mapping[str, Any]) -> None:
    scales = cfg.get("scales")
    if scales is None:
        return
    ok = (
        isinstance(scales, Mapping)
        and scales
        and all(
            isinstance(v, list)
            and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v)
            for v in scales.values()
        )
    )
    if not ok:
        raise ConfigError(
            "'scales' must map scale letters to [depth, width, max_channels] positive numbers, "
            "e.g. {n: [0.33, 0.25, 1024]}"
        )
    scale = cfg.get("scale")
    if scale is not None and scale not in scales:
        raise ConfigError(f"'scale' {scale!r} is not one of the config's scales {list(scales)}")


def check_top_level(cfg: Mapping[str, Any]) -> None:
    """Check the model-level keys (rows are checked one by one by the parser)."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"expected a dict, got {type(cfg).__name__}")
    for key in ("backbone", "head"):
        if not isinstance(cfg.get(key), list):
            raise ConfigError(f"'{key}' must be a list of [from, number, module, args] rows")
    if not cfg["backbone"] and not cfg["head"]:
        raise ConfigError("the config has no rows")
    nc = cfg.get("nc")
    if not is_int(nc) or nc < 1:
        raise ConfigError(f"'nc' must be a positive int, got {nc!r}")
    unknown = [str(k)[:40] for k in cfg if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; known: {', '.join(TOP_LEVEL_KEYS)}")
    for key in ("depth_multiple", "width_multiple"):
        v = cfg.get(key, 1.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_MULTIPLE:
            raise ConfigError(f"'{key}' must be a number in (0, {MAX_MULTIPLE:g}], got {v!r}")
    _check_anchors(cfg.get("anchors"))
    _check_scales(cfg)
    ch = cfg.get("ch", 3)
    if not is_int(ch) or ch < 1:
        raise ConfigError(f"'ch' must be a positive int, got {ch!r}")
    insert = cfg.get("insert", "plain")
    if insert not in INSERT_MODES:
        raise ConfigError(f"'insert' must be one of {', '.join(INSERT_MODES)}, got {insert!r}")
    gate = cfg.get("gate", "scalar")
    if gate not in GATE_SHAPES:
        raise ConfigError(f"'gate' must be one of {', '.join(GATE_SHAPES)}, got {gate!r}")
    allow = cfg.get("allow_unused_rows", False)
    if not isinstance(allow, bool):
        raise ConfigError(f"'allow_unused_rows' must be true or false, got {allow!r}")
