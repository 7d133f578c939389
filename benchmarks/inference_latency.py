"""Inference latency: eager PyTorch vs fused PyTorch vs ONNX Runtime, on the CPU.

For yolov5n, yolov5s and yolov7-tiny, each without attention and with ``cbam@neck``, at batch
1 and 8 and 320 and 640 px: the forward pass (decoded output, no NMS) of

* ``eager``: the model as built (BatchNorm separate, ``torch.no_grad``, eval mode);
* ``fused``: the same model after ``fuse()`` (BN folded into the convs);
* ``ort``: the fused model exported by ``yoloattn export --dynamic`` (opset 17), run by an
  onnxruntime CPU session (default graph optimisations).

The three are measured interleaved (one call of each per round, the order rotating every
round) in one process with the same thread count, so a busy machine slows all three alike.
Prints the median latency per call and the ratios ``eager / fused`` and ``eager / ort``
(> 1: faster than eager). Weights are random (latency does not depend on them).

Usage: python benchmarks/inference_latency.py [--quick] [--reps 10] [--threads 2]
           [--models yolov5n,yolov5s,yolov7-tiny] [--batch 1 8] [--imgsz 320 640]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from yoloattn.engine.backend import OnnxModel
from yoloattn.engine.export import export_onnx
from yoloattn.models.detector import build_model

BACKENDS = ("eager", "fused", "ort")


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(runners: dict[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each runner, measured interleaved with a rotating order."""
    names = list(runners)
    for _ in range(warmup):
        for n in names:
            runners[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            times[n].append(_timed(runners[n]))
    return {n: statistics.median(t) for n, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="yolov5n only, batch 1, 320 px, 3 repetitions")
    ap.add_argument("--reps", type=int, default=10, help="timed rounds per configuration")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of PyTorch and of onnxruntime")
    ap.add_argument("--models", default="yolov5n,yolov5s,yolov7-tiny")
    ap.add_argument("--attention", default=",cbam@neck", help="comma-separated specs; empty = none")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.batch, args.imgsz, args.reps, args.warmup = "yolov5n", [1], [320], 3, 1
    torch.set_num_threads(args.threads)
    specs = [s or None for s in args.attention.split(",")]
    print(
        f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
        f"{args.threads} thread(s), median of {args.reps} interleaved rounds, ms per forward call"
    )
    head = (
        f"{'model':<12}{'attention':<11}{'batch':>6}{'imgsz':>6}{'eager':>10}{'fused':>10}{'ort':>10}"
        f"{'eager/fused':>13}{'eager/ort':>11}"
    )
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for spec in specs:
                torch.manual_seed(0)
                eager = build_model(name, nc=80, attention=spec).eval()
                fused = copy.deepcopy(eager).fuse()
                path = Path(tmp) / f"{name}-{spec or 'base'}.onnx"
                export_onnx(eager, path, imgsz=(320, 320), dynamic=True)
                ort_model = OnnxModel(path, threads=args.threads)
                for batch in args.batch:
                    for imgsz in args.imgsz:
                        x = torch.rand(batch, 3, imgsz, imgsz)

                        def run(m: torch.nn.Module, x: torch.Tensor = x) -> object:
                            with torch.no_grad():
                                return m(x)[0]

                        t = measure(
                            {
                                "eager": lambda m=eager: run(m),
                                "fused": lambda m=fused: run(m),
                                "ort": lambda m=ort_model: run(m),
                            },
                            args.reps,
                            args.warmup,
                        )
                        ms = {k: 1e3 * v for k, v in t.items()}
                        print(
                            f"{name:<12}{spec or '-':<11}{batch:>6}{imgsz:>6}{ms['eager']:>10.1f}"
                            f"{ms['fused']:>10.1f}{ms['ort']:>10.1f}{t['eager'] / t['fused']:>13.2f}"
                            f"{t['eager'] / t['ort']:>11.2f}",
                            flush=True,
                        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
