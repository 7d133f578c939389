"""Registry of attention modules: lookup by key, metadata, parameter formulas, keyword aliases.

Every module of the zoo registers itself with :func:`register_attention`, which records the
paper it follows and the paper's formula for its learnable parameter count. Tests hold every
module to that formula, so a registered module cannot silently drift from its paper.

Keyword vocabulary: hyperparameters share one spelling across the zoo (``reduction``,
``kernel_size``, ``kernel_sizes``, ``groups``, ``act``). A module whose older releases used another
spelling registers it in ``aliases`` (old name -> new name, or ``(new name, converter)`` when
the value changes form, e.g. gc's ``ratio=1/16`` -> ``reduction=16``). The old spelling is then
still accepted, by direct construction, :func:`create_attention` and
:meth:`AttentionInfo.params`, with a ``DeprecationWarning`` naming the new spelling.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "AttentionInfo",
    "register_attention",
    "create_attention",
    "list_attention",
    "get_attention_info",
    "resolve_attention_key",
]

#: an alias target: the new keyword, or the new keyword and a converter of the old value
AliasTarget = str | tuple[str, Callable[[Any], Any]]

CATEGORIES = (
    "channel",
    "spatial",
    "channel+spatial",
    "self-attention",
    "context",
    "large-kernel",
    "mlp",
    "parameter-free",
)


@dataclass(frozen=True)
class AttentionInfo:
    """Metadata of one registered attention module.

    Attributes:
        key: registry key, lowercase (e.g. ``"cbam"``).
        cls: the ``nn.Module`` class; built as ``cls(channels, **hyper)``.
        paper: paper title.
        venue: venue (e.g. ``"ECCV"``), or ``"arXiv"``/``"code"`` when unpublished.
        year: publication year.
        category: one of :data:`CATEGORIES`.
        reference: official code, as ``"owner/repo path/to/file.py"`` (or ``"none"``).
        params_fn: ``params_fn(channels, **hyper) -> int``, the paper's parameter formula.
        summary: one sentence on what the module attends to.
        equations: which equations/figure of the paper the implementation follows.
        size_dependent: True if the module only accepts (or adapts to) certain H, W.
        fixed_size: for size-dependent modules, a spatial size ``(H, W)`` that is valid at the
            default hyperparameters (tests use it); None when any size works.
        onnx: True if the module exports to ONNX with dynamic H/W and matches onnxruntime.
        onnx_note: why export is unsupported (when ``onnx`` is False).
        onnx_opset: the lowest ONNX opset at which the module exports with dynamic H/W and
            matches onnxruntime (the legacy TorchScript exporter; e.g. ``einsum`` needs 12).
            ``yoloattn export`` refuses a lower ``--opset`` and names this one.
        identity_init: ``"exact"`` if the freshly built module returns its input exactly,
            ``"near"`` if close to identity, ``""`` otherwise.
        source_note: where the definition comes from when it matters (licence, variants).
        formula: the parameter formula as text, e.g. ``"2C^2/r + C/r + C"`` (for the docs).
        defaults: the constructor's keyword defaults (new spellings only).
        aliases: deprecated keyword spellings, old name -> new name (or ``(new, converter)``).
    """

    key: str
    cls: type[nn.Module]
    paper: str
    venue: str
    year: int
    category: str
    reference: str
    params_fn: Callable[..., int]
    summary: str = ""
    equations: str = ""
    size_dependent: bool = False
    fixed_size: tuple[int, int] | None = None
    onnx: bool = True
    onnx_note: str = ""
    onnx_opset: int = 9
    identity_init: str = ""
    source_note: str = ""
    formula: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    aliases: Mapping[str, AliasTarget] = field(default_factory=dict)

    @property
    def identity_at_init(self) -> bool:
        """True iff a freshly built module (default hyperparameters) returns its input exactly.

        Holds in both train and eval mode (a zero-initialised residual branch or gate, e.g.
        GC's last conv, Non-local's BN, CCNet's gamma, GCT's gamma); the zoo tests check it
        for every key. Derived from ``identity_init == "exact"``, the one place it is declared.
        """
        return self.identity_init == "exact"

    def canonical_hyper(self, hyper: Mapping[str, Any]) -> dict[str, Any]:
        """``hyper`` with deprecated spellings replaced by the current ones (warns for each)."""
        return translate_aliases(self.key, self.aliases, hyper, stacklevel=3)

    def params(self, channels: int, **hyper: Any) -> int:
        """Learnable parameter count given by the paper's formula."""
        kwargs = {**self.defaults, **self.canonical_hyper(hyper)}
        return int(self.params_fn(channels, **kwargs))

    def build(self, channels: int, **hyper: Any) -> nn.Module:
        return self.cls(channels, **hyper)


_REGISTRY: dict[str, AttentionInfo] = {}


