"""Official-format model YAML -> resolved rows -> layers.

Implements the row rules of ``shared/spec/yolo-architectures.md`` section 2 (the YOLOv5 /
YOLOv7 model-YAML format) without ``eval``: module names resolve through the explicit
:data:`BLOCKS` table and the attention registry, and the few symbolic argument forms of the
official files (``nc``, ``anchors``, ``None``, ``nn.LeakyReLU(0.1)``, ...) through small parsers.

Parsing happens in two steps:

1. :func:`resolve_rows` checks every row and computes its constructor arguments, channels
   and output stride without building anything (cheap; usable by other tools).
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
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from yoloattn.models.config import (
    ConfigError,
    check_top_level,
    detect_index,
    is_int,
    load_config,
    module_name,
    sources,
    where_of,
)
from yoloattn.nn import (
    C3,
    MP,
    SP,
    SPP,
    SPPCSPC,
    SPPF,
    Bottleneck,
    Concat,
    Conv,
    Detect,
    DWConv,
    Focus,
    IDetect,
    RepConv,
)
from yoloattn.nn.gate import ResidualGate

__all__ = [
    "BLOCKS",
    "ACTIVATIONS",
    "ActSpec",
    "BlockEntry",
    "Row",
    "parse_activation",
    "resolve_rows",
    "parse_model",
    "make_divisible",
    # owned by yoloattn.models.config; re-exported only for engine/trainer.py and
    # cli/convert.py, which import them from here (switch those imports, then drop these)
    "load_config",
    "detect_index",
]

# --------------------------------------------------------------------------- activations

#: Activations that may appear in args or in the top-level ``activation:`` key (parameter-free).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "SiLU": nn.SiLU,
    "ReLU": nn.ReLU,
    "ReLU6": nn.ReLU6,
    "LeakyReLU": nn.LeakyReLU,
    "Hardswish": nn.Hardswish,
    "Hardsigmoid": nn.Hardsigmoid,
    "Mish": nn.Mish,
    "GELU": nn.GELU,
    "ELU": nn.ELU,
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
    "Identity": nn.Identity,
}

_ACT_RE = re.compile(r"^\s*(?:torch\.)?nn\.([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$")
_KW_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.+)$")
_LITERALS: dict[str, Any] = {"True": True, "False": False, "None": None}


def _literal(text: str) -> Any:
    """A number or True/False/None (the only literals allowed inside ``nn.X(...)``)."""
    t = text.strip()
    if t in _LITERALS:
        return _LITERALS[t]
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"argument {t!r} is not a number, True, False or None") from None


@dataclass(frozen=True)
class ActSpec:
    """A parsed activation such as ``nn.LeakyReLU(0.1)``; :meth:`build` makes a fresh module."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def build(self) -> nn.Module:
        return ACTIVATIONS[self.name](*self.args, **dict(self.kwargs))

    def __str__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return f"nn.{self.name}({', '.join(parts)})"


def parse_activation(text: str) -> ActSpec | None:
    """Parse ``nn.Name(args)`` into an :class:`ActSpec`; None if ``text`` has another form.

    Raises ValueError for an ``nn.X(...)`` whose name is not in :data:`ACTIVATIONS` or whose
    arguments are not literals or do not fit the class.
    """
    m = _ACT_RE.match(text)
    if m is None:
        return None
    name, inner = m.group(1), m.group(2).strip()
    if name not in ACTIVATIONS:
        close = difflib.get_close_matches(name, list(ACTIVATIONS), n=3)
        hint = f" Did you mean: {', '.join('nn.' + c for c in close)}?" if close else ""
        raise ValueError(
            f"unsupported activation 'nn.{name}(...)'.{hint} "
            f"Allowed: {', '.join('nn.' + k for k in ACTIVATIONS)}"
        )
    args: list[Any] = []
    kwargs: list[tuple[str, Any]] = []
    if inner:
        for part in inner.split(","):
            kw = _KW_RE.match(part.strip())
            if kw:
                kwargs.append((kw.group(1), _literal(kw.group(2))))
            elif kwargs:
                raise ValueError(f"positional argument after keyword in {text!r}")
            else:
                args.append(_literal(part))
    spec = ActSpec(name, tuple(args), tuple(kwargs))
    try:
        inspect.signature(ACTIVATIONS[name]).bind(*spec.args, **dict(spec.kwargs))
    except TypeError as e:
        raise ValueError(f"bad arguments in {text!r}: {e}") from None
    return spec


