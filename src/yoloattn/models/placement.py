"""Insert attention rows into a YOLOv5/YOLOv7 model config and renumber every reference.

A model config is the official YAML format (``nc``, ``depth_multiple``, ``width_multiple``,
``anchors``, ``backbone``, ``head``; rows ``[from, number, module, args]``, numbered over
``backbone + head``). :func:`place_attention` returns a new plain config (dump it with
``yaml.safe_dump`` and reload it to get the same network) plus the map from every old row index
to its new index, which :mod:`yoloattn.models.weights` uses to move pretrained weights.

Spec grammar (one string; whitespace is ignored)::

    spec   := item ("," item)*
    item   := key ["(" kwargs ")"] ["@" where]
    where  := "backbone" | "neck" | "all" | index ("+" index)*
    kwargs := name "=" value ("," name "=" value)*      values are YAML scalars: 8, 0.5, true, foo

* ``key`` is an attention registry key, case-insensitive (``yoloattn modules`` lists them).
* No ``@`` means ``@neck``. ``head`` is accepted as an alias of ``neck``.
* Indices are ORIGINAL row indices (as in the unmodified config); the attention row goes right
  after each of them. Because ``,`` also separates items, an item that is a bare integer
  continues the index list of the item before it: ``cbam@6,8`` is ``cbam@6+8``, and
  ``cbam@6,8,se@neck`` is ``cbam@6+8`` followed by ``se@neck``. A bare integer after a
  non-index item is an error.
* Examples: ``cbam``, ``cbam@backbone``, ``se@backbone,cbam@neck``, ``cbam(reduction=8)@all``,
  ``cbam(insert=plain)@neck`` (``insert`` is the row's insertion mode, not a hyperparameter),
  ``eca@4+6,gc@neck``.

Placement presets:

* ``backbone``: the end of the backbone, just before the spatial pyramid pooling block: the
  attention row goes after the row that feeds the first SPP-family row (``SPPF`` in YOLOv5,
  ``SPPCSPC`` in yolov7/yolov7x), i.e. after row 8 of YOLOv5, 50 of yolov7, 58 of yolov7x. A
  config without an SPP-family row gets it after the last ``backbone`` row: for yolov7-tiny,
  whose SPP is spelled out as rows 29-37, that is row 28, the row both SPP branches read.
* ``neck``: after every row the detection head reads (the Detect/IDetect ``from`` list: rows
  17, 20, 23 of YOLOv5; 74, 75, 76 of yolov7-tiny), so each level is refined just before the head.
* ``all``: both.

Insertion mode: every placed row can be inserted ``plain`` (the module as its paper
initialises it) or as the ``identity`` (wrapped in a zero-initialised residual gate
``y = x + g * (A(x) - x)``, :class:`~yoloattn.nn.gate.ResidualGate`), so that a network with
transferred weights computes exactly its trained function at step 0. ``auto`` (the default of
``train``, ``compare`` and ``info``) means ``identity`` when trained weights are transferred and
``plain`` from scratch (:func:`resolve_insert`). The mode is the model-level ``insert`` key of the
config (an attention row's dict may override it with its own ``insert`` entry); ``gate: channel``
gives one gate per channel instead of one scalar.

Rewiring rule: inserting an attention row after row ``r`` makes the attention output take the
place of ``r``'s output for EVERY row that read ``r`` (the next row's ``-1``, relative indices
such as ELAN's ``-2``, absolute indices in Concat rows, and the Detect inputs). Several
attention rows after the same row form a chain in spec order and the consumers read the last
one. Relative ``from`` values stay relative (with the new offset), absolute values stay absolute.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from yoloattn.models.config import (
    DETECT_MODULES,
    INSERT_MODES,
    config_rows,
    detect_row,
    load_config,
    module_key,
    sources,
)

__all__ = [
    "Placement",
    "parse_attention_spec",
    "place_attention",
    "insertion_points",
    "describe",
    "row_map",
    "SPP_MODULES",
    "resolve_insert",
    "set_insert",
    "insert_mode",
]

LOGGER = logging.getLogger(__name__)

#: spatial-pyramid-pooling blocks that mark the end of the backbone.
SPP_MODULES = frozenset({"spp", "sppf", "sppcspc", "sppfcspc", "sppcspc_group", "simsppf", "sppelan"})
PRESETS = ("backbone", "neck", "all")
_ALIASES = {"head": "neck"}
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT_RE = re.compile(r"^\d+$")


@dataclass(frozen=True)
class Placement:
    """One attention module and where to put it.

    Attributes:
        key: attention registry key (lowercase after validation).
        where: ``"backbone"``, ``"neck"``, ``"all"`` or ``"index"``.
        indices: original row indices (only for ``where == "index"``).
        hyper: constructor hyperparameters written into the row's args.
    """

    key: str
    where: str = "neck"
    indices: tuple[int, ...] = ()
    hyper: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        kw = ""
        if self.hyper:
            kw = "(" + ",".join(f"{k}={_scalar_text(v)}" for k, v in self.hyper.items()) + ")"
        where = "+".join(str(i) for i in self.indices) if self.where == "index" else self.where
        return f"{self.key}{kw}@{where}"


def _scalar_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside (), [] and {}."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"attention spec {text!r}: unbalanced {ch!r}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError(f"attention spec {text!r}: unbalanced brackets")
    parts.append("".join(cur))
    return parts


def _parse_kwargs(text: str, item: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not text.strip():
        return out
    for part in _split_top(text):
        if "=" not in part:
            raise ValueError(
                f"attention spec item {item!r}: hyperparameter {part!r} must be written name=value, "
                "e.g. cbam(reduction=8)@neck"
            )
        name, value = (s.strip() for s in part.split("=", 1))
        if not _KEY_RE.match(name):
            raise ValueError(f"attention spec item {item!r}: bad hyperparameter name {name!r}")
        if name in out:
            raise ValueError(f"attention spec item {item!r}: hyperparameter {name!r} given twice")
        try:
            out[name] = yaml.safe_load(value) if value else None
        except yaml.YAMLError as e:
            raise ValueError(f"attention spec item {item!r}: cannot read value {value!r} of {name!r}") from e
    return out


def _parse_item(item: str) -> Placement:
    raw = item
    where = "neck"
    if "@" in item:
        item, where = item.rsplit("@", 1)
        where = where.lower()
        if not where:
            raise ValueError(
                f"attention spec item {raw!r}: nothing after '@' (use backbone, neck, all or indices)"
            )
    hyper: dict[str, Any] = {}
    if "(" in item:
        if not item.endswith(")"):
            raise ValueError(f"attention spec item {raw!r}: hyperparameters must be key(name=value,...)")
        item, kw = item.split("(", 1)
        hyper = _parse_kwargs(kw[:-1], raw)
    key = item
    if not _KEY_RE.match(key):
        raise ValueError(
            f"attention spec item {raw!r}: {key!r} is not a module key "
            "(expected e.g. cbam, se@backbone, cbam(reduction=8)@neck, cbam@6+8)"
        )
    where = _ALIASES.get(where, where)
    if where in PRESETS:
        return Placement(key, where, (), hyper)
    idx = where.split("+")
    if not all(_INT_RE.match(s) for s in idx):
        raise ValueError(
            f"attention spec item {raw!r}: location {where!r} is not backbone, neck, all "
            "or non-negative row indices joined by '+' (e.g. cbam@6+8)"
        )
    return Placement(key, "index", tuple(int(s) for s in idx), hyper)


def _validate(p: Placement) -> Placement:
    from yoloattn.attention.registry import check_hyper, get_attention_info

    key = get_attention_info(p.key).key  # KeyError with close matches when unknown
    check_hyper(key, {k: v for k, v in p.hyper.items() if k != "insert"})  # insert: the row's mode
    return Placement(key, p.where, p.indices, dict(p.hyper))


def parse_attention_spec(
    spec: str | Placement | Iterable[str | Placement], *, validate: bool = True
) -> list[Placement]:
    """Parse a placement spec (see the module docstring) into :class:`Placement` objects.

    ``spec`` may also be a Placement or a list of strings/Placements. With ``validate`` the
    keys are checked against the attention registry (``KeyError`` naming close matches) and the
    hyperparameter names against the module's constructor.
    """
    if isinstance(spec, Placement):
        items: list[Placement] = [spec]
    elif isinstance(spec, str):
        text = "".join(spec.split())
        if not text:
            raise ValueError("empty attention spec; expected e.g. cbam@neck or se@backbone,cbam@neck")
        items = []
        for part in _split_top(text):
            if not part:
                raise ValueError(f"attention spec {spec!r}: empty item (two commas in a row?)")
            if _INT_RE.match(part):
                if not items or items[-1].where != "index":
                    raise ValueError(
                        f"attention spec {spec!r}: bare index {part!r} must follow an index item "
                        "such as cbam@6 (write cbam@6,8 or cbam@6+8)"
                    )
                last = items[-1]
                items[-1] = Placement(last.key, "index", (*last.indices, int(part)), last.hyper)
                continue
            items.append(_parse_item(part))
    else:
        items = []
        for s in spec:
            items.extend(parse_attention_spec(s, validate=False))
        if not items:
            raise ValueError("empty attention spec list")
    return [_validate(p) for p in items] if validate else items


# ----------------------------------------------------------------------------- insertion mode


def resolve_insert(mode: str, transferred: bool) -> str:
    """``identity`` or ``plain`` for ``mode`` (``auto`` follows whether weights are transferred)."""
    if mode not in INSERT_MODES:
        raise ValueError(f"insertion mode must be one of {', '.join(INSERT_MODES)}, got {mode!r}")
    if mode == "auto":
        return "identity" if transferred else "plain"
    return mode


def set_insert(cfg: dict[str, Any], mode: str | None, gate: str | None = None) -> dict[str, Any]:
    """Write the model-level insertion mode (and gate shape) into ``cfg`` in place; returns it.

    ``mode=None`` leaves the config's own choice. The keys are written only when the config has
    attention rows, so a base network's config stays the official one.
    """
    if not attention_rows(cfg):
        return cfg
    if mode is not None:
        cfg["insert"] = mode
    if gate is not None:
        cfg["gate"] = gate
    return cfg


def insert_mode(cfg: dict[str, Any]) -> str | None:
    """The insertion mode a config builds with: ``plain``, ``identity``, ``mixed`` (rows differ)
    or None without attention rows."""
    modes = set()
    model_mode = "identity" if cfg.get("insert") == "identity" else "plain"
    for i in attention_rows(cfg):
        args = config_rows(cfg)[0][i][3]
        modes.add(args.get("insert", model_mode) if isinstance(args, dict) else model_mode)
    if not modes:
        return None
    return modes.pop() if len(modes) == 1 else "mixed"


def attention_rows(cfg: dict[str, Any]) -> list[int]:
    """Indices of the rows whose module is an attention registry key."""
    from yoloattn.attention import resolve_attention_key

    rows, _ = config_rows(cfg)
    return [
        i for i, r in enumerate(rows) if isinstance(r[2], str) and resolve_attention_key(r[2]) is not None
    ]


# ----------------------------------------------------------------------------- config helpers


def _load(cfg: str | dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(cfg) if isinstance(cfg, dict) else load_config(cfg)


def _preset_points(rows: list[list[Any]], n_backbone: int, where: str) -> list[int]:
    out: list[int] = []
    if where in ("backbone", "all"):
        spp = next((i for i, r in enumerate(rows) if module_key(r) in SPP_MODULES), None)
        if spp is not None:
            srcs = sources(rows[spp], spp)
            if len(srcs) != 1 or srcs[0][1] < 0:
                raise ValueError(
                    f"row {spp} ({rows[spp][2]}) has {rows[spp][0]!r} as input; "
                    "cannot find the end of the backbone, give indices instead"
                )
            out.append(srcs[0][1])
        elif n_backbone > 0:
            out.append(n_backbone - 1)
        else:
            raise ValueError("model config has an empty backbone; give row indices instead")
    if where in ("neck", "all"):
        det = detect_row(rows)
        if det is None:
            raise ValueError(
                f"model config has no detection head row ({', '.join(sorted(DETECT_MODULES))}); "
                "@neck needs one, give row indices instead"
            )
        for _, a in sources(rows[det], det):
            if a not in out:
                out.append(a)
    return out


def insertion_points(cfg: str | dict[str, Any], placement: Placement) -> list[int]:
    """Original row indices after which ``placement`` inserts a row (validated)."""
    rows, nb = config_rows(_load(cfg))
    if placement.where != "index":
        if placement.where not in PRESETS:
            raise ValueError(f"unknown placement {placement.where!r}; use backbone, neck, all or indices")
        return _preset_points(rows, nb, placement.where)
    det = detect_row(rows)
    out: list[int] = []
    for i in placement.indices:
        if not 0 <= i < len(rows):
            raise ValueError(f"{placement}: row {i} is out of range; the config has rows 0..{len(rows) - 1}")
        if i == det:
            raise ValueError(
                f"{placement}: row {i} is the {rows[i][2]} head; attention cannot go after it "
                f"(use @neck to refine its inputs {rows[i][0]})"
            )
        if i not in out:
            out.append(i)
    return out


def place_attention(
    cfg: str | dict[str, Any], spec: str | Placement | Iterable[str | Placement]
) -> tuple[dict[str, Any], dict[int, int]]:
    """Insert attention rows into ``cfg`` as described by ``spec``.

    Args:
        cfg: a config dict (not modified), a shipped name or a YAML path.
        spec: placement spec string (module docstring), Placement, or a list of them.

    Returns:
        ``(new_cfg, index_map)``: a deep-copied plain config with the attention rows
        ``[-1, 1, key, {hyper}]`` inserted and every ``from`` renumbered, and the map from each
        original row index to its new index.
    """
    cfg = _load(cfg)
    rows, nb = config_rows(cfg)
    placements = parse_attention_spec(spec)
    after: dict[int, list[Placement]] = {}
    for p in placements:
        for i in insertion_points(cfg, p):
            after.setdefault(i, []).append(p)

    # check the whole config's references before renumbering
    all_sources = [sources(r, i) for i, r in enumerate(rows)]

    index_map: dict[int, int] = {}
    redirect: dict[int, int] = {}
    new_backbone: list[list[Any]] = []
    new_head: list[list[Any]] = []
    n = 0
    for i, row in enumerate(rows):
        target = new_backbone if i < nb else new_head
        index_map[i] = n
        target.append(row)
        n += 1
        for p in after.get(i, []):
            target.append([-1, 1, p.key, copy.deepcopy(p.hyper)])
            redirect[i] = n
            n += 1

    for i, row in enumerate(rows):
        ni = index_map[i]
        new_from = []
        for written, a in all_sources[i]:
            if a < 0:  # the network input
                new_from.append(written)
                continue
            na = redirect.get(a, index_map[a])
            if written == -1 and na == ni - 1:
                new_from.append(-1)
            elif written < 0:
                new_from.append(na - ni)
            else:
                new_from.append(na)
        row[0] = new_from if isinstance(row[0], list) else new_from[0]

    cfg["backbone"] = new_backbone
    cfg["head"] = new_head
    for i, ps in sorted(after.items()):
        LOGGER.debug("attention after row %d (%s): %s", i, rows[i][2], ", ".join(p.key for p in ps))
    return cfg, index_map


def describe(cfg: str | dict[str, Any], spec: str | Placement | Iterable[str | Placement]) -> str:
    """Human-readable summary of what :func:`place_attention` does with ``spec``."""
    base = _load(cfg)
    rows, _ = config_rows(base)
    new_cfg, index_map = place_attention(base, spec)
    new_rows, _ = config_rows(new_cfg)
    inv = {v: k for k, v in index_map.items()}
    lines = [f"{len(rows)} rows -> {len(new_rows)} rows"]
    for j, row in enumerate(new_rows):
        if j in inv:
            continue
        prev = j - 1
        while prev not in inv:
            prev -= 1
        src = inv[prev]
        hyper = f" {row[3]}" if row[3] else ""
        lines.append(f"  row {j}: {row[2]}{hyper} after original row {src} ({rows[src][2]})")
    return "\n".join(lines)


def row_map(src_cfg: str | dict[str, Any], dst_cfg: str | dict[str, Any]) -> dict[int, int]:
    """Map rows of ``src_cfg`` onto equivalent rows of ``dst_cfg`` (for moving weights).

    Non-attention rows are paired in order (they must have the same module names, else
    ``ValueError``); an attention row of ``src`` is paired with an attention row of ``dst`` with
    the same key after the same base row. Unpaired attention rows are left out. Use this when the
    source weights themselves come from a model with attention rows.
    """
    from yoloattn.attention import resolve_attention_key

    def split(cfg: dict[str, Any]) -> list[tuple[int, str, list[tuple[int, str]]]]:
        rows, _ = config_rows(cfg)
        out: list[tuple[int, str, list[tuple[int, str]]]] = []
        for i, r in enumerate(rows):
            key = resolve_attention_key(str(r[2])) if isinstance(r[2], str) else None
            if key is not None and out:
                out[-1][2].append((i, key))
            elif key is not None:
                raise ValueError(f"row {i}: an attention row cannot be the first row")
            else:
                out.append((i, module_key(r), []))
        return out

    a, b = split(_load(src_cfg)), split(_load(dst_cfg))
    if [m for _, m, _ in a] != [m for _, m, _ in b]:
        raise ValueError(
            f"the two configs have different base networks ({len(a)} vs {len(b)} non-attention rows); "
            "weights cannot be mapped row by row"
        )
    out: dict[int, int] = {}
    for (ia, _, atta), (ib, _, attb) in zip(a, b):
        out[ia] = ib
        used: set[int] = set()
        for ja, ka in atta:
            for n, (jb, kb) in enumerate(attb):
                if kb == ka and n not in used:
                    out[ja] = jb
                    used.add(n)
                    break
    return out
