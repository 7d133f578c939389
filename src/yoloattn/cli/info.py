"""``yoloattn info``: per-row table, parameters, GFLOPs and CPU latency of a detector.

Examples::

    yoloattn info yolov5s
    yoloattn info yolov7-tiny --attention cbam@neck --imgsz 480 640 --save tiny-cbam.yaml
    yoloattn info yolov8n --fuse
    yoloattn info yolo11s --attention cbam@neck
    yoloattn info yolov5s --attention se@backbone --insert identity --gate channel
    yoloattn info my.yaml --nc 3 --runs 0 --format json
    yoloattn info runs/train/exp --imgsz 320      # a run folder or a .safetensors weights file
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "info",
        help="show a model's rows, parameters, GFLOPs and latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        help="shipped name (yolov5n..x, yolov7-tiny, yolov7, yolov7x, yolov8n..x, yolo11n..x), YAML "
        "path, weights (.safetensors) or run folder",
    )
    p.add_argument("--attention", default=None, help="attention placement spec, e.g. cbam@backbone")
    p.add_argument(
        "--insert",
        choices=["auto", "identity", "plain"],
        default="auto",
        help="insertion mode of the attention rows: identity (zero-initialised residual gates) or "
        "plain; auto (default) keeps the config's own mode, else plain (info transfers no weights)",
    )
    p.add_argument(
        "--gate", choices=["scalar", "channel"], default=None, help="gate shape of identity insertion"
    )
    p.add_argument(
        "--allow-unused-rows",
        action="store_true",
        help="skip the miswire check (rows nobody reads, misplaced Detect inputs): research configs",
    )
    p.add_argument("--imgsz", type=int, nargs="+", default=[640], metavar="N", help="input size: N or H W")
    p.add_argument("--nc", type=int, default=None, help="number of classes (overrides the config)")
    p.add_argument("--save", type=Path, default=None, help="write the resolved config YAML here")
    p.add_argument("--runs", type=int, default=10, help="timed CPU runs for latency (0: skip)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs before timing")
    p.add_argument("--fuse", action="store_true", help="fuse Conv+BN / RepConv / implicit layers")
    p.add_argument("--format", choices=["text", "json"], default="text")
    return p


def _short(v: Any, limit: int = 40) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= limit else s[: limit - 3] + "..."


def measure_latency(model: Any, x: Any, runs: int, warmup: int) -> dict[str, float]:
    """Median / min / max wall time in ms of ``model(x)`` in inference mode."""
    import torch

    model.eval()
    times = []
    with torch.inference_mode():
        for _ in range(max(warmup, 0)):
            model(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000.0)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "runs": runs,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = ["#", "from", "n", "module", "args", "params", "GFLOPs", "output"]
    cells = [
        [
            str(r["i"]),
            json.dumps(r["from"]),
            str(r["n"]),
            str(r["type"]),
            _short(r["args"]),
            f"{r['params']:,}",
            f"{r['gflops']:.3f}",
            "x".join(str(v) for v in r["shape"])
            if r["shape"] and all(isinstance(v, int) for v in r["shape"])
            else str(r["shape"]),
        ]
        for r in rows
    ]
    widths = [max(len(c), *(len(row[k]) for row in cells)) for k, c in enumerate(cols)]
    right = {0, 2, 5, 6}

    def fmt(vals: list[str]) -> str:
        out = [v.rjust(w) if k in right else v.ljust(w) for k, (v, w) in enumerate(zip(vals, widths))]
        return "  ".join(out).rstrip()

    return "\n".join([fmt(cols), fmt(["-" * w for w in widths]), *(fmt(c) for c in cells)])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def format_insertion(ins: dict[str, Any]) -> str:
    """``insertion: identity (3 gated rows)`` and the like, from the summary's insertion keys."""
    mode, n_att, n_gated = ins["insert"], ins["attention_rows"], ins["gated_rows"]
    if mode == "plain":
        detail = _plural(n_att, "attention row")
    elif mode == "identity":
        detail = _plural(n_gated, "gated row")
        if n_gated != n_att:
            detail += f" of {n_att} attention rows; the others are the identity at initialisation"
    else:
        detail = f"{n_gated} of {n_att} attention rows gated"
    if ins["gate"] == "channel":
        detail += ", one gate per channel"
    return f"insertion: {mode} ({detail})"