# --------------------------------------------------------------------------- block table


def _arg(i: int, default: Any) -> Callable[[list[Any]], Any]:
    return lambda a: a[i] if len(a) > i and a[i] is not None else default


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, (list, tuple)) else v


def _stride_conv(a: list[Any]) -> float:
    return float(_first(_arg(3, 1)(a)))


def _stride_focus(a: list[Any]) -> float:
    return 2.0 * float(_first(_arg(3, 1)(a)))


def _stride_mp(a: list[Any]) -> float:
    return float(_first(_arg(0, 2)(a)))


def _stride_sp(a: list[Any]) -> float:
    return float(_first(_arg(1, 1)(a)))


def _stride_maxpool(a: list[Any]) -> float:
    return float(_first(_arg(1, _arg(0, 1)(a))(a)))


def _stride_upsample(a: list[Any]) -> float | None:
    sf = _arg(1, None)(a)
    if sf is None:
        return None  # size-based upsampling: stride unknown until run
    return 1.0 / float(_first(sf))


def _stride_one(a: list[Any]) -> float:
    return 1.0


@dataclass(frozen=True)
class BlockEntry:
    """How the parser treats one module name.

    kind: ``channel`` (``c1`` injected, ``c2 = args[0]`` width-scaled), ``csp`` (as channel and
    the repeat count inserted as ``args[2]``), ``bn`` (``args = [c1]``), ``concat``, ``head``
    (input channels appended) or ``passthrough`` (args unchanged, ``c2 = c1``).
    stride: output stride factor from the resolved args (None when unknown).
    """

    cls: type[nn.Module]
    kind: str
    stride: Callable[[list[Any]], float | None] = _stride_one


