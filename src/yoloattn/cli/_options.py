"""Command-line options generated from a config dataclass: names, defaults and help in one place.

A field made with :func:`yoloattn.engine.train_config.option` carries its help text, its scope
(which subcommands offer it), an optional flag name and further argparse keywords in its
metadata. The rest follows from the annotation:

* ``bool``: a switch; ``--field-name`` turns a ``False`` default on; a ``True`` default needs a
  ``flag`` that turns it off (``--no-amp``);
* ``list[T]``: any number of ``T`` (``--freeze 0 1 2``);
* ``dict[str, float]``: repeatable ``KEY=VALUE`` items, also comma-separated
  (``--set lr0=0.02,mosaic=0``), read by :func:`parse_overrides` after parsing, so a bad item is
  reported as the command's error rather than a usage error;
* ``T`` or ``T | None``: one ``T`` (strings stay strings).

The option's destination is the field's name; :func:`config_options` reads the parsed values
back into keyword arguments for the dataclass (an option left unset, ``None``, gives the field's
default).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

__all__ = ["HelpFormatter", "add_config_options", "config_options", "parse_overrides"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks (examples) and shows each option's default in plain
    text, unless the help already explains it, the option is a switch, or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or action.nargs == 0  # switches: off unless given
            or default in (None, argparse.SUPPRESS, "", [])
            or "default" in text
        ):
            return action.help
        return f"{text} (default: {default})" if text else f"default: {default}"


def parse_overrides(items: list[str] | None) -> dict[str, float]:
    """``['lr0=0.02', 'mosaic=0']`` -> ``{'lr0': 0.02, 'mosaic': 0.0}`` with clear errors."""
    out: dict[str, float] = {}
    for item in items or []:
        for part in item.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(f"hyperparameter override {part!r} must look like key=value (e.g. lr0=0.02)")
            k, v = part.split("=", 1)
            try:
                out[k.strip()] = float(v)
            except ValueError:
                raise ValueError(f"hyperparameter {k.strip()!r}: value {v!r} is not a number") from None
    return out


def _fields(cls: type, scope: str) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("scope") == scope]


def _base(tp: Any) -> Any:
    """``int | None`` -> ``int``; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"option {f.name!r} has no default")


def add_config_options(
    parser: argparse.ArgumentParser, cls: type, scope: str, title: str | None = None
) -> argparse._ArgumentGroup:
    """Add one option per field of dataclass ``cls`` whose scope is ``scope`` (in field order),
    in an argument group named ``title``; returns the group."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title)
    for f in _fields(cls, scope):
        md = f.metadata
        kw: dict[str, Any] = dict(md.get("cli", {}))
        default = kw.pop("cli_default", _default(f))
        flag = md.get("flag") or "--" + f.name.replace("_", "-")
        flags = flag if isinstance(flag, tuple) else (flag,)  # e.g. ("-o", "--output")
        tp = _base(hints[f.name])
        origin = typing.get_origin(tp)
        if tp is bool:
            if default and not md.get("flag"):
                raise TypeError(f"switch {f.name!r} is on by default: give it a flag that turns it off")
            kw["action"] = "store_false" if default else "store_true"
        elif origin is dict:
            kw.update(action="append", metavar=kw.get("metavar", "KEY=VALUE"))
            default = None  # read by parse_overrides
        elif origin is list:
            kw.setdefault("nargs", "*")
            (item,) = typing.get_args(tp)
            if item is not str:
                kw["type"] = item
        elif tp is not str:
            kw["type"] = tp
        group.add_argument(*flags, dest=f.name, default=default, help=md["help"], **kw)
    return group


def config_options(args: argparse.Namespace, cls: type, scope: str) -> dict[str, Any]:
    """The parsed values of :func:`add_config_options`'s options, as ``cls`` keyword arguments."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in _fields(cls, scope):
        value = getattr(args, f.name)
        origin = typing.get_origin(_base(hints[f.name]))
        if origin is dict:
            value = parse_overrides(value)
        elif value is None:
            value = _default(f)
        elif origin is list:
            value = list(value)
        out[f.name] = value
    return out
