"""The parser's tables: the block names a config row may use and the activations it may name.

Module names resolve through :data:`BLOCKS` (explicit, never ``eval``): each entry gives the class,
the *kind* that tells the parser how to derive the constructor args and channels (one resolver
per kind in :mod:`yoloattn.models.parse`) and the output stride factor. Activations written in
args or in the model-level ``activation:`` key (``nn.LeakyReLU(0.1)``) are parsed by
:func:`parse_activation` into an :class:`ActSpec` from :data:`ACTIVATIONS`.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from yoloattn.nn import (
    C2PSA,
    C3,
    MP,
    SP,
    SPP,
    SPPCSPC,
    SPPF,
    Bottleneck,
    C2f,
    C3k,
    C3k2,
    Concat,
    Conv,
    Detect,
    DWConv,
    Focus,
    IDetect,
    RepConv,
)

__all__ = [
    "ACTIVATIONS",
    "LITERALS",
    "BLOCKS",
    "NON_LEGACY_HEAD_MODULES",
    "ActSpec",
    "BlockEntry",
    "parse_activation",
    "make_divisible",
]

# --------------------------------------------------------------------------- activations

#: Modules whose presence makes the anchor-free head non-``legacy`` (the YOLO11 class branch).
NON_LEGACY_HEAD_MODULES = frozenset({"C3k2", "C2fCIB", "A2C2f"})

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
LITERALS: dict[str, Any] = {"True": True, "False": False, "None": None}


def _literal(text: str) -> Any:
    """A number or True/False/None (the only literals allowed inside ``nn.X(...)``)."""
    t = text.strip()
    if t in LITERALS:
        return LITERALS[t]
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
    scale_rule: rewrites the resolved args for the config's scale letter (YOLOv8/11 ``scales``
        configs; None for the others), e.g. :func:`_c3k2_scale_rule`.
    """

    cls: type[nn.Module]
    kind: str
    stride: Callable[[list[Any]], float | None] = _stride_one
    scale_rule: Callable[[list[Any], str | None], list[Any]] | None = None


def _c3k2_scale_rule(args: list[Any], scale: str | None) -> list[Any]:
    """Scales m, l and x force ``c3k=True`` (resolved ``args[3]``) on every C3k2 row (spec 1.2)."""
    if scale is None or scale not in ("m", "l", "x"):
        return args
    out = list(args)
    if len(out) > 3:
        out[3] = True
    else:
        out.append(True)
    return out


BLOCKS: dict[str, BlockEntry] = {
    "Conv": BlockEntry(Conv, "channel", _stride_conv),
    "DWConv": BlockEntry(DWConv, "channel", _stride_conv),
    "RepConv": BlockEntry(RepConv, "channel", _stride_conv),
    "Focus": BlockEntry(Focus, "channel", _stride_focus),
    "Bottleneck": BlockEntry(Bottleneck, "channel"),
    "SPP": BlockEntry(SPP, "channel"),
    "SPPF": BlockEntry(SPPF, "channel"),
    "C3": BlockEntry(C3, "csp"),
    "C2f": BlockEntry(C2f, "csp"),
    "C3k": BlockEntry(C3k, "csp"),
    "C3k2": BlockEntry(C3k2, "csp", scale_rule=_c3k2_scale_rule),
    "C2PSA": BlockEntry(C2PSA, "csp"),
    "SPPCSPC": BlockEntry(SPPCSPC, "csp"),
    "nn.Conv2d": BlockEntry(nn.Conv2d, "channel", _stride_conv),
    "nn.BatchNorm2d": BlockEntry(nn.BatchNorm2d, "bn"),
    "Concat": BlockEntry(Concat, "concat"),
    "Detect": BlockEntry(Detect, "head"),  # [nc] alone: the anchor-free DFLDetect (parse.py)
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
