"""Command-line entry point ``yoloattn`` with one subcommand per file in this package.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int``. Subcommand
modules keep heavy imports (torch, models, engine) inside ``run`` so ``yoloattn --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# (subcommand, module): order is the order shown in --help.
SUBCOMMANDS = [
    ("compare", "yoloattn.cli.compare"),
    ("train", "yoloattn.cli.train"),
    ("val", "yoloattn.cli.val"),
    ("predict", "yoloattn.cli.predict"),
    ("explain", "yoloattn.cli.explain"),
    ("export", "yoloattn.cli.export"),
    ("info", "yoloattn.cli.info"),
    ("modules", "yoloattn.cli.modules"),
    ("data", "yoloattn.cli.data"),
    ("convert", "yoloattn.cli.convert"),
]


def build_parser() -> argparse.ArgumentParser:
    from yoloattn import __version__

    parser = argparse.ArgumentParser(
        prog="yoloattn",
        description="Attention modules for YOLOv5/YOLOv7: zoo, models, training, evaluation, ablations.",
    )
    parser.add_argument("--version", action="version", version=f"yoloattn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, modname in SUBCOMMANDS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:  # subcommand not shipped in this build
            if e.name != modname:
                raise
            continue
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    if int(os.environ.get("RANK", 0)) > 0:  # under torchrun only rank 0 reports, as officially
        level = max(level, logging.WARNING)
    logging.basicConfig(
        level=level,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        if args.verbose:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"yoloattn {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
