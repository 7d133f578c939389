"""Time COCO-standard box evaluation: faster-coco-eval vs pycocotools on the same synthetic data.

Usage::

    python benchmarks/eval_speed.py [--images 2000] [--gt 7] [--dets 20] [--classes 80] [--repeat 3]

Builds ``images`` synthetic images with about ``gt`` boxes each (sizes across the small / medium /
large COCO ranges) and about ``dets`` detections each (jittered ground truth with some wrong
classes, plus random false positives), then times evaluate + accumulate + summarize of both
libraries on identical in-memory inputs (best of ``repeat`` runs; building the inputs is not
timed), checks that the 12 statistics agree, and prints the times and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import io
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from yoloattn.engine.coco import COCO_KEYS, coco_evaluate, to_coco_dets, to_coco_gt


def make_data(n_images: int, n_gt: int, n_dets: int, nc: int, seed: int) -> tuple[dict[str, Any], list[dict]]:
    """Synthetic COCO gt dict and detection list (Poisson box counts around the given means)."""
    rng = np.random.default_rng(seed)
    images, gt_boxes, gt_cls, preds = [], [], [], []
    for i in range(n_images):
        w, h = 640, int(rng.integers(360, 640))
        k = max(int(rng.poisson(n_gt)), 1)
        size = rng.choice([16.0, 60.0, 180.0], size=(k, 1)) * rng.uniform(0.6, 1.4, (k, 2))
        xy = rng.uniform(0, 1, (k, 2)) * np.maximum(np.array([w, h]) - size, 1)
        boxes = np.concatenate((xy, xy + size), 1)
        cls = rng.integers(0, nc, k)
        images.append((i + 1, w, h))
        gt_boxes.append(boxes)
        gt_cls.append(cls)
        fp = max(int(rng.poisson(max(n_dets - k, 0))), 0)
        jitter = rng.normal(0, 0.1, (k, 4)) * np.tile(size, 2)
        pcls = np.where(rng.uniform(size=k) < 0.1, rng.integers(0, nc, k), cls)
        fxy = rng.uniform(0, 1, (fp, 2)) * np.array([w, h]) * 0.9
        fbox = np.concatenate((fxy, fxy + rng.uniform(4, 200, (fp, 2))), 1)
        b = np.concatenate((boxes + jitter, fbox), 0)
        c = np.concatenate((pcls, rng.integers(0, nc, fp)))
        s = np.concatenate((rng.uniform(0.2, 1.0, k), rng.uniform(0.001, 0.6, fp)))
        preds.append(np.concatenate((b, s[:, None], c[:, None]), 1))
    gt = to_coco_gt(images, gt_boxes, gt_cls, nc=nc)
    dets = to_coco_dets([i for i, _, _ in images], preds)
    return gt, dets


def run_pycocotools(gt: dict[str, Any], dets: list[dict]) -> np.ndarray:
    """pycocotools' own API, as the official ``--save-json`` evaluation calls it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = gt
        cg.createIndex()
        cd = cg.loadRes(dets)
        ev = COCOeval(cg, cd, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:12])


def run_faster(gt: dict[str, Any], dets: list[dict]) -> np.ndarray:
    """faster-coco-eval's own API (``COCO`` + ``COCOeval_faster``)."""
    from faster_coco_eval import COCO, COCOeval_faster

    cg = COCO(gt)
    cd = cg.loadRes(dets)
    ev = COCOeval_faster(cg, cd, iouType="bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats[:12])


def run_ours(gt: dict[str, Any], dets: list[dict]) -> np.ndarray:
    """``yoloattn.engine.coco.coco_evaluate`` as the evaluator calls it (checks once, the gt
    copied, the freshly built detection list handed over)."""
    r = coco_evaluate(gt, dets, copy_dets=False)
    return np.asarray([r[k] for k in COCO_KEYS])


def run_ours_copying(gt: dict[str, Any], dets: list[dict]) -> np.ndarray:
    """``coco_evaluate`` with its public default: the detections copied too."""
    r = coco_evaluate(gt, dets)
    return np.asarray([r[k] for k in COCO_KEYS])


def best_time(
    fn: Callable[..., np.ndarray], gt: dict, dets: list[dict], repeat: int
) -> tuple[float, np.ndarray]:
    times, out = [], np.zeros(12)
    for _ in range(repeat):
        g, d = copy.deepcopy(gt), copy.deepcopy(dets)  # both libraries annotate their inputs
        t0 = time.perf_counter()
        out = fn(g, d)
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--gt", type=float, default=7, help="mean ground-truth boxes per image")
    ap.add_argument("--dets", type=float, default=20, help="mean detections per image")
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    gt, dets = make_data(args.images, args.gt, args.dets, args.classes, args.seed)
    print(
        f"data: {len(gt['images'])} images, {len(gt['annotations'])} gt boxes, {len(dets)} detections, "
        f"{args.classes} classes; best of {args.repeat} runs; python {platform.python_version()}"
    )
    import faster_coco_eval

    # interleaved: each round times all three once, so machine load hits them alike
    t_fast = t_ours = t_copy = float("inf")
    s_fast = s_ours = s_copy = np.zeros(12)
    for _ in range(args.repeat):
        t, s_fast = best_time(run_faster, gt, dets, 1)
        t_fast = min(t_fast, t)
        t, s_ours = best_time(run_ours, gt, dets, 1)
        t_ours = min(t_ours, t)
        t, s_copy = best_time(run_ours_copying, gt, dets, 1)
        t_copy = min(t_copy, t)
    fast_name = f"faster-coco-eval {faster_coco_eval.__version__}"
    print(f"{fast_name:<28}: {t_fast:8.3f} s   AP={s_fast[0]:.4f} AP50={s_fast[1]:.4f}")
    print(f"{'yoloattn coco_evaluate':<28}: {t_ours:8.3f} s   ratio {t_ours / t_fast:.3f} (evaluator)")
    print(f"{'  ... copy_dets=True':<28}: {t_copy:8.3f} s   ratio {t_copy / t_fast:.3f} (public default)")
    if not np.array_equal(s_copy, s_ours):
        raise SystemExit(f"coco_evaluate's two paths disagree: {s_copy} vs {s_ours}")
    if not np.array_equal(s_fast, s_ours):
        raise SystemExit(f"coco_evaluate disagrees with faster-coco-eval: {s_ours} vs {s_fast}")
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        print("pycocotools not installed: no comparison")
        return
    t_py, s_py = best_time(run_pycocotools, gt, dets, args.repeat)
    py_name = f"pycocotools {importlib.metadata.version('pycocotools')}"
    print(f"{py_name:<28}: {t_py:8.3f} s   AP={s_py[0]:.4f} AP50={s_py[1]:.4f}")
    print(f"speed-up (pycocotools time / faster-coco-eval time): {t_py / t_fast:.1f}x")
    print(f"speed-up (pycocotools time / coco_evaluate time)   : {t_py / t_ours:.1f}x")
    print(f"max |difference| over the 12 COCO statistics: {float(np.abs(s_fast - s_py).max()):.2e}")


if __name__ == "__main__":
    main()