def translate_aliases(
    key: str, aliases: Mapping[str, AliasTarget], hyper: Mapping[str, Any], stacklevel: int = 2
) -> dict[str, Any]:
    """Replace deprecated keyword spellings in ``hyper`` by the current ones.

    Emits one ``DeprecationWarning`` per old spelling used, naming the new one; passing both
    spellings of one hyperparameter is a TypeError. ``stacklevel`` counts from the caller of
    this function (2 = the frame that called it).
    """
    out = dict(hyper)
    for old, target in aliases.items():
        if old not in out:
            continue
        new, convert = (target, None) if isinstance(target, str) else target
        if new in out:
            raise TypeError(f"{key}: got both {old!r} (deprecated) and {new!r}; pass only {new}=...")
        value = out.pop(old)
        shown = "" if convert is None else " (value converted)"
        warnings.warn(
            f"{key}: hyperparameter {old!r} is deprecated, use {new!r}{shown}",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
        out[new] = value if convert is None else convert(value)
    return out


def _accept_aliases(cls: type[nn.Module], key: str, aliases: Mapping[str, AliasTarget]) -> None:
    """Make ``cls(channels, old_name=...)`` translate deprecated keywords (with a warning)."""
    init: Callable[..., None] = cls.__init__

    @functools.wraps(init)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **translate_aliases(key, aliases, kwargs, stacklevel=2))

    cls.__init__ = __init__  # type: ignore[method-assign]


def _constructor_defaults(cls: type) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    out: dict[str, Any] = {}
    for i, (name, p) in enumerate(sig.parameters.items()):
        if i < 2:  # self, channels
            continue
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is not inspect.Parameter.empty:
            out[name] = p.default
    return out


def register_attention(
    key: str,
    *,
    paper: str,
    venue: str,
    year: int,
    category: str,
    reference: str,
    params: Callable[..., int],
    aliases: Mapping[str, AliasTarget] | None = None,
    **meta: Any,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that adds a module to the zoo under ``key``.

    ``params`` receives ``(channels, **hyper)`` where ``hyper`` holds the constructor's
    defaults overridden by the caller's values, so formulas can name any hyperparameter.
    ``aliases`` maps deprecated keyword spellings to the current ones (see the module doc).
    """
    if key != key.lower():
        raise ValueError(f"attention key {key!r} must be lowercase")
    if category not in CATEGORIES:
        raise ValueError(f"category {category!r} of {key!r} is not one of {CATEGORIES}")

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if key in _REGISTRY:
            raise ValueError(f"attention key {key!r} is registered twice")
        defaults = _constructor_defaults(cls)
        for old, target in (aliases or {}).items():
            new = target if isinstance(target, str) else target[0]
            if old in defaults or new not in defaults:
                raise ValueError(f"{key}: alias {old!r} -> {new!r} must map an old name to a current keyword")
        if aliases:
            _accept_aliases(cls, key, aliases)
        _REGISTRY[key] = AttentionInfo(
            key=key,
            cls=cls,
            paper=paper,
            venue=venue,
            year=year,
            category=category,
            reference=reference,
            params_fn=params,
            defaults=defaults,
            aliases=dict(aliases or {}),
            **meta,
        )
        cls.attention_key = key  # type: ignore[attr-defined]
        return cls

    return deco


def _ensure_loaded() -> None:
    # Importing the package imports every family module, which fills the registry.
    from yoloattn import attention  # noqa: F401


def resolve_attention_key(name: str) -> str | None:
    """Return the registry key for ``name`` (case-insensitive), or None if unknown."""
    _ensure_loaded()
    k = name.strip().lower()
    return k if k in _REGISTRY else None


def _unknown(name: str) -> KeyError:
    keys = sorted(_REGISTRY)
    close = difflib.get_close_matches(name.lower(), keys, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return KeyError(
        f"unknown attention module {name!r}.{hint} "
        f"Run `yoloattn modules` for the full list ({len(keys)} modules)."
    )


def get_attention_info(name: str) -> AttentionInfo:
    """Metadata for ``name`` (case-insensitive); ``KeyError`` listing close keys if unknown."""
    key = resolve_attention_key(name)
    if key is None:
        raise _unknown(name)
    return _REGISTRY[key]


def create_attention(name: str, channels: int, **hyper: Any) -> nn.Module:
    """Build attention module ``name`` for ``channels`` input channels.

    >>> m = create_attention("cbam", 256, reduction=8)
    """
    info = get_attention_info(name)
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"{info.key}: channels must be a positive int, got {channels!r}")
    valid = set(info.defaults)
    unknown = sorted(set(hyper) - valid - set(info.aliases))
    if unknown:
        raise TypeError(
            f"{info.key}: unknown hyperparameter(s) {unknown}; accepted: {sorted(valid) or 'none'}"
        )
    return info.cls(channels, **info.canonical_hyper(hyper))


def list_attention() -> list[AttentionInfo]:
    """All registered modules, sorted by key."""
    _ensure_loaded()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def check_hyper(name: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """``hyper`` (a new dict) once every name in it is a hyperparameter of module ``name``.

    The one check of attention hyperparameter names, for YAML rows, placement specs and the
    factory alike: ``KeyError`` (close keys named) for an unknown module, ``ValueError`` naming
    the unknown hyperparameters and the accepted ones. Deprecated spellings (``k_size``,
    ``ratio``, ...) are accepted with a ``DeprecationWarning`` and come back under their current names.
    """
    info = get_attention_info(name)
    hyper = info.canonical_hyper(hyper)
    bad = sorted((k for k in hyper if not isinstance(k, str) or k not in info.defaults), key=str)
    if bad:
        raise ValueError(
            f"{info.key}: unknown hyperparameter(s) {bad}; accepted: {sorted(info.defaults) or 'none'}"
        )
    return dict(hyper)