BLOCKS: dict[str, BlockEntry] = {
    "Conv": BlockEntry(Conv, "channel", _stride_conv),
    "DWConv": BlockEntry(DWConv, "channel", _stride_conv),
    "RepConv": BlockEntry(RepConv, "channel", _stride_conv),
    "Focus": BlockEntry(Focus, "channel", _stride_focus),
    "Bottleneck": BlockEntry(Bottleneck, "channel"),
    "SPP": BlockEntry(SPP, "channel"),
    "SPPF": BlockEntry(SPPF, "channel"),
    "C3": BlockEntry(C3, "csp"),
    "SPPCSPC": BlockEntry(SPPCSPC, "csp"),
    "nn.Conv2d": BlockEntry(nn.Conv2d, "channel", _stride_conv),
    "nn.BatchNorm2d": BlockEntry(nn.BatchNorm2d, "bn"),
    "Concat": BlockEntry(Concat, "concat"),
    "Detect": BlockEntry(Detect, "head"),
    "IDetect": BlockEntry(IDetect, "head"),
    "MP": BlockEntry(MP, "passthrough", _stride_mp),
    "SP": BlockEntry(SP, "passthrough", _stride_sp),
    "nn.Upsample": BlockEntry(nn.Upsample, "passthrough", _stride_upsample),
    "nn.MaxPool2d": BlockEntry(nn.MaxPool2d, "passthrough", _stride_maxpool),
    "nn.Identity": BlockEntry(nn.Identity, "passthrough"),
}


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x``."""
    return int(math.ceil(x / divisor) * divisor)


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One resolved row.

    Attributes:
        index: row index (0-based, backbone then head).
        from_: the row's ``from`` as written.
        number: repeat count after depth scaling (for CSP blocks the count moved into args
            and the row itself is built once: ``repeats`` keeps it for display).
        name: canonical module name (a :data:`BLOCKS` key or an attention registry key).
        kind: BlockEntry kind, or ``attention``.
        args: constructor positional args (activations as :class:`ActSpec`).
        kwargs: constructor keyword args (attention hyperparameters).
        c1: input channels (a list for multi-input rows).
        c2: output channels.
        stride: output stride w.r.t. the network input (None when unknown).
        yaml_row: the row as written.
        where: ``backbone[k]`` or ``head[k]``.
        repeats: the depth-scaled repeat count (also for CSP blocks).
        cls: the block class (None for attention rows).
        head_strides: for a head row, the strides of its inputs.
        insert: for an attention row, its insertion mode (``plain`` or ``identity``).
        gate: the gate shape (``scalar``/``channel``) when the row is built gated, else None.
    """

    index: int
    from_: int | list[int]
    number: int
    name: str
    kind: str
    args: list[Any]
    kwargs: dict[str, Any]
    c1: int | list[int]
    c2: int
    stride: float | None
    yaml_row: list[Any]
    where: str
    repeats: int = 1
    cls: type[nn.Module] | None = field(default=None, repr=False)
    head_strides: list[float | None] | None = None
    insert: str | None = None
    gate: str | None = None

    def display_args(self) -> Any:
        """Resolved args in a YAML/JSON-friendly form (for tables)."""

        def conv(v: Any) -> Any:
            if isinstance(v, ActSpec):
                return str(v)
            if isinstance(v, (list, tuple)):
                return [conv(x) for x in v]
            return v

        if self.kind == "attention":
            return dict(self.kwargs)
        return conv(self.args)

    def build(self, activation: ActSpec | None = None) -> nn.Module:
        """Build the row's module (``number`` copies in a Sequential when > 1)."""
        try:
            mods = [self._build_one(activation) for _ in range(self.number)]
        except ConfigError:
            raise
        except (ValueError, TypeError, RuntimeError, KeyError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise ConfigError(f"{self.name}: {msg}", self.index, self.where) from e
        m = mods[0] if self.number == 1 else nn.Sequential(*mods)
        if self.gate is not None:
            assert isinstance(self.c1, int)
            m = ResidualGate(m, self.c1, self.gate)
        m.i, m.f, m.type = self.index, self.from_, self.name
        m.np = sum(p.numel() for p in m.parameters())
        m.args = self.display_args()
        return m

    def _build_one(self, activation: ActSpec | None) -> nn.Module:
        if self.kind == "attention":
            from yoloattn.attention import create_attention

            assert isinstance(self.c1, int)
            return create_attention(self.name, self.c1, **self.kwargs)
        assert self.cls is not None
        args = [a.build() if isinstance(a, ActSpec) else a for a in self.args]
        m = self.cls(*args, **self.kwargs)
        if activation is not None:
            for sub in m.modules():
                if isinstance(sub, Conv) and sub.uses_default_act:
                    sub.act = activation.build()
        return m


def _attention_api() -> tuple[Callable[[str], str | None], Callable[[str], Any], list[str]]:
    from yoloattn.attention import get_attention_info, list_attention, resolve_attention_key

    return resolve_attention_key, get_attention_info, [i.key for i in list_attention()]


def _close_names(name: str, attention_keys: list[str]) -> list[str]:
    candidates = list(BLOCKS) + attention_keys
    lower = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=5, cutoff=0.6)
    return [lower[h] for h in hits]