def run(args: argparse.Namespace) -> int:
    import torch

    from yoloattn.models.config import dump_config
    from yoloattn.models.detector import build_model
    from yoloattn.models.placement import attention_rows, insert_mode
    from yoloattn.models.profile import profile
    from yoloattn.nn.gate import ResidualGate

    if len(args.imgsz) not in (1, 2) or min(args.imgsz) < 1:
        raise ValueError(f"--imgsz takes one size or H W, got {args.imgsz}")
    h, w = (args.imgsz[0], args.imgsz[0]) if len(args.imgsz) == 1 else tuple(args.imgsz)
    if args.runs < 0:
        raise ValueError(f"--runs must be >= 0, got {args.runs}")
    from yoloattn.engine.runs import RunDir

    src = Path(args.model)
    weights = None
    if src.suffix == ".safetensors" or (src.is_dir() and RunDir(src).is_run()):
        from yoloattn.engine.evaluator import resolve_weights
        from yoloattn.models.weights import load_model

        given = [
            flag
            for flag, on in (
                ("--attention", bool(args.attention)),
                ("--nc", args.nc is not None),
                ("--insert", args.insert != "auto"),
                ("--gate", args.gate is not None),
                ("--allow-unused-rows", args.allow_unused_rows),
            )
            if on
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)}: --attention, --nc, --insert, --gate and --allow-unused-rows describe "
                "a config; a weights file carries its own architecture (drop them, or pass the model "
                "name / YAML instead)"
            )
        weights = resolve_weights(src)
        model = load_model(weights)
    else:
        model = build_model(
            args.model,
            nc=args.nc,
            attention=args.attention,
            insert=None if args.insert == "auto" else args.insert,
            gate=args.gate,
            allow_unused_rows=args.allow_unused_rows,
        )
    det = model.head
    anchors: list[list[float]] | None = None  # None: an anchor-free head (v8/11)
    if isinstance(getattr(det, "anchors", None), torch.Tensor):
        a = cast(torch.Tensor, det.anchors)
        anchors_px = (a.detach().float() * det.stride.view(-1, 1, 1).float()).flatten(1)
        anchors = [[round(float(v), 2) for v in lvl] for lvl in anchors_px]
    smax = int(model.stride.max())
    if h % smax or w % smax:
        raise ValueError(f"--imgsz {h}x{w}: both sides must be multiples of the max stride {smax}")
    if args.fuse:
        model.fuse()
    model.eval()
    prof = profile(model, imgsz=(h, w))
    latency = None
    if args.runs:
        x = torch.zeros(1, int(model.yaml["ch"]), h, w)
        latency = measure_latency(model, x, args.runs, args.warmup)
    if args.save is not None:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(dump_config(model.yaml), encoding="utf-8")

    gates = [m for m in model.model if isinstance(m, ResidualGate)]
    insertion = {
        "insert": insert_mode(model.yaml),
        "attention_rows": len(attention_rows(model.yaml)),
        "gated_rows": len(gates),
        "gate": gates[0].shape if gates else None,
    }
    summary = {
        "model": str(args.model),
        "attention": args.attention,
        **insertion,
        "nc": model.nc,
        "family": model.family,
        "fused": bool(args.fuse),
        "rows": len(model.model),
        "params": prof["params"],
        "gradients": prof["gradients"],
        "gflops": prof["gflops"],
        "imgsz": [h, w],
        "stride": [float(s) for s in model.stride],
        "anchors": anchors,
        "weights": str(weights) if weights is not None else None,
        "latency": latency,
        "saved": str(args.save) if args.save is not None else None,
    }
    if args.format == "json":
        summary["layers"] = prof["layers"]
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return 0
    out = [format_table(prof["layers"]), ""]
    title = f"{args.model}" + (f" + {args.attention}" if args.attention else "")
    out.append(
        f"{title}{' (fused)' if args.fuse else ''}: {summary['rows']} rows, "
        f"{prof['params']:,} parameters, {prof['gradients']:,} gradients, "
        f"{prof['gflops']:.2f} GFLOPs at {h}x{w}, nc={model.nc}"
    )
    if anchors is not None:
        out.append(
            "anchors (pixels): "
            + "  ".join(f"P{int(math.log2(st))} {lvl}" for st, lvl in zip(summary["stride"], anchors))
        )
    else:
        levels = "  ".join(f"P{int(math.log2(st))}" for st in summary["stride"])
        out.append(f"anchor-free head (DFL, reg_max {getattr(det, 'reg_max', 16)}): {levels}")
    if insertion["insert"] is not None:
        out.append(format_insertion(insertion))
    if latency is not None:
        threads, runs = _plural(int(latency["threads"]), "thread"), _plural(int(latency["runs"]), "run")
        out.append(
            f"CPU latency (batch 1, {h}x{w}, {threads}): "
            f"median {latency['median_ms']:.1f} ms over {runs} "
            f"(min {latency['min_ms']:.1f}, max {latency['max_ms']:.1f}; {latency['warmup']} warm-up)"
        )
    if args.save is not None:
        out.append(f"saved config to {args.save}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0
