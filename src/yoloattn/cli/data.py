"""``yoloattn data check DATA.yaml``: scan every split, print counts and problems, plot labels.

Prints per split the usable images, backgrounds, boxes, skipped files and dropped label lines,
a per-class box table, every problem found (``--max-problems`` per split), and writes
``labels.png`` (train split; other splits as ``labels_<split>.png``) to ``--out``
(default ``runs/data/<yaml stem>/``). Exit status 1 when a split has no usable image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("data", help="dataset tools (check)", description="Dataset tools.")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    c = data_sub.add_parser("check", help="check a dataset YAML and plot its labels", description=__doc__)
    c.add_argument("data", help="dataset YAML (path, train, val, [test], names)")
    c.add_argument("--out", default=None, help="output folder (default runs/data/<yaml stem>/)")
    c.add_argument(
        "--max-problems", type=int, default=50, help="problems listed per split (-1: all; default 50)"
    )
    c.add_argument("--no-cache", action="store_true", help="rescan even when a valid scan cache exists")
    c.add_argument("--no-plots", action="store_true", help="do not write labels.png")
    p.set_defaults(_data_parser=p)
    return p


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    right = [bool(rows) and all(r[i].lstrip("-").isdigit() for r in rows) for i in range(len(header))]
    fmt_row = lambda r: "  ".join(  # noqa: E731
        (v.rjust(w) if right[i] else v.ljust(w)) for i, (v, w) in enumerate(zip(r, widths))
    )
    lines = [fmt_row(header), "  ".join("-" * w for w in widths), *(fmt_row(r) for r in rows)]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "data_command", None) != "check":
        args._data_parser.print_help()
        return 2
    from yoloattn.data import PROBLEM_KINDS, load_dataset_config, scan_split

    cfg = load_dataset_config(args.data)
    out_dir = Path(args.out) if args.out else Path("runs") / "data" / Path(args.data).stem
    w = sys.stdout.write
    w(f"dataset: {cfg.yaml_path}\nroot:    {cfg.root}\nclasses: {cfg.nc}\n\n")

    reports: dict[str, Any] = {}
    errors: list[str] = []
    for split in ("train", "val", "test"):
        sources = cfg.split(split)
        if not sources:
            continue
        try:
            reports[split] = scan_split(sources, nc=cfg.nc, prefix=f"{split}: ", use_cache=not args.no_cache)
        except (FileNotFoundError, ValueError) as e:
            errors.append(f"{split}: {e}")

    rows = []
    for split, r in reports.items():
        counts = r.counts
        rows.append(
            [
                split,
                str(r.n_found),
                str(r.n_images),
                str(r.n_backgrounds),
                str(r.n_boxes),
                str(r.n_skipped),
                str(r.n_dropped_lines),
                str(counts.get("clipped", 0)),
                str(len(r.problems)),
            ]
        )
    header = [
        "split",
        "files",
        "images",
        "backgrounds",
        "boxes",
        "skipped",
        "lines dropped",
        "clipped",
        "problems",
    ]
    w(_table(header, rows) + "\n\n")

    if reports:
        per_class = {s: r.per_class(cfg.nc) for s, r in reports.items()}
        crow = [
            [str(i), name, *(str(int(per_class[s][i])) for s in reports)] for i, name in enumerate(cfg.names)
        ]
        w("boxes per class:\n" + _table(["id", "name", *reports], crow) + "\n")
        for s, pc in per_class.items():
            missing = [cfg.names[i] for i in range(cfg.nc) if pc[i] == 0]
            w(f"{s}: {int((pc > 0).sum())}/{cfg.nc} classes present")
            w(f" (no boxes: {', '.join(missing)})\n" if missing and len(missing) <= 20 else "\n")
        w("\n")

    limit = None if args.max_problems < 0 else args.max_problems
    for split, r in reports.items():
        if not r.problems:
            w(f"{split}: no problems found\n")
            continue
        w(f"{split}: {len(r.problems)} problems\n")
        for kind, n in r.counts.items():
            w(f"  {n:6d}  {kind}: {PROBLEM_KINDS[kind]}\n")
        for line in r.problem_lines(limit):
            w(f"    {line}\n")
    for split, r in reports.items():
        if r.cache_file:
            w(f"{split}: scan cache {r.cache_file}{' (reused)' if r.from_cache else ''}\n")

    status = 0
    for split, r in reports.items():
        try:
            r.raise_if_empty(cfg.split(split))
        except ValueError as e:
            errors.append(str(e))

    if not args.no_plots:
        from yoloattn.data.plots import plot_labels

        for split, r in reports.items():
            if not r.n_images:
                continue
            name = "labels.png" if split == "train" else f"labels_{split}.png"
            path = plot_labels(
                r.all_labels(), cfg.names, out_dir / name, title=f"{cfg.yaml_path.stem} {split}"
            )
            w(f"wrote {path}\n")
    for err in errors:
        print(f"yoloattn data check: error: {err}", file=sys.stderr)
        status = 1
    return status
