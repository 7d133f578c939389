"""Insert attention rows into a YOLOv5/v7/v8/11 model config and renumber every reference.

A model config is the official YAML format (``nc``, ``depth_multiple``, ``width_multiple``,
``anchors``, ``backbone``, ``head``; rows ``[from, number, module, args]``, numbered over
``backbone + head``). :func:`place_attention` returns a new plain config (dump it with
``yaml.safe_dump`` and reload it to get the same network) plus the map from every old row index
to its new index, which :mod:`yoloattn.models.weights` uses to move pretrained weights.

Where the rows go is a placement spec (``cbam@neck``, ``se@backbone,cbam(reduction=8)@6+8``; the
grammar is :mod:`yoloattn.models.spec`'s), given as ``--attention``/``attention=`` or as the
config's own model-level ``attention:`` key, so that users never edit the row list by hand.
:func:`expand_config` applies both (the key's placements first, then the argument's; indices in
both are rows of the config as written) and returns the expanded config without the key, its
index map and the base config: :func:`yoloattn.models.detector.build_model` builds from it.

Placement presets (per model family, one table: :data:`PRESETS_BY_FAMILY`; all four families
use the same two rules today):

* ``backbone``: the end of the backbone, just before the spatial pyramid pooling block: the
  attention row goes after the row that feeds the first SPP-family row (``SPPF`` in YOLOv5,
  ``SPPCSPC`` in yolov7/yolov7x), i.e. after row 8 of YOLOv5, YOLOv8 and YOLO11 (before SPPF;
  in YOLO11 before SPPF and C2PSA), 50 of yolov7, 58 of yolov7x. A
  config without an SPP-family row gets it after the last ``backbone`` row: for yolov7-tiny,
  whose SPP is spelled out as rows 29-37, that is row 28, the row both SPP branches read.
* ``neck``: after every row the detection head reads (the Detect/IDetect ``from`` list: rows
  17, 20, 23 of YOLOv5; 74, 75, 76 of yolov7-tiny; 15, 18, 21 of YOLOv8; 16, 19, 22 of YOLO11), so
  each level is refined just before the head.
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoloattn.models.config import (
    DETECT_MODULES,
    INSERT_MODES,
    ConfigError,
    config_rows,
    detect_row,
    load_config,
    module_key,
    sources,
)
from yoloattn.models.family import family_of
from yoloattn.models.spec import PRESETS, Placement, config_placements, parse_attention_spec

__all__ = [
    "Expanded",
    "expand_config",
    "place_attention",
    "insertion_points",
    "describe",
    "row_map",
    "SPP_MODULES",
    "resolve_insert",
    "set_insert",
    "insert_mode",
    "attention_rows",
    "FamilyPresets",
    "PRESETS_BY_FAMILY",
]

#: What :func:`place_attention` and :func:`expand_config` take as a spec.
Spec = str | Placement | Iterable[str | Placement]
#: A config argument: a dict (not modified), a shipped name or a YAML path.
Cfg = str | Path | Mapping[str, Any]

LOGGER = logging.getLogger(__name__)

#: spatial-pyramid-pooling blocks that mark the end of the backbone.
SPP_MODULES = frozenset({"spp", "sppf", "sppcspc", "sppfcspc", "sppcspc_group", "simsppf", "sppelan"})


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


def insert_mode(cfg: Cfg) -> str | None:
    """The insertion mode a config builds with: ``plain``, ``identity``, ``mixed`` (rows differ)
    or None without attention rows (an ``attention:`` key counts with its placed rows)."""
    cfg = _expanded(cfg)
    modes = set()
    model_mode = "identity" if cfg.get("insert") == "identity" else "plain"
    rows, _ = config_rows(cfg)
    for i in attention_rows(cfg):
        args = rows[i][3]
        modes.add(args.get("insert", model_mode) if isinstance(args, dict) else model_mode)
    if not modes:
        return None
    return modes.pop() if len(modes) == 1 else "mixed"


def attention_rows(cfg: Cfg) -> list[int]:
    """Indices of the rows whose module is an attention registry key (after placing the
    config's ``attention:`` key, if it has one)."""
    from yoloattn.attention import resolve_attention_key

    rows, _ = config_rows(_expanded(cfg))
    return [
        i for i, r in enumerate(rows) if isinstance(r[2], str) and resolve_attention_key(r[2]) is not None
    ]


# ----------------------------------------------------------------------------- config helpers


def _load(cfg: Cfg) -> dict[str, Any]:
    return load_config(cfg)  # a deep copy, tuples as lists (YAML-dumpable)


def _expanded(cfg: Cfg) -> dict[str, Any]:
    """``cfg`` with its ``attention:`` key placed (the config itself when it has none)."""
    if isinstance(cfg, Mapping) and "attention" not in cfg:
        return dict(cfg)
    return expand_config(cfg).cfg


def _spp_input(rows: list[list[Any]], n_backbone: int) -> list[int]:
    """The row feeding the first SPP-family row; without one, the last backbone row."""
    spp = next((i for i, r in enumerate(rows) if module_key(r) in SPP_MODULES), None)
    if spp is not None:
        srcs = sources(rows[spp], spp)
        if len(srcs) != 1 or srcs[0][1] < 0:
            raise ValueError(
                f"row {spp} ({rows[spp][2]}) has {rows[spp][0]!r} as input; "
                "cannot find the end of the backbone, give indices instead"
            )
        return [srcs[0][1]]
    if n_backbone > 0:
        return [n_backbone - 1]
    raise ValueError("model config has an empty backbone; give row indices instead")


def _head_inputs(rows: list[list[Any]], n_backbone: int) -> list[int]:
    """Every row the detection head reads (its ``from`` list)."""
    det = detect_row(rows)
    if det is None:
        raise ValueError(
            f"model config has no detection head row ({', '.join(sorted(DETECT_MODULES))}); "
            "@neck needs one, give row indices instead"
        )
    return [a for _, a in sources(rows[det], det)]


@dataclass(frozen=True)
class FamilyPresets:
    """Where ``@backbone`` and ``@neck`` put attention in one model family.

    ``backbone``/``neck`` compute the original row indices from ``(rows, n_backbone)``;
    ``shipped`` records the rows they give for the family's shipped configs (docs and tests).
    """

    backbone: Callable[[list[list[Any]], int], list[int]]
    neck: Callable[[list[list[Any]], int], list[int]]
    shipped: str


#: The presets of every family (:mod:`yoloattn.models.family`), in one table. ``all`` is both.
PRESETS_BY_FAMILY: dict[str, FamilyPresets] = {
    "v5": FamilyPresets(_spp_input, _head_inputs, "yolov5*: backbone after row 8; neck after 17, 20, 23"),
    "v7": FamilyPresets(
        _spp_input,
        _head_inputs,
        "yolov7: after 50 / 102, 103, 104; yolov7x: 58 / 118, 119, 120; "
        "yolov7-tiny (no SPP row): last backbone row 28 / 74, 75, 76",
    ),
    "v8": FamilyPresets(_spp_input, _head_inputs, "yolov8*: backbone after row 8; neck after 15, 18, 21"),
    "11": FamilyPresets(_spp_input, _head_inputs, "yolo11*: backbone after row 8; neck after 16, 19, 22"),
}


def _preset_points(cfg: dict[str, Any], rows: list[list[Any]], n_backbone: int, where: str) -> list[int]:
    rules = PRESETS_BY_FAMILY[family_of(cfg)]
    out: list[int] = []
    if where in ("backbone", "all"):
        out.extend(rules.backbone(rows, n_backbone))
    if where in ("neck", "all"):
        for a in rules.neck(rows, n_backbone):
            if a not in out:
                out.append(a)
    return out


def insertion_points(cfg: Cfg, placement: Placement) -> list[int]:
    """Original row indices after which ``placement`` inserts a row (validated)."""
    loaded = _load(cfg)
    rows, nb = config_rows(loaded)
    if placement.where != "index":
        if placement.where not in PRESETS:
            raise ValueError(f"unknown placement {placement.where!r}; use backbone, neck, all or indices")
        return _preset_points(loaded, rows, nb, placement.where)
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


def place_attention(cfg: Cfg, spec: Spec | None = None) -> tuple[dict[str, Any], dict[int, int]]:
    """Insert attention rows into ``cfg`` as described by its ``attention:`` key and ``spec``.

    Args:
        cfg: a config dict (not modified), a shipped name or a YAML path.
        spec: placement spec string (:mod:`yoloattn.models.spec`), Placement, or a list of them;
            placed after the config's own ``attention:`` key. Indices in both are rows of
            ``cfg`` as written.

    Returns:
        ``(new_cfg, index_map)``: a deep-copied plain config with the attention rows
        ``[-1, 1, key, {hyper}]`` inserted, every ``from`` renumbered and no ``attention:`` key,
        and the map from each original row index to its new index.
    """
    cfg = _load(cfg)
    own = config_placements(cfg.pop("attention", None))
    rows, nb = config_rows(cfg)
    after: dict[int, list[Placement]] = {}
    for p in own:
        try:
            points = insertion_points(cfg, p)
        except ValueError as e:
            raise ConfigError(f"'attention': {e}") from None
        for i in points:
            after.setdefault(i, []).append(p)
    if spec is not None or not own:
        for p in parse_attention_spec(spec if spec is not None else ""):
            for i in insertion_points(cfg, p):
                after.setdefault(i, []).append(p)

    _refuse_stacked(after, spec)
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


def _refuse_stacked(after: dict[int, list[Placement]], spec: Spec | None) -> None:
    """One module twice after the same row (``cbam@neck,cbam@neck``, ``se@all,se@neck``, or the
    config's ``attention:`` key repeated by ``--attention``) would stack two identical rows:
    refused. Different modules after one row (``se@neck,cbam@neck``) are a combination, kept."""
    for i, ps in sorted(after.items()):
        keys = [p.key for p in ps]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ConfigError(
                f"attention spec {spec!r}: {', '.join(twice)} placed twice after row {i} (the "
                "placements overlap, or the config's attention: key names it too); identical "
                "modules would stack, so give each module once per row"
            )


def describe(cfg: Cfg, spec: Spec | None = None) -> str:
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


def row_map(src_cfg: Cfg, dst_cfg: Cfg) -> dict[int, int]:
    """Map rows of ``src_cfg`` onto equivalent rows of ``dst_cfg`` (for moving weights).

    Non-attention rows are paired in order (they must have the same module names, else
    ``ValueError``); an attention row of ``src`` is paired with an attention row of ``dst`` with
    the same key after the same base row. Unpaired attention rows are left out. Use this when the
    source weights themselves come from a model with attention rows. A config's
    ``attention:`` key is placed first.
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

    a, b = split(_expanded(src_cfg)), split(_expanded(dst_cfg))
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


# ----------------------------------------------------------------------------- the build's config


@dataclass
class Expanded:
    """A config with its attention placed (:func:`expand_config`).

    Attributes:
        cfg: the config to build: attention rows inserted and renumbered, no ``attention:`` key,
            the insertion mode written (``Model(cfg)`` builds the network).
        index_map: original row -> new row; None when nothing was placed.
        base: the config as given without its ``attention:`` key (the network the index map
            starts from: build it to transfer its weights into ``cfg``'s model).
    """

    cfg: dict[str, Any]
    index_map: dict[int, int] | None
    base: dict[str, Any]


def expand_config(
    cfg: Cfg,
    attention: Spec | None = None,
    *,
    insert: str | None = None,
    gate: str | None = None,
    allow_unused_rows: bool = False,
) -> Expanded:
    """Place the config's ``attention:`` key and then ``attention`` (a spec), and write the
    insertion mode (``insert``, ``gate``; None keeps the config's) and, when asked, the
    ``allow_unused_rows`` opt-out of the miswire check into the result.

    The one path from "config + placement" to the config a model is built from; see
    :func:`yoloattn.models.detector.build_model`, which builds it.
    """
    base = _load(cfg)
    if allow_unused_rows:
        base["allow_unused_rows"] = True
    own = base.get("attention")
    if attention is None and (own is None or own == []):
        base.pop("attention", None)
        out, index_map = copy.deepcopy(base), None
    else:
        out, index_map = place_attention(base, attention)
        base.pop("attention", None)
    set_insert(out, insert, gate)
    return Expanded(out, index_map, base)
