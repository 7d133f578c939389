"""Registry of attention modules: lookup by key, metadata, parameter formulas.

Every module of the zoo registers itself with :func:`register_attention`, which records the
paper it follows and the paper's formula for its learnable parameter count. Tests hold every
module to that formula, so a registered module cannot silently drift from its paper.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
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
        identity_init: ``"exact"`` if the freshly built module returns its input exactly,
            ``"near"`` if close to identity, ``""`` otherwise.
        source_note: where the definition comes from when it matters (licence, variants).
        formula: the parameter formula as text, e.g. ``"2C^2/r + C/r + C"`` (for the docs).
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
    identity_init: str = ""
    source_note: str = ""
    formula: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    def params(self, channels: int, **hyper: Any) -> int:
        """Learnable parameter count given by the paper's formula."""
        kwargs = {**self.defaults, **hyper}
        return int(self.params_fn(channels, **kwargs))

    def build(self, channels: int, **hyper: Any) -> nn.Module:
        return self.cls(channels, **hyper)


_REGISTRY: dict[str, AttentionInfo] = {}


def _constructor_defaults(cls: type) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)
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
    **meta: Any,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that adds a module to the zoo under ``key``.

    ``params`` receives ``(channels, **hyper)`` where ``hyper`` holds the constructor's
    defaults overridden by the caller's values, so formulas can name any hyperparameter.
    """
    if key != key.lower():
        raise ValueError(f"attention key {key!r} must be lowercase")
    if category not in CATEGORIES:
        raise ValueError(f"category {category!r} of {key!r} is not one of {CATEGORIES}")

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if key in _REGISTRY:
            raise ValueError(f"attention key {key!r} is registered twice")
        _REGISTRY[key] = AttentionInfo(
            key=key,
            cls=cls,
            paper=paper,
            venue=venue,
            year=year,
            category=category,
            reference=reference,
            params_fn=params,
            defaults=_constructor_defaults(cls),
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
    unknown = sorted(set(hyper) - valid)
    if unknown:
        raise TypeError(
            f"{info.key}: unknown hyperparameter(s) {unknown}; accepted: {sorted(valid) or 'none'}"
        )
    return info.cls(channels, **hyper)


def list_attention() -> list[AttentionInfo]:
    """All registered modules, sorted by key."""
    _ensure_loaded()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def check_hyper(name: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """``hyper`` (a new dict) once every name in it is a hyperparameter of module ``name``.

    The one check of attention hyperparameter names, for YAML rows, placement specs and the
    factory alike: ``KeyError`` (close keys named) for an unknown module, ``ValueError`` naming
    the unknown hyperparameters and the accepted ones.
    """
    info = get_attention_info(name)
    bad = sorted((k for k in hyper if not isinstance(k, str) or k not in info.defaults), key=str)
    if bad:
        raise ValueError(
            f"{info.key}: unknown hyperparameter(s) {bad}; accepted: {sorted(info.defaults) or 'none'}"
        )
    return dict(hyper)