def resolve_rows(cfg: Mapping[str, Any], ch: int = 3) -> list[Row]:
    """Check every row of ``cfg`` and resolve its args, channels and stride (builds nothing).

    ``cfg['ch']`` overrides ``ch`` when present. Raises :class:`ConfigError` on the first bad
    row with its index and the reason.
    """
    check_top_level(cfg)
    resolve_key, get_info, att_keys = _attention_api()
    nc = int(cfg["nc"])
    gd = float(cfg.get("depth_multiple", 1.0))
    gw = float(cfg.get("width_multiple", 1.0))
    ch_mul = int(cfg.get("channel_multiple", 8))
    anchors = cfg.get("anchors")
    na = (anchors if is_int(anchors) else len(anchors[0]) // 2) if anchors is not None else 3
    no = na * (nc + 5)
    ch_in = int(cfg.get("ch", ch))
    nb = len(cfg["backbone"])
    raw_rows = list(cfg["backbone"]) + list(cfg["head"])
    model_insert = "identity" if cfg.get("insert") == "identity" else "plain"
    gate_shape = str(cfg.get("gate", "scalar"))

    chs: list[int] = []
    strides: list[float | None] = []
    rows: list[Row] = []
    for i, row in enumerate(raw_rows):
        where = where_of(i, nb)

        def err(reason: str, i: int = i, where: str = where) -> ConfigError:
            return ConfigError(reason, i, where)

        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise err(f"a row is [from, number, module, args], got {row!r}")
        f, n, name, args = row

        # ---- from
        srcs = sources(row, i, where)
        f_list = [w for w, _ in srcs]
        abs_from = [a for _, a in srcs]
        c_ins = [ch_in if a < 0 else chs[a] for a in abs_from]
        s_ins = [1.0 if a < 0 else strides[a] for a in abs_from]

        # ---- number
        if not is_int(n) or n < 1:
            raise err(f"'number' must be a positive int, got {n!r}")
        n = max(round(n * gd), 1) if n > 1 else n

        # ---- module name
        if not isinstance(name, str) or not name.strip():
            raise err(f"'module' must be a name string, got {name!r}")
        canon = module_name(name)
        entry = BLOCKS.get(canon)
        att_key = None if entry is not None else resolve_key(canon)
        if entry is None and att_key is None:
            close = _close_names(canon, att_keys)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise err(
                f"unknown module {name!r}.{hint} Known blocks: {', '.join(BLOCKS)}; attention "
                f"modules: `yoloattn modules` ({len(att_keys)} registered)"
            )

        multi = isinstance(f, list)
        if att_key is not None:
            # ---- attention row
            info = get_info(att_key)
            if multi and len(f_list) != 1:
                raise err(f"attention module {name!r} takes one input, got from {f!r}")
            if isinstance(args, list) and args:
                raise err(
                    f"attention rows take no channel count: the channels are the input's "
                    f"({c_ins[0]}). Write [{f}, {row[1]}, {name}, []] or give hyperparameters as a "
                    f"dict, e.g. [{f}, {row[1]}, {name}, {{reduction: 8}}]; got args {args!r}"
                )
            if args is None or args == []:
                hyper: dict[str, Any] = {}
            elif isinstance(args, Mapping):
                hyper = dict(args)
            else:
                raise err(f"attention args must be [] or a dict of hyperparameters, got {args!r}")
            row_insert = hyper.pop("insert", model_insert)
            if row_insert not in ("identity", "plain"):
                raise err(f"{att_key}: 'insert' must be identity or plain, got {row_insert!r}")
            bad = sorted(k for k in hyper if not isinstance(k, str) or k not in info.defaults)
            if bad:
                raise err(
                    f"{att_key}: unknown hyperparameter(s) {bad}; accepted: {sorted(info.defaults) or 'none'}"
                )
            c1 = c2 = c_ins[0]
            gated = row_insert == "identity" and not getattr(info, "identity_at_init", False)
            rows.append(
                Row(
                    i,
                    f,
                    n,
                    att_key,
                    "attention",
                    [],
                    hyper,
                    c1,
                    c2,
                    s_ins[0],
                    list(row),
                    where,
                    insert=row_insert,
                    gate=gate_shape if gated else None,
                )
            )
            chs.append(c2)
            strides.append(s_ins[0])
            continue

        # ---- block row
        assert entry is not None
        if not isinstance(args, list):
            raise err(f"args of {canon} must be a list, got {args!r}")
        resolved: list[Any] = []
        for a in args:
            if isinstance(a, str):
                if a == "nc":
                    a = nc
                elif a == "anchors":
                    if anchors is None:
                        raise err("args use 'anchors' but the config has no 'anchors' key")
                    a = copy.deepcopy(anchors)
                elif a in _LITERALS:
                    a = _LITERALS[a]
                else:
                    try:
                        act = parse_activation(a)
                    except ValueError as e:
                        raise err(str(e)) from None
                    a = act if act is not None else a
            elif isinstance(a, Mapping):
                raise err(f"{canon} takes positional args; a dict ({a!r}) is only for attention rows")
            resolved.append(a)

        kind = entry.kind
        if kind in ("concat", "head"):
            if not multi:
                raise err(f"{canon} takes a list of inputs in 'from', got {f!r}")
        elif multi and len(f_list) != 1:
            raise err(f"{canon} takes one input, got from {f!r}")
        c1: int | list[int] = c_ins[0]
        repeats = n
        if kind in ("channel", "csp"):
            if not resolved or not is_int(resolved[0]) or resolved[0] < 1:
                raise err(f"{canon} needs the output channel count as first arg, got {args!r}")
            c2 = resolved[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, ch_mul)
            resolved = [c1, c2, *resolved[1:]]
            if kind == "csp":
                resolved.insert(2, n)
                n = 1
        elif kind == "bn":
            resolved = [c1]
            c2 = c1
        elif kind == "concat":
            c1 = list(c_ins)
            c2 = sum(c_ins)
            known = [s for s in s_ins if s is not None]
            if known and any(abs(s - known[0]) > 1e-9 for s in known):
                raise err(
                    f"Concat inputs {f!r} have different strides {[s for s in s_ins]}; "
                    f"their feature maps cannot be concatenated"
                )
        elif kind == "head":
            if n != 1:
                raise err(f"{canon} cannot be repeated (number {row[1]})")
            if len(resolved) < 2:
                raise err(f"{canon} args are [nc, anchors], got {args!r}")
            if is_int(resolved[1]):
                resolved[1] = [list(range(resolved[1] * 2))] * len(f_list)
            anc = resolved[1]
            if not isinstance(anc, list) or len(anc) != len(f_list):
                raise err(
                    f"{canon} has {len(f_list)} inputs but "
                    f"{len(anc) if isinstance(anc, list) else anc!r} anchor levels"
                )
            if not is_int(resolved[0]) or resolved[0] < 1:
                raise err(f"{canon}: nc must be a positive int, got {resolved[0]!r}")
            resolved.append(list(c_ins))
            c1 = list(c_ins)
            c2 = (len(anc[0]) // 2) * (resolved[0] + 5)
        else:  # passthrough
            c2 = c_ins[0]

        try:
            inspect.signature(entry.cls).bind(*resolved)
        except TypeError as e:
            raise err(f"{canon} does not take these arguments (resolved: {resolved!r}): {e}") from None

        if kind == "concat":
            s_out = next((s for s in s_ins if s is not None), None)
        elif kind == "head":
            s_out = None
        else:
            factor = entry.stride(resolved) if s_ins[0] is not None else None
            s_out = None if factor is None or s_ins[0] is None else s_ins[0] * factor
        r = Row(i, f, n, canon, kind, resolved, {}, c1, c2, s_out, list(row), where, repeats)
        r.cls = entry.cls
        if kind == "head":
            r.head_strides = [strides[a] for a in abs_from]
        rows.append(r)
        chs.append(c2)
        strides.append(s_out)
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
