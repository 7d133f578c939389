"""Training-batch throughput of the yoloattn data pipeline (images/s), with a per-stage breakdown
and a bare-decoding baseline, old (pre-#21, Pillow) and current pipelines side by side.

Builds the training split of a dataset YAML with the default augmentation recipe (YOLOv5
scratch-low: mosaic 1.0, translate 0.1, scale 0.5, HSV, fliplr 0.5) and, in one run:

1. **Loader**: images/s of full batches (decode, mosaic, affine, HSV, flip, collate) through
   ``build_dataloader`` for each worker count, the ``legacy`` pipeline (a frozen copy of the
   Pillow-based code in ``_legacy_pipeline.py``) and the ``current`` one interleaved, ``--repeats``
   times; the first batch of each run (worker start-up) is excluded. Prints the median and
   current/legacy ratios.
2. **Stages**: one process, ``--samples`` mosaic items per pipeline, time per item in each stage
   (decode = read + EXIF + resize to imgsz, mosaic assembly, geometry = the affine warp, HSV,
   the rest of the item: labels, flips, tensor) and the collate of batches of ``--batch-size``.
3. **Decode-only baseline**: the same images decoded bare (no EXIF, no resize) with Pillow and
   with torchvision; the pipeline's cost per item over 4 bare decodes (one mosaic) is printed
   as a ratio.

    python benchmarks/data_throughput.py --data ../shared/datasets/coco128/coco128.yaml \
        --imgsz 640 --batches 8 --workers 0 2 --repeats 3

Before (#21; this machine: 2 CPU cores shared with other jobs, load average 6 during the run,
so absolute figures are ~3x slower than on a quiet machine; legacy == current at that commit;
``--repeats 2 --batches 8 --samples 32``):

    loader, images/s (median of runs)
      workers=0: legacy    4.6  current    4.5
      workers=2: legacy    4.7  current    4.3
    stages, ms per mosaic item (1 process)
                      decode    mosaic  geometry       hsv      rest     total   collate
            legacy     80.24      4.20     45.50     88.20     19.56    237.69      1.06
    decode-only baseline, ms per image: Pillow 17.67  torchvision 11.99
            legacy: one mosaic item = 4.96x four bare decodes

After: see docs/data.md ("Speed").

``--cache`` also times the current pipeline with the decoded images cached in RAM (``--cache ram``
of ``yoloattn train``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco128" / "coco128.yaml"


def loader_rate(ds: Any, batch_size: int, workers: int, batches: int, seed: int) -> tuple[float, float]:
    """``(images/s after the first batch, seconds to the first batch)``."""
    from yoloattn.data import build_dataloader

    loader = build_dataloader(ds, batch_size, shuffle=True, workers=workers, seed=seed)
    n_images, done, epoch = 0, 0, 0
    t0 = time.perf_counter()
    t1, first = t0, 0.0
    while done < batches + 1:
        loader.set_epoch(epoch)
        for batch in loader:
            if done == 0:
                first = time.perf_counter() - t0
                t1 = time.perf_counter()
            else:
                n_images += batch.images.shape[0]
            done += 1
            if done >= batches + 1:
                break
        epoch += 1
    rate = n_images / (time.perf_counter() - t1)
    del loader
    return rate, first


class StageTimer:
    """Wraps module attributes so that calls add their time to a named stage."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self._stack: list[float] = []

    @contextmanager
    def patch(self, targets: dict[str, list[tuple[Any, str]]]) -> Iterator[None]:
        saved = []
        for stage, places in targets.items():
            for mod, name in places:
                if not hasattr(mod, name):
                    continue
                orig = getattr(mod, name)
                saved.append((mod, name, orig))
                setattr(mod, name, self._wrap(stage, orig))
        try:
            yield
        finally:
            for mod, name, orig in reversed(saved):
                setattr(mod, name, orig)

    def _wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(0.0)  # time of nested stages, not counted twice
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                nested = self._stack.pop()
                self.total[stage] = self.total.get(stage, 0.0) + dt - nested
                if self._stack:
                    self._stack[-1] += dt

        return timed


