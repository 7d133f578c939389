"""``yoloattn val`` with and without dataloader workers: inference time per image, interleaved.

Builds a randomly initialised detector (no weights are downloaded) and evaluates it on a split
of a dataset YAML exactly as ``yoloattn val`` does (:func:`yoloattn.engine.evaluator.
build_val_loader` + :func:`~yoloattn.engine.evaluator.evaluate` inside
:func:`~yoloattn.engine.evaluator.eval_threads`), ``--runs`` times for each variant, interleaved:

- ``workers=0``: loading and inference in one process;
- ``workers=N``: ``N`` worker processes, the torch threads of ``eval_threads``;
- ``workers=N, all threads`` (``--show-old``): ``N`` workers with torch left at one thread per
  CPU, as ``val`` ran before #21: the configuration that was 5-10x slower.

Prints the inference ms per image (the stage ``val`` reports) and the wall time per run, their
medians and worst cases, and the ratios to ``workers=0``; exits 1 when any ``workers=N`` run
(with ``eval_threads``) is slower than the slowest ``workers=0`` run by more than ``--tolerance``.

    python benchmarks/val_workers.py --model yolov5n --imgsz 640 --runs 5 --workers 2 --show-old

Measured (#21) on the shared 2-CPU development machine under a load average of ~12 from other
jobs, ``--imgsz 320 --runs 2 --show-old`` (inference ms per image, median; wall s per pass):

    workers=0 (2 threads)            2585 ms   86.4 s
    workers=2 (1 thread, the fix)     186 ms    7.4 s
    workers=2, all threads (before)  3975 ms  131.2 s

Under that external load even ``workers=0`` with two threads stalls in the same way; on a quiet
machine the lead's rerun gives the figures for the issue.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco128" / "coco128.yaml"


def one_run(
    model: Any, names: list[str], args: argparse.Namespace, workers: int, fix: bool
) -> tuple[float, float]:
    """``(inference ms per image, wall seconds)`` of one validation pass."""
    import torch

    from yoloattn.engine.evaluator import build_val_loader, eval_threads, evaluate

    stride = max(int(model.stride.max()), 32)
    t = time.perf_counter()
    _, loader = build_val_loader(args.data, args.imgsz, args.batch, stride, "val", workers)
    ctx = eval_threads(loader.num_workers) if fix else contextlib.nullcontext()
    with ctx:
        res = evaluate(model, loader, names, torch.device("cpu"), verbose=False, coco=False)
    wall = time.perf_counter() - t
    del loader
    return res.speed_ms["inference"], wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default="yolov5n")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--show-old", action="store_true", help="also run the old setup (all torch threads)")
    ap.add_argument("--tolerance", type=float, default=0.25, help="allowed slowdown over workers=0")
    args = ap.parse_args(argv)

    import logging

    import torch

    from yoloattn.data import load_dataset_config
    from yoloattn.models import build_model

    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    names = list(load_dataset_config(args.data).names)
    model = build_model(args.model, nc=len(names)).eval()
    default_threads = torch.get_num_threads()
    variants = [("workers=0", 0, True), (f"workers={args.workers}", args.workers, True)]
    if args.show_old:
        variants.append((f"workers={args.workers}, all threads", args.workers, False))
    print(
        f"model={args.model} imgsz={args.imgsz} torch threads by default={default_threads} runs={args.runs}"
    )
    inf: dict[str, list[float]] = {v[0]: [] for v in variants}
    wall: dict[str, list[float]] = {v[0]: [] for v in variants}
    for r in range(args.runs):
        for name, workers, fix in variants:
            torch.set_num_threads(default_threads)
            ms, sec = one_run(model, names, args, workers, fix)
            inf[name].append(ms)
            wall[name].append(sec)
            print(f"  run {r} {name:>24}: inference {ms:7.1f} ms/image, wall {sec:6.2f} s")
    base_inf, base_wall = statistics.median(inf["workers=0"]), statistics.median(wall["workers=0"])
    print(
        "\nvariant                    inference ms/img (median, worst)   wall s (median, worst)"
        "   vs workers=0"
    )
    for name, *_ in variants:
        mi, wi = statistics.median(inf[name]), max(inf[name])
        mw, ww = statistics.median(wall[name]), max(wall[name])
        print(
            f"{name:>24}   {mi:8.1f} {wi:8.1f}                     {mw:6.2f} {ww:6.2f}"
            f"           inference {mi / base_inf:.2f}x, wall {mw / base_wall:.2f}x"
        )
    worst_ok = max(inf["workers=0"]) * (1 + args.tolerance)
    slow = [ms for ms in inf[f"workers={args.workers}"] if ms > worst_ok]
    if slow:
        print(
            f"FAIL: {len(slow)} workers={args.workers} run(s) slower than every workers=0 run "
            f"(+{args.tolerance:.0%})"
        )
        return 1
    print(f"OK: no workers={args.workers} run slower than the slowest workers=0 run (+{args.tolerance:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
