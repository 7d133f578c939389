"""Official-format model YAML -> resolved rows -> layers.

Implements the row rules of ``shared/spec/yolo-architectures.md`` section 2 (the YOLOv5 /
YOLOv7 model-YAML format) without ``eval``: module names resolve through the explicit
:data:`~yoloattn.models.block_table.BLOCKS` table and the attention registry, and the few
symbolic argument forms of the official files (``nc``, ``anchors``, ``None``,
``nn.LeakyReLU(0.1)``, ...) through small parsers. The config format itself (loading, rows,
``from`` sources, top-level keys) is :mod:`yoloattn.models.config`'s.

Parsing happens in two steps:

1. :func:`resolve_rows` checks every row and computes its constructor arguments, channels
   and output stride without building anything (cheap; usable by other tools). The checks
   common to all rows (shape, ``from``, ``number``, module name) come first; the rest is one
   small resolver per block kind (attention, channel/csp, bn, concat, head, passthrough),
   dispatched from :data:`_RESOLVERS`.
2. :func:`parse_model` builds the layers in row order (the order fixes the RNG consumption,
   so a seeded build gives the same weights as the official code).

A bad row raises :class:`ConfigError` naming the row and the reason.

Attention rows (extension of the official format): ``[from, n, CBAM, []]`` or
``[from, n, cbam, {reduction: 8}]``. The name is looked up case-insensitively in the attention
registry, the args are an empty list or a dict of hyperparameters, and the channels are the
input's (``c2 = c1``).

Insertion mode (see :mod:`yoloattn.models.placement`): the model-level keys ``insert``
(``plain``, ``identity`` or ``auto``; ``auto`` builds as ``plain`` here, the trainer resolves it
before building) and ``gate`` (``scalar`` or ``channel``), and a per-row ``insert`` entry in an
attention row's dict (``{reduction: 8, insert: identity}``) that wins over the model-level one.
An ``identity`` row is wrapped in a :class:`~yoloattn.nn.gate.ResidualGate` unless the registry
says the module already computes the identity at initialisation.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from yoloattn.models.block_table import (
    BLOCKS,
    LITERALS,
    NON_LEGACY_HEAD_MODULES,
    BlockEntry,
    make_divisible,
    parse_activation,
)
from yoloattn.models.config import (
    MAX_CHANNELS,
    MAX_REPEATS,
    ConfigError,
    check_top_level,
    detect_index,
    is_int,
    load_config,
    module_name,
    scale_values,
    sources,
    where_of,
)
from yoloattn.models.placement import expand_config
from yoloattn.models.rows import Row
from yoloattn.models.wiring import check_wiring
from yoloattn.nn.head_v8 import DFLDetect

__all__ = [
    "Row",
    "resolve_rows",
    "parse_model",
    # owned by yoloattn.models.config; re-exported only for engine/trainer.py and
    # cli/convert.py, which import them from here (switch those imports, then drop these)
    "load_config",
    "detect_index",
]


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class _Model:
    """The model-level values the resolvers need."""

    nc: int
    gw: float
    ch_mul: int
    anchors: Any
    no: int  # outputs per anchor position of the head: na * (nc + 5); nc for YOLOv8/11 configs
    insert: str
    gate: str
    max_channels: float = float("inf")  # YOLOv8/11 ``scales`` cap before width scaling
    scale: str | None = None  # YOLOv8/11 scale letter
    legacy: bool = True  # anchor-free head class branch: YOLOv8 (True) or YOLO11 (False)


@dataclass
class _Input:
    """One row after the checks common to every kind (shape, from, number, module name)."""

    index: int
    where: str
    row: list[Any]  # as written
    name: str  # as written
    canon: str  # BLOCKS key, or the attention registry key
    number: int  # depth-scaled
    abs_from: list[int]  # absolute source rows (-1: the network input)
    c_ins: list[int]
    s_ins: list[float | None]

    @property
    def from_(self) -> Any:
        return self.row[0]

    @property
    def multi(self) -> bool:
        return isinstance(self.row[0], list)

    @property
    def args(self) -> Any:
        return self.row[3]

    def err(self, reason: str) -> ConfigError:
        return ConfigError(reason, self.index, self.where)


def _attention_row(r: _Input, m: _Model) -> Row:
    from yoloattn.attention.registry import check_hyper, get_attention_info

    info = get_attention_info(r.canon)
    f, name, args = r.from_, r.name, r.args
    if r.multi and len(r.abs_from) != 1:
        raise r.err(f"attention module {name!r} takes one input, got from {f!r}")
    if isinstance(args, list) and args:
        raise r.err(
            f"attention rows take no channel count: the channels are the input's "
            f"({r.c_ins[0]}). Write [{f}, {r.row[1]}, {name}, []] or give hyperparameters as a "
            f"dict, e.g. [{f}, {r.row[1]}, {name}, {{reduction: 8}}]; got args {args!r}"
        )
    if args is None or args == []:
        hyper: dict[str, Any] = {}
    elif isinstance(args, Mapping):
        hyper = dict(args)
    else:
        raise r.err(f"attention args must be [] or a dict of hyperparameters, got {args!r}")
    row_insert = hyper.pop("insert", m.insert)  # the row's insertion mode, not a hyperparameter
    if row_insert not in ("identity", "plain"):
        raise r.err(f"{info.key}: 'insert' must be identity or plain, got {row_insert!r}")
    try:
        hyper = check_hyper(info.key, hyper)
    except ValueError as e:
        raise r.err(str(e)) from None
    gated = row_insert == "identity" and not getattr(info, "identity_at_init", False)
    c = r.c_ins[0]
    return Row(
        r.index,
        f,
        r.number,
        info.key,
        "attention",
        [],
        hyper,
        c,
        c,
        r.s_ins[0],
        list(r.row),
        r.where,
        insert=row_insert,
        gate=m.gate if gated else None,
    )


def _block_args(r: _Input, m: _Model) -> list[Any]:
    """The row's args with the symbolic values resolved (``nc``, ``anchors``, literals,
    ``nn.X(...)`` activations)."""
    if not isinstance(r.args, list):
        raise r.err(f"args of {r.canon} must be a list, got {r.args!r}")
    out: list[Any] = []
    for a in r.args:
        if isinstance(a, str):
            if a == "nc":
                a = m.nc
            elif a == "anchors":
                if m.anchors is None:
                    raise r.err("args use 'anchors' but the config has no 'anchors' key")
                a = copy.deepcopy(m.anchors)
            elif a in LITERALS:
                a = LITERALS[a]
            else:
                try:
                    act = parse_activation(a)
                except ValueError as e:
                    raise r.err(str(e)) from None
                a = act if act is not None else a
        elif isinstance(a, Mapping):
            raise r.err(f"{r.canon} takes positional args; a dict ({a!r}) is only for attention rows")
        out.append(a)
    return out


def _inputs(r: _Input, many: bool) -> None:
    if many and not r.multi:
        raise r.err(f"{r.canon} takes a list of inputs in 'from', got {r.from_!r}")
    if not many and r.multi and len(r.abs_from) != 1:
        raise r.err(f"{r.canon} takes one input, got from {r.from_!r}")


def _block_row(
    r: _Input,
    args: list[Any],
    c1: int | list[int],
    c2: int,
    stride: Callable[[], float | None] | None = None,
    number: int | None = None,
    cls: type[nn.Module] | None = None,
) -> Row:
    """Check that the block takes ``args``, then the resolved row. ``stride`` gives the output
    stride (default: the input's times the block's factor); ``cls`` overrides the table's class."""
    entry = BLOCKS[r.canon]
    cls = cls or entry.cls
    try:
        inspect.signature(cls).bind(*args)
    except TypeError as e:
        raise r.err(f"{r.canon} does not take these arguments (resolved: {args!r}): {e}") from None
    s_out = stride() if stride is not None else _through(r, entry, args)
    n = r.number if number is None else number
    row = Row(r.index, r.from_, n, r.canon, entry.kind, args, {}, c1, c2, s_out, list(r.row), r.where)
    row.repeats = r.number
    row.cls = cls
    return row


