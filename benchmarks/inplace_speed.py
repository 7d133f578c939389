"""Eager inference with the network's activations in place (as built) vs out of place (as before).

    python benchmarks/inplace_speed.py [--models yolov7-tiny yolov5n yolov5s] [--batch 8]
        [--imgsz 640] [--rounds 5] [--threads N]

Both variants of each model are timed interleaved (one forward of each per round, after a
warm-up), so machine load hits them alike; it prints the median time per batch and the ratio
in-place / out-of-place, and checks that the outputs are bit-identical.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from yoloattn.models import build_model
from yoloattn.models.detector import _INPLACE_ACTS


def _timed(model: nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model(x)[0]
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["yolov7-tiny", "yolov5n", "yolov5s"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"batch {args.batch}, {args.imgsz} px, {args.rounds} interleaved rounds, {threads} threads")
    print(f"{'model':<14}{'in place ms':>13}{'out of place ms':>17}{'ratio':>8}")
    for name in args.models:
        torch.manual_seed(0)
        fast = build_model(name, nc=80).eval()
        slow = copy.deepcopy(fast)
        for m in slow.modules():
            if isinstance(m, _INPLACE_ACTS):
                m.inplace = False
        x = torch.rand(args.batch, 3, args.imgsz, args.imgsz)
        _timed(fast, x), _timed(slow, x)  # warm-up
        tf, ts = [], []
        for _ in range(args.rounds):
            t, a = _timed(fast, x)
            tf.append(t)
            t, b = _timed(slow, x)
            ts.append(t)
            if not torch.equal(a, b):
                raise SystemExit(f"{name}: in-place and out-of-place outputs differ")
        f, s = statistics.median(tf), statistics.median(ts)
        print(f"{name:<14}{1e3 * f:13.1f}{1e3 * s:17.1f}{f / s:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