def stage_breakdown(
    ds: Any, targets: dict[str, list[tuple[Any, str]]], samples: int, batch_size: int
) -> dict[str, float]:
    """ms per item in each stage (and ``rest``, ``total``, ``collate``) over ``samples`` items."""
    from yoloattn.data.loader import collate_fn

    timer = StageTimer()
    items = []
    with timer.patch(targets):
        t = time.perf_counter()
        for i in range(samples):
            items.append(ds[(i % len(ds), 0, 0)])
        total = time.perf_counter() - t
    t = time.perf_counter()
    for k in range(0, len(items) - batch_size + 1, batch_size):
        collate_fn(items[k : k + batch_size])
    n_coll = (len(items) // batch_size) * batch_size
    coll = (time.perf_counter() - t) / max(n_coll, 1)
    out = {k: v / samples * 1000 for k, v in timer.total.items()}
    out["rest"] = total / samples * 1000 - sum(out.values())
    out["total"] = total / samples * 1000
    out["collate"] = coll * 1000
    return out


def decode_baseline(files: list[str]) -> dict[str, float]:
    """ms per image to decode ``files`` bare: Pillow (decode + asarray) and torchvision."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_image

    def pil(f: str) -> Any:
        with Image.open(f) as im:
            return np.asarray(im.convert("RGB"))

    def tv(f: str) -> Any:
        with open(f, "rb") as fh:
            data = torch.frombuffer(bytearray(fh.read()), dtype=torch.uint8)
        return decode_image(data, mode=ImageReadMode.RGB)

    out = {}
    for name, fn in (("Pillow", pil), ("torchvision", tv)):
        t = time.perf_counter()
        for f in files:
            fn(f)
        out[name] = (time.perf_counter() - t) / len(files) * 1000
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="dataset YAML (default: shared coco128)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batches", type=int, default=8, help="timed batches per run (after the first)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=2, help="interleaved loader runs per variant")
    ap.add_argument("--samples", type=int, default=32, help="mosaic items for the stage breakdown")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", action="store_true", help="also time with images cached in RAM")
    ap.add_argument("--only", choices=["legacy", "current"], help="time one pipeline only")
    args = ap.parse_args(argv)

    import torch

    import _legacy_pipeline as L
    from yoloattn.data import DEFAULT_HYP, YoloDataset, load_dataset_config
    from yoloattn.data import dataset as D
    from yoloattn.data import mosaic as M

    torch.set_num_threads(1)  # what a worker runs with; the main process of a loader run too
    cfg = load_dataset_config(args.data)
    kw: dict[str, Any] = dict(imgsz=args.imgsz, augment=True, hyp=DEFAULT_HYP, nc=cfg.nc, prefix="train: ")
    variants: dict[str, Any] = {
        "legacy": L.LegacyDataset(cfg.train, **kw),
        "current": YoloDataset(cfg.train, **kw),
    }
    if args.only:
        variants = {args.only: variants[args.only]}
    if args.cache:
        t = time.perf_counter()
        variants["current+ram"] = YoloDataset(cfg.train, cache_images=True, **kw)
        print(f"filling the RAM cache took {time.perf_counter() - t:.2f} s")
    ds0 = next(iter(variants.values()))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"data={cfg.yaml_path.name} images={len(ds0)} imgsz={args.imgsz} batch={args.batch_size} "
        f"mosaic={DEFAULT_HYP['mosaic']} cpus={cpus} load={load:.1f}"
    )

    # 1. loader, interleaved
    rates: dict[tuple[str, int], list[float]] = {}
    for r in range(args.repeats):
        for workers in args.workers:
            for name, ds in variants.items():
                rate, first = loader_rate(ds, args.batch_size, workers, args.batches, args.seed + r)
                rates.setdefault((name, workers), []).append(rate)
                print(
                    f"  run {r} workers={workers} {name:>12}: {rate:6.1f} img/s (first batch {first:.2f} s)"
                )
    print("\nloader, images/s (median of runs)")
    for workers in args.workers:
        row = {n: statistics.median(rates[(n, workers)]) for n in variants}
        ratio = (
            f"  current/legacy {row['current'] / row['legacy']:.2f}x"
            if len(row) > 1 and "legacy" in row
            else ""
        )
        print(f"  workers={workers}: " + "  ".join(f"{n} {v:6.1f}" for n, v in row.items()) + ratio)

    # 2. stages (each pipeline's function names)
    stage_targets: dict[str, dict[str, list[tuple[Any, str]]]] = {
        "legacy": {
            "decode": [(L, "read_image")],
            "mosaic": [(L, "mosaic4")],
            "geometry": [(L, "random_perspective")],
            "hsv": [(L, "augment_hsv")],
        },
        "current": {
            "decode": [(D, "read_image")],
            "mosaic": [(D, "random_mosaic")],
            "geometry": [(M.F, "interpolate"), (M, "warp")],
            "hsv": [(D, "augment_hsv")],
        },
    }
    stage_targets["current+ram"] = stage_targets["current"]
    print(f"\nstages, ms per mosaic item ({args.samples} items, 1 process)")
    table = {}
    for _ in range(2):  # interleaved twice, the faster of the two kept
        for name, ds in variants.items():
            res = stage_breakdown(ds, stage_targets[name], args.samples, args.batch_size)
            table[name] = {k: min(v, table.get(name, {}).get(k, v)) for k, v in res.items()}
    cols = ["decode", "mosaic", "geometry", "hsv", "rest", "total", "collate"]
    print("  " + " " * 12 + "".join(f"{c:>10}" for c in cols))
    for name, row in table.items():
        print(f"  {name:>12}" + "".join(f"{row.get(c, 0.0):10.2f}" for c in cols))
    if "legacy" in table and "current" in table:
        ratios = [
            table["legacy"].get(c, 0.0) / table["current"][c] if table["current"].get(c) else 0.0
            for c in cols
        ]
        print(f"  {'legacy/curr.':>12}" + "".join(f"{v:10.2f}" if v else f"{'-':>10}" for v in ratios))
    print("  (current: mosaic = placing the tiles, geometry = their resizes, fused in one step)")

    # 3. decode-only baseline
    files = list(ds0.im_files[: min(len(ds0), 64)])
    base = decode_baseline(files)
    base = {k: min(v, w) for (k, v), w in zip(base.items(), decode_baseline(files).values())}
    print("\ndecode-only baseline, ms per image (bare decode, no EXIF, no resize)")
    print("  " + "  ".join(f"{k} {v:.2f}" for k, v in base.items()))
    best = min(base.values())
    for name, row in table.items():
        print(f"  {name:>12}: one mosaic item = {row['total'] / (4 * best):.2f}x four bare decodes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