def _through(r: _Input, entry: BlockEntry, args: list[Any]) -> float | None:
    s_in = r.s_ins[0]
    factor = entry.stride(args) if s_in is not None else None
    return None if factor is None or s_in is None else s_in * factor


def _channel_row(r: _Input, m: _Model) -> Row:
    """``channel`` and ``csp`` blocks: ``[c1, c2 (width-scaled), *args]``; CSP blocks also take
    the repeat count as ``args[2]`` and are built once."""
    args = _block_args(r, m)
    _inputs(r, many=False)
    c1 = r.c_ins[0]
    if not args or not is_int(args[0]) or args[0] < 1:
        raise r.err(f"{r.canon} needs the output channel count as first arg, got {r.args!r}")
    c2 = args[0]
    if c2 != m.no:
        if min(c2, m.max_channels) * m.gw > MAX_CHANNELS:
            raise r.err(
                f"{args[0]} output channels x width_multiple {m.gw:g} = {args[0] * m.gw:,.0f}; "
                f"at most {MAX_CHANNELS}"
            )
        c2 = make_divisible(min(c2, m.max_channels) * m.gw, m.ch_mul)
    args = [c1, c2, *args[1:]]
    entry = BLOCKS[r.canon]
    if entry.kind == "csp":
        args.insert(2, r.number)
        if entry.scale_rule is not None:
            args = entry.scale_rule(args, m.scale)
        return _block_row(r, args, c1, c2, number=1)
    return _block_row(r, args, c1, c2)


