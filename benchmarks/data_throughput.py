"""Training-batch throughput of the yoloattn data pipeline (images/s).

Builds the training split of a dataset YAML with the default augmentation recipe (YOLOv5
scratch-low: mosaic 1.0, translate 0.1, scale 0.5, HSV, fliplr 0.5) and times full batches
(decode, mosaic, affine, HSV, flip, collate) for each requested worker count. The first batch
(worker start-up) is timed separately and excluded from the steady-state figure.

    python benchmarks/data_throughput.py --data ../shared/datasets/coco128/coco128.yaml \
        --imgsz 640 --batches 20 --workers 0 2 [--cache]

``--cache`` also times the same pipeline with the decoded images cached in RAM (``--cache ram``
of ``yoloattn train``) and prints the ratio against the uncached run of the same worker count.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco128" / "coco128.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="dataset YAML (default: shared coco128)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument(
        "--batches", type=int, default=20, help="timed batches per worker count (after the first)"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", action="store_true", help="also time with images cached in RAM")
    args = ap.parse_args(argv)

    import torch

    from yoloattn.data import DEFAULT_HYP, YoloDataset, build_dataloader, load_dataset_config

    cfg = load_dataset_config(args.data)
    kw = dict(imgsz=args.imgsz, augment=True, hyp=DEFAULT_HYP, nc=cfg.nc, prefix="train: ")
    datasets = {"no cache": YoloDataset(cfg.train, **kw)}
    if args.cache:
        t = time.perf_counter()
        datasets["ram cache"] = YoloDataset(cfg.train, cache_images=True, **kw)
        print(f"filling the RAM cache took {time.perf_counter() - t:.2f} s")
    ds = datasets["no cache"]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"data={cfg.yaml_path.name} images={len(ds)} imgsz={args.imgsz} batch={args.batch_size} "
        f"mosaic={DEFAULT_HYP['mosaic']} cpus={cpus} torch_threads={torch.get_num_threads()}"
    )
    for workers in args.workers:
        base = None
        for label, ds in datasets.items():
            loader = build_dataloader(ds, args.batch_size, shuffle=True, workers=workers, seed=args.seed)
            n_images, done, epoch = 0, 0, 0
            t0 = time.perf_counter()
            first = None
            while done < args.batches + 1:
                loader.set_epoch(epoch)
                for batch in loader:
                    if first is None:
                        first = time.perf_counter() - t0
                        t1 = time.perf_counter()
                    else:
                        n_images += batch.images.shape[0]
                    done += 1
                    if done >= args.batches + 1:
                        break
                epoch += 1
            dt = time.perf_counter() - t1
            rate = n_images / dt
            ratio = "" if base is None else f"  {rate / base:.2f}x the uncached rate"
            base = rate if base is None else base
            print(
                f"workers={workers} {label}: {rate:7.1f} images/s over {done - 1} batches "
                f"({dt / max(done - 1, 1) * 1000:.0f} ms/batch; first batch {first:.2f} s){ratio}"
            )
            del loader
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
