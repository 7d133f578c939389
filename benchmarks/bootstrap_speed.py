"""Time the paired hierarchical bootstrap of Δ mAP on synthetic match records.

Usage::

    python benchmarks/bootstrap_speed.py [--variants 10] [--seeds 3] [--images 500] [--classes 80]
                                         [--resamples 1000] [--naive 3]

Builds synthetic match records (``yoloattn.engine.records.simulate_records``: about 3 labels and
20-50 predictions per image at conf >= 0.001, long-tailed class frequencies) for a baseline and
``variants`` variants, each with ``seeds`` seeds, all on one set of ``images`` validation images;
then times ``bootstrap_study`` (every variant against the baseline, ``resamples`` resamples of
seeds and images) and prints the wall and CPU time against the 10 s target. For comparison it
also times the naive way, ``map_from_records`` (the exact ``ap_per_class`` path) once per run and
resample, on ``naive`` resamples, extrapolated to the full study, and checks that both agree.
Building the records is not timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from yoloattn.engine.records import MatchRecords, map_from_records, simulate_records
from yoloattn.experiments.bootstrap import bootstrap_maps, bootstrap_study, resample_plan

TARGET_S = 10.0


def make_study(
    n_variants: int, n_seeds: int, n_images: int, nc: int, seed: int = 0
) -> tuple[list[MatchRecords], dict[str, list[MatchRecords]]]:
    """A baseline and ``n_variants`` variants x ``n_seeds`` seeds on one validation set."""
    rng = np.random.default_rng(seed)
    labels_src = simulate_records(n_images, nc, rng=rng)
    labels = (labels_src.target_cls, labels_src.target_img)

    def run(quality: float) -> MatchRecords:
        return simulate_records(
            n_images,
            nc,
            rng=rng,
            labels=labels,
            detect_rate=float(np.clip(0.8 + quality + rng.normal(0, 0.01), 0.05, 0.99)),
            iou_quality=0.75 + quality / 2,
        )

    base = [run(0.0) for _ in range(n_seeds)]
    variants = {
        f"v{i}": [run(float(q)) for _ in range(n_seeds)]
        for i, q in enumerate(np.linspace(-0.02, 0.02, n_variants))
    }
    return base, variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--naive", type=int, default=3, help="resamples for the naive timing (0: skip)")
    args = ap.parse_args()

    base, variants = make_study(args.variants, args.seeds, args.images, args.classes)
    runs = [*base, *(r for v in variants.values() for r in v)]
    n_pred = np.mean([r.n_pred for r in runs]) / args.images
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, numpy {np.__version__}"
    )
    print(
        f"study: baseline + {args.variants} variants x {args.seeds} seeds = {len(runs)} runs, "
        f"{args.images} images, {args.classes} classes, {base[0].n_targets} labels, "
        f"{n_pred:.1f} predictions/image; {args.resamples} resamples"
    )

    w0, c0 = time.perf_counter(), time.process_time()
    res = bootstrap_study(base, variants, n_resamples=args.resamples, seed=0)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(
        f"bootstrap_study: {wall:.2f} s wall ({cpu:.2f} s CPU) = {wall / TARGET_S:.2f} x the "
        f"{TARGET_S:.0f} s target ({'met' if wall < TARGET_S else 'NOT met'})"
    )
    v = next(iter(res))
    d = res[v].map
    print(f"  e.g. {v}: Δ mAP50-95 {d.estimate:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}], SE {d.se:.4f}")

    if args.naive > 0:
        _, weights = resample_plan(args.seeds, args.images, args.naive, seed=1)
        w0 = time.perf_counter()
        naive = np.array([[map_from_records(base[0], w)[:2] for w in weights]])[0]
        per_eval = (time.perf_counter() - w0) / args.naive
        fast = bootstrap_maps(base[0], weights)
        # the study computes each run on the resamples that drew its seed: 1 - (1 - 1/S)^S of them
        drawn = 1.0 - (1.0 - 1.0 / args.seeds) ** args.seeds
        naive_total = per_eval * len(runs) * args.resamples * drawn
        print(
            f"naive (map_from_records per run and resample): {per_eval * 1e3:.0f} ms per evaluation, "
            f"~{naive_total:.0f} s for the study ({naive_total / wall:.0f} x slower); "
            f"max |naive - fast| = {np.abs(naive - fast).max():.1e}"
        )


if __name__ == "__main__":
    main()
