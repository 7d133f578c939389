"""``yoloattn modules``: print the attention zoo as a table (text, markdown, csv or json)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("modules", help="list the attention zoo", description=__doc__)
    p.add_argument("--format", choices=["text", "markdown", "csv", "json"], default="text")
    p.add_argument("--channels", type=int, default=256, help="channels for the params column")
    return p


def zoo_rows(channels: int = 256) -> list[dict[str, Any]]:
    from yoloattn.attention import list_attention

    rows = []
    for info in list_attention():
        rows.append(
            {
                "key": info.key,
                "category": info.category,
                "paper": info.paper,
                "venue": info.venue,
                "year": info.year,
                f"params@{channels}": info.params(channels),
                "size_dependent": info.size_dependent,
                "onnx": info.onnx,
                "onnx_opset": info.onnx_opset,
                "identity_at_init": info.identity_at_init,
                "reference": info.reference,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]], fmt: str) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cells = [[str(r[c]) for c in cols] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(s.rstrip() for s in out)


def run(args: argparse.Namespace) -> int:
    rows = zoo_rows(args.channels)
    if args.format == "text":
        cols = ["key", "category", "paper", "venue", "year", f"params@{args.channels}"]
        rows_short = []
        for r in rows:
            short = {c: r[c] for c in cols}
            paper = str(short["paper"])
            short["paper"] = paper if len(paper) <= 60 else paper[:57] + "..."
            short["venue"] = f"{r['venue']} {r['year']}"
            del short["year"]
            rows_short.append(short)
        text = format_table(rows_short, "text")
        sys.stdout.write(text + f"\n\n{len(rows)} modules\n")
    else:
        sys.stdout.write(format_table(rows, args.format) + "\n")
    return 0
