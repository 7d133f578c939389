"""Attention placement specs: the ``--attention`` grammar and the config's ``attention:`` key.

A spec says which attention modules go where; :mod:`yoloattn.models.placement` inserts them.

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

The model-level ``attention:`` key of a config (:func:`config_placements`) takes the same spec
string, or a list whose items are spec strings or mappings
``{after: ROW, module: KEY, args: {...}, insert: identity|plain}`` (``after``: an original row
index, a list of them, or ``backbone``/``neck``/``all``; ``args`` and ``insert`` optional)::

    attention: cbam(reduction=8)@neck
    attention:
      - {after: 8, module: se}
      - {after: [17, 20, 23], module: cbam, args: {reduction: 8}, insert: identity}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from yoloattn.models.config import ConfigError, is_int

__all__ = ["Placement", "PRESETS", "parse_attention_spec", "config_placements"]

PRESETS = ("backbone", "neck", "all")
_ALIASES = {"head": "neck"}
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT_RE = re.compile(r"^\d+$")
_ITEM_KEYS = ("after", "module", "args", "insert")


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
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
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
    hyper = check_hyper(key, {k: v for k, v in p.hyper.items() if k != "insert"})  # insert: the row's mode
    if "insert" in p.hyper:
        hyper["insert"] = p.hyper["insert"]
    return Placement(key, p.where, p.indices, hyper)


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


# ----------------------------------------------------------------------------- the attention: key


def _key_error(reason: str) -> ConfigError:
    return ConfigError(f"'attention': {reason}")


def _message(e: Exception) -> str:
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def _item_placement(k: int, item: Mapping[str, Any]) -> Placement:
    form = "{after: ROW, module: KEY, args: {...}, insert: identity|plain}"
    unknown = sorted(str(x) for x in item if x not in _ITEM_KEYS)
    if unknown:
        raise _key_error(f"item {k}: unknown field(s) {unknown}; an item is {form}")
    if "after" not in item or "module" not in item:
        raise _key_error(f"item {k}: needs 'after' and 'module'; an item is {form}")
    module, after, args = item["module"], item["after"], item.get("args") or {}
    if not isinstance(module, str) or not _KEY_RE.match(module):
        raise _key_error(f"item {k}: 'module' must be an attention key such as cbam, got {module!r}")
    if not isinstance(args, Mapping):
        raise _key_error(f"item {k}: 'args' must be a mapping of hyperparameters, got {args!r}")
    hyper = dict(args)
    if "insert" in item:
        if item["insert"] not in ("identity", "plain"):
            raise _key_error(f"item {k}: 'insert' must be identity or plain, got {item['insert']!r}")
        hyper["insert"] = item["insert"]
    rows = after if isinstance(after, list) else [after]
    if isinstance(after, str) and _ALIASES.get(after.lower(), after.lower()) in PRESETS:
        p = Placement(module, _ALIASES.get(after.lower(), after.lower()), (), hyper)
    elif rows and all(is_int(r) and r >= 0 for r in rows):
        p = Placement(module, "index", tuple(rows), hyper)
    else:
        raise _key_error(
            f"item {k}: 'after' must be a row index of the config as written, a list of them, or "
            f"backbone/neck/all, got {after!r}"
        )
    try:
        return _validate(p)
    except (KeyError, ValueError) as e:
        raise _key_error(f"item {k}: {_message(e)}") from None


def config_placements(value: Any) -> list[Placement]:
    """The placements of a config's ``attention:`` key (module docstring), validated.

    ``None`` or an empty list give none. Raises :class:`~yoloattn.models.config.ConfigError`
    with a one-line message naming the key.
    """
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return parse_attention_spec(value)
        except (KeyError, ValueError) as e:
            raise _key_error(_message(e)) from None
    if not isinstance(value, list):
        raise _key_error(
            f"expected a spec string (e.g. cbam@neck) or a list of items, got {type(value).__name__}"
        )
    out: list[Placement] = []
    for k, item in enumerate(value):
        if isinstance(item, str):
            try:
                out.extend(parse_attention_spec(item))
            except (KeyError, ValueError) as e:
                raise _key_error(f"item {k}: {_message(e)}") from None
        elif isinstance(item, Mapping):
            out.append(_item_placement(k, item))
        else:
            raise _key_error(f"item {k}: expected a spec string or a mapping, got {item!r}")
    return out