def _bn_row(r: _Input, m: _Model) -> Row:
    _block_args(r, m)
    _inputs(r, many=False)
    return _block_row(r, [r.c_ins[0]], r.c_ins[0], r.c_ins[0])


def _concat_row(r: _Input, m: _Model) -> Row:
    args = _block_args(r, m)
    _inputs(r, many=True)
    known = [s for s in r.s_ins if s is not None]
    if known and any(abs(s - known[0]) > 1e-9 for s in known):
        raise r.err(
            f"Concat inputs {r.from_!r} have different strides {list(r.s_ins)}; "
            f"their feature maps cannot be concatenated"
        )
    first = next((s for s in r.s_ins if s is not None), None)
    return _block_row(r, args, list(r.c_ins), sum(r.c_ins), stride=lambda: first)


def _head_row(r: _Input, m: _Model) -> Row:
    args = _block_args(r, m)
    _inputs(r, many=True)
    n_in = len(r.abs_from)
    if r.number != 1:
        raise r.err(f"{r.canon} cannot be repeated (number {r.row[1]})")
    if r.canon == "Detect" and len(args) == 1:
        return _dfl_head_row(r, m, args)
    if len(args) < 2:
        raise r.err(f"{r.canon} args are [nc, anchors], got {r.args!r}")
    if is_int(args[1]):
        args[1] = [list(range(args[1] * 2))] * n_in
    anc = args[1]
    if not isinstance(anc, list) or len(anc) != n_in:
        raise r.err(
            f"{r.canon} has {n_in} inputs but {len(anc) if isinstance(anc, list) else anc!r} anchor levels "
            "(the model-level 'anchors' needs one list of w,h pairs per Detect input)"
        )
    if not is_int(args[0]) or args[0] < 1:
        raise r.err(f"{r.canon}: nc must be a positive int, got {args[0]!r}")
    args.append(list(r.c_ins))
    row = _block_row(r, args, list(r.c_ins), (len(anc[0]) // 2) * (args[0] + 5), stride=lambda: None)
    row.head_strides = list(r.s_ins)
    return row


def _dfl_head_row(r: _Input, m: _Model, args: list[Any]) -> Row:
    """``Detect`` with ``[nc]`` only: the anchor-free YOLOv8/11 head, resolved to
    ``[nc, reg_max=16, end2end=None, ch]`` with the ``legacy`` class branch (spec 1.2)."""
    if not is_int(args[0]) or args[0] < 1:
        raise r.err(f"{r.canon}: nc must be a positive int, got {args[0]!r}")
    nc, reg_max = args[0], 16
    args = [nc, reg_max, None, list(r.c_ins)]
    row = _block_row(r, args, list(r.c_ins), nc + 4 * reg_max, stride=lambda: None, cls=DFLDetect)
    row.kwargs = {"legacy": m.legacy}
    row.head_strides = list(r.s_ins)
    return row


def _passthrough_row(r: _Input, m: _Model) -> Row:
    args = _block_args(r, m)
    _inputs(r, many=False)
    return _block_row(r, args, r.c_ins[0], r.c_ins[0])


#: One resolver per block kind (BlockEntry.kind, or ``attention`` for registry keys).
_RESOLVERS: dict[str, Callable[[_Input, _Model], Row]] = {
    "attention": _attention_row,
    "channel": _channel_row,
    "csp": _channel_row,
    "bn": _bn_row,
    "concat": _concat_row,
    "head": _head_row,
    "passthrough": _passthrough_row,
}


def _model_values(cfg: Mapping[str, Any]) -> _Model:
    nc = int(cfg["nc"])
    anchors = cfg.get("anchors")
    na = (anchors if is_int(anchors) else len(anchors[0]) // 2) if anchors is not None else 3
    _, gw, max_channels = scale_values(cfg)
    scaled = cfg.get("scales") is not None
    names = {
        module_name(r[2])
        for r in [*cfg["backbone"], *cfg["head"]]
        if isinstance(r, (list, tuple)) and len(r) == 4
    }
    return _Model(
        nc=nc,
        gw=gw,
        ch_mul=int(cfg.get("channel_multiple", 8)),
        anchors=anchors,
        no=nc if scaled and anchors is None else na * (nc + 5),
        insert="identity" if cfg.get("insert") == "identity" else "plain",
        gate=str(cfg.get("gate", "scalar")),
        max_channels=max_channels,
        scale=str(cfg["scale"]) if scaled and cfg.get("scale") is not None else None,
        legacy=not (names & NON_LEGACY_HEAD_MODULES),
    )


def _unknown_module(r_name: Any, canon: str) -> str:
    from yoloattn.attention import list_attention

    keys = [i.key for i in list_attention()]
    lower = {c.lower(): c for c in [*BLOCKS, *keys]}
    close = [lower[h] for h in difflib.get_close_matches(canon.lower(), list(lower), n=5, cutoff=0.6)]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown module {r_name!r}.{hint} Known blocks: {', '.join(BLOCKS)}; attention "
        f"modules: `yoloattn modules` ({len(keys)} registered)"
    )


def resolve_rows(cfg: Mapping[str, Any], ch: int = 3) -> list[Row]:
    """Check every row of ``cfg`` and resolve its args, channels and stride (builds nothing).

    ``cfg['ch']`` overrides ``ch`` when present. A model-level ``attention:`` key is placed first
    (:func:`~yoloattn.models.placement.expand_config`), so the rows are the built model's. Raises
    :class:`ConfigError` on the first bad row with its index and the reason, and on miswired
    rows (:mod:`yoloattn.models.wiring`) unless the config sets ``allow_unused_rows: true``.
    """
    from yoloattn.attention import resolve_attention_key

    if isinstance(cfg, Mapping) and "attention" in cfg:
        cfg = expand_config(cfg).cfg
    check_top_level(cfg)
    m = _model_values(cfg)
    gd = scale_values(cfg)[0]
    ch_in = int(cfg.get("ch", ch))
    nb = len(cfg["backbone"])
    rows: list[Row] = []
    for i, row in enumerate(list(cfg["backbone"]) + list(cfg["head"])):
        where = where_of(i, nb)
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise ConfigError(f"a row is [from, number, module, args], got {row!r}", i, where)
        abs_from = [a for _, a in sources(row, i, where)]
        n, name = row[1], row[2]
        if not is_int(n) or n < 1:
            raise ConfigError(f"'number' must be a positive int, got {n!r}", i, where)
        if n * gd > MAX_REPEATS:
            raise ConfigError(
                f"'number' {n} x depth_multiple {gd:g} = {n * gd:,.0f} repeats; at most {MAX_REPEATS}",
                i,
                where,
            )
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"'module' must be a name string, got {name!r}", i, where)
        canon = module_name(name)
        entry = BLOCKS.get(canon)
        att_key = None if entry is not None else resolve_attention_key(canon)
        if entry is None and att_key is None:
            raise ConfigError(_unknown_module(name, canon), i, where)
        r = _Input(
            index=i,
            where=where,
            row=list(row),
            name=name,
            canon=att_key or canon,
            number=max(round(n * gd), 1) if n > 1 else n,
            abs_from=abs_from,
            c_ins=[ch_in if a < 0 else rows[a].c2 for a in abs_from],
            s_ins=[1.0 if a < 0 else rows[a].stride for a in abs_from],
        )
        rows.append(_RESOLVERS["attention" if att_key is not None else entry.kind](r, m))  # type: ignore[union-attr]
    if not cfg.get("allow_unused_rows", False):
        check_wiring(rows)
    return rows


def parse_model(cfg: Mapping[str, Any], ch: int = 3) -> tuple[nn.Sequential, list[int], list[Row]]:
    """Build the layers of ``cfg``: ``(nn.Sequential of rows, save list, resolved rows)``.

    Each layer carries ``i`` (row index), ``f`` (from), ``type`` (module name), ``np``
    (parameter count) and ``args`` (resolved args for display). The save list holds every row
    whose output a later row reads through a ``from`` other than -1.
    """
    rows = resolve_rows(cfg, ch)
    act_text = cfg.get("activation")
    activation = None
    if act_text is not None:
        try:
            activation = parse_activation(act_text) if isinstance(act_text, str) else None
        except ValueError as e:
            raise ConfigError(f"'activation': {e}") from None
        if activation is None:
            raise ConfigError(
                f"'activation' must look like 'nn.LeakyReLU(0.1)' or 'nn.SiLU()', got {act_text!r}"
            )
    layers = [r.build(activation) for r in rows]
    save: set[int] = set()
    for r in rows:
        for j in [r.from_] if isinstance(r.from_, int) else r.from_:
            if j != -1:
                save.add(j % r.index)
    return nn.Sequential(*layers), sorted(save), rows
