"""Validation: run a model over a dataset, apply NMS, compute YOLO-style and COCO-standard mAP.

Used by ``yoloattn val``, by the trainer's per-epoch validation and by ``compare``. Boxes are
mapped back to the original image (undoing the letterbox) before matching, as the official val
scripts do. Two metrics, clearly named:

* **YOLO-style** (``mp, mr, map50, map``): per-class P/R at max-F1 and 101-point mAP, as printed
  by the official val scripts (fast, computed every epoch);
* **COCO-standard** (``coco_ap, coco_ap50, coco_ap75, coco_aps, coco_apm, coco_apl``): from
  faster-coco-eval on COCO-format ground truth and detections built in memory.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yoloattn.data.boxes import scale_boxes, xywh2xyxy
from yoloattn.engine.confusion import ConfusionMatrix
from yoloattn.engine.metrics import DetMetrics
from yoloattn.engine.nms import VAL_NMS, non_max_suppression
from yoloattn.engine.protocol import DEFAULT_PROTOCOL, protocol_loader
from yoloattn.engine.records import MatchRecords, records_from_stats

LOGGER = logging.getLogger("yoloattn.val")

__all__ = ["EvalResult", "build_val_loader", "eval_threads", "evaluate", "evaluate_run", "format_table"]


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    loss: torch.Tensor = field(default_factory=lambda: torch.zeros(3))
    speed_ms: dict[str, float] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)  # COCO-format detections
    coco_gt: dict[str, Any] | None = None
    det_metrics: DetMetrics | None = None
    confusion: ConfusionMatrix | None = None
    samples: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    records: MatchRecords | None = None  # per-image match records (compare's bootstrap)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    names: list[str],
    device: torch.device | str = "cpu",
    *,
    conf: float = VAL_NMS["conf_thres"],
    iou: float = VAL_NMS["iou_thres"],
    max_det: int = VAL_NMS["max_det"],
    loss_fn: Any = None,
    half: bool = False,
    coco: bool = True,
    verbose: bool = True,
    keep_samples: int = 0,
    forward_batch: int = 1,
) -> EvalResult:
    """Evaluate ``model`` on the batches of ``loader`` (collate format of ``yoloattn.data``).

    Every quantity is computed per image (detections, matching, the validation loss averaged
    over images), so with the ``per-image`` protocol (:mod:`yoloattn.engine.protocol`) the
    result does not depend on how the images are batched. The model runs on ``forward_batch`` images at a
    time (default 1): convolution kernels (oneDNN on CPU, cuDNN on GPU) are chosen per input
    shape, batch size included, and two kernels round differently (measured on the demo model:
    up to 4e-6 on one layer's activations at batch 8 vs 1), so only a fixed forward batch makes
    the detections bit-identical whatever the loader's batch size. ``forward_batch=0`` forwards
    the loader's whole batch (faster on a GPU; the last digits may then depend on the batch).
    """
    from tqdm import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval()
    nc = len(names)
    dm = DetMetrics(nc, names)
    cm = ConfusionMatrix(nc)
    loss = torch.zeros(3, device=device)
    preds_json: list[dict[str, Any]] = []
    gt_images: list[dict[str, Any]] = []
    gt_anns: list[dict[str, Any]] = []
    samples: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    t_pre = t_inf = t_nms = 0.0
    n_img = 0
    use_half = half and device.type == "cuda"
    for batch in tqdm(loader, desc="val", disable=not verbose, leave=False):
        t0 = time.perf_counter()
        imgs, targets, paths, shapes = batch[0], batch[1], batch[2], batch[3]
        imgs = imgs.to(device, non_blocking=True)
        imgs = (imgs.half() if use_half else imgs.float()) / 255.0
        targets = targets.to(device)
        nb, _, h, w = imgs.shape
        t1 = time.perf_counter()
        with torch.autocast(device.type, enabled=use_half):
            out, levels = _forward(model, imgs, forward_batch)
        t2 = time.perf_counter()
        if loss_fn is not None:  # per image, so the mean does not depend on how images are batched
            for si in range(nb):
                ti = targets[targets[:, 0] == si].clone()
                ti[:, 0] = 0.0
                loss += loss_fn([x[si : si + 1].float() for x in levels], ti)[1]
        dets = non_max_suppression(out.float(), conf, iou, multi_label=True, max_det=max_det)
        t3 = time.perf_counter()
        t_pre, t_inf, t_nms = t_pre + t1 - t0, t_inf + t2 - t1, t_nms + t3 - t2
        tb = targets.clone()
        tb[:, 2:] *= torch.tensor((w, h, w, h), device=device)
        for si, det in enumerate(dets):
            n_img += 1
            (h0, w0), ratio_pad = shapes[si][0], shapes[si][1]
            lab = tb[tb[:, 0] == si, 1:]
            lab_xyxy = scale_boxes((h, w), xywh2xyxy(lab[:, 1:5]), (h0, w0), ratio_pad, official=True)
            labels = torch.cat((lab[:, :1], lab_xyxy), 1)
            pred = det.clone()
            pred[:, :4] = scale_boxes((h, w), det[:, :4], (h0, w0), ratio_pad, official=True)
            dm.update(pred.cpu(), labels.cpu())
            cm.process_batch(pred.cpu(), labels.cpu())
            if len(samples) < keep_samples:
                samples.append((paths[si], pred.cpu(), labels.cpu()))
            if coco:
                image_id = n_img
                gt_images.append(
                    {"id": image_id, "width": int(w0), "height": int(h0), "file_name": str(paths[si])}
                )
                for row in labels.cpu().tolist():
                    x1, y1, x2, y2 = row[1:]
                    gt_anns.append(
                        {
                            "id": len(gt_anns) + 1,
                            "image_id": image_id,
                            "category_id": int(row[0]) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "area": (x2 - x1) * (y2 - y1),
                            "iscrowd": 0,
                        }
                    )
                for row in pred.cpu().tolist():
                    x1, y1, x2, y2, score, c = row
                    preds_json.append(
                        {
                            "image_id": image_id,
                            "category_id": int(c) + 1,
                            "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                            "score": round(score, 5),
                            "file_name": str(paths[si]),
                        }
                    )
    m = dm.compute()
    records = records_from_stats(dm._stats, nc, iouv=dm.iouv, end_recall_one=dm.style != "v7" or dm.v5_metric)
    metrics: dict[str, float] = {k: float(m[k]) for k in ("mp", "mr", "map50", "map", "fitness")}
    metrics["images"] = n_img
    metrics["instances"] = int(m["nt"].sum())
    per_class = [
        {
            "class": names[c],
            "instances": int(m["nt"][c]),
            "p": float(m["p"][j]),
            "r": float(m["r"][j]),
            "map50": float(m["ap50"][j]),
            "map": float(m["ap"][j]),
        }
        for j, c in enumerate(m["classes"])
    ]
    coco_gt = None
    if coco:
        from yoloattn.engine.coco import coco_evaluate

        coco_gt = {
            "images": gt_images,
            "annotations": gt_anns,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
        }
        if gt_anns:
            stats = coco_evaluate(
                coco_gt,
                [{k: v for k, v in d.items() if k != "file_name"} for d in preds_json],
                copy_dets=False,  # fresh dicts of plain numbers, made just for this call
            )
            for k, v in stats.items():
                metrics[f"coco_{k.lower()}" if not k.startswith("coco_") else k] = float(v)
    n = max(n_img, 1)
    speed = {"preprocess": 1e3 * t_pre / n, "inference": 1e3 * t_inf / n, "nms": 1e3 * t_nms / n}
    if was_training:
        model.train()
    return EvalResult(
        metrics,
        per_class,
        (loss / max(n_img, 1)).cpu(),
        speed,
        preds_json,
        coco_gt,
        dm,
        cm,
        samples,
        records,
    )


def _forward(model: nn.Module, imgs: torch.Tensor, forward_batch: int) -> tuple[torch.Tensor, list[Any]]:
    """``model(imgs)`` run on chunks of ``forward_batch`` images (0: all at once), concatenated."""
    n = imgs.shape[0]
    if forward_batch <= 0 or forward_batch >= n:
        out, levels = model(imgs)
        return out, list(levels)
    parts = [model(imgs[i : i + forward_batch]) for i in range(0, n, forward_batch)]
    out = torch.cat([p[0] for p in parts], 0)
    levels = [torch.cat([p[1][j] for p in parts], 0) for j in range(len(parts[0][1]))]
    return out, levels


def format_table(res: EvalResult) -> str:
    """The per-class table the official val scripts print, plus the COCO-standard summary."""
    m = res.metrics
    head = f"{'Class':>20}{'Images':>11}{'Instances':>11}{'P':>11}{'R':>11}{'mAP50':>11}{'mAP50-95':>11}"
    lines = [
        head,
        f"{'all':>20}{int(m['images']):>11}{int(m['instances']):>11}{m['mp']:>11.3g}{m['mr']:>11.3g}"
        f"{m['map50']:>11.3g}{m['map']:>11.3g}",
    ]
    if len(res.per_class) > 1:
        for c in res.per_class:
            lines.append(
                f"{c['class'][:20]:>20}{int(m['images']):>11}{c['instances']:>11}{c['p']:>11.3g}"
                f"{c['r']:>11.3g}{c['map50']:>11.3g}{c['map']:>11.3g}"
            )
    coco = {k: v for k, v in m.items() if k.startswith("coco_")}
    if coco:
        lines.append(
            "COCO-standard (faster-coco-eval): " + "  ".join(f"{k[5:]} {v:.4f}" for k, v in coco.items())
        )
    if res.speed_ms:
        s = res.speed_ms
        lines.append(
            f"Speed per image: {s['preprocess']:.1f} ms preprocess, {s['inference']:.1f} ms inference, "
            f"{s['nms']:.1f} ms NMS"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def eval_threads(workers: int, threads: int | None = None) -> Any:
    """Run the enclosed evaluation with torch threads that leave room for ``workers`` dataloader
    worker processes; yields the count and restores the previous one after. ``threads`` when
    given; else, with workers, the current count capped at
    :func:`yoloattn.engine.setup.resolve_threads` (``$OMP_NUM_THREADS``, else ``max(1, CPUs //
    (1 + workers))``, as in training); without workers the current count (it also decides the
    last float digits of the detections, docs/evaluation.md).

    With one thread per CPU and workers decoding beside them, the model's parallel regions
    waited for threads the workers had preempted: ``val --workers 2`` ran its inference 5-10x
    slower than ``--workers 0`` (``benchmarks/val_workers.py``).
    """
    from yoloattn.engine.setup import resolve_threads

    before = torch.get_num_threads()
    if threads is not None:
        n = resolve_threads(threads, workers)
    elif workers > 0:
        n = min(before, resolve_threads(None, workers))
    else:
        n = before
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def build_val_loader(
    data: str,
    imgsz: int,
    batch: int,
    stride: int,
    split: str = "val",
    workers: int = 0,
    cache_dir: str | None = None,
    single_cls: bool = False,
    protocol: str = DEFAULT_PROTOCOL,
) -> tuple[Any, Any]:
    """``(dataset config, loader)`` of a split of the dataset YAML ``data`` in the geometry of
    ``protocol`` (:func:`yoloattn.engine.protocol.protocol_loader`). ``single_cls`` scores every
    class as one ("item"), as ``train --single-cls``."""
    from yoloattn.data import load_dataset_config

    dcfg = load_dataset_config(data)
    scan_nc = dcfg.nc
    if single_cls:
        dcfg = dcfg.as_single_class()
    sources = getattr(dcfg, split, None)
    if not sources:
        raise ValueError(f"dataset {data} has no {split!r} split")
    _, loader = protocol_loader(
        sources,
        imgsz,
        batch,
        stride,
        protocol,
        workers=workers,
        cache_dir=cache_dir,
        nc=scan_nc,
        single_cls=single_cls,
        prefix=f"{split}: ",
    )
    return dcfg, loader


def resolve_weights(path: str | Path) -> Path:
    """A run folder (best weights, else last) or a weights file."""
    from yoloattn.engine.runs import RunDir

    p = Path(path)
    if p.is_dir():
        run = RunDir(p)
        for cand in (run.best, run.last, p / run.best.name):
            if cand.is_file():
                return cand
        expected = run.best.relative_to(p).as_posix()
        raise FileNotFoundError(f"no weights in run folder {p} (expected {expected})")
    if not p.is_file():
        raise FileNotFoundError(f"weights not found: {p}")
    if p.suffix in (".pt", ".pth"):
        raise ValueError(
            f"{p} is a pickled (official) checkpoint; convert it first: "
            f"yoloattn convert {p} -o model.safetensors"
        )
    return p


def evaluate_run(
    run_or_weights: str | Path,
    data: str,
    imgsz: int = 640,
    device: str = "",
    batch: int = 16,
    single_cls: bool = False,
    engagement: dict[int, dict[str, Any]] | None = None,
    records: str | Path | None = None,
) -> dict[str, float]:
    """Evaluate a finished run's best weights with both metrics; returns the metrics dict.

    With ``engagement`` (a dict, filled in place) the attention rows' gate values and mean
    relative contributions over the validation images are measured in the same pass
    (:mod:`yoloattn.engine.engagement`). With ``records`` (a path) the per-image match records
    are saved there (:meth:`yoloattn.engine.records.MatchRecords.save`).
    """
    from yoloattn.engine.distributed import select_device
    from yoloattn.engine.engagement import measure_engagement
    from yoloattn.models.weights import load_model

    dev = select_device(device)
    wpath = resolve_weights(run_or_weights)
    model = load_model(wpath, device=dev)
    stride = max(int(model.stride.max()), 32)
    dcfg, loader = build_val_loader(data, imgsz, batch, stride, single_cls=single_cls)
    if int(model.nc) != dcfg.nc:
        raise ValueError(
            f"weights {wpath} predict {model.nc} classes but {data} has {dcfg.nc}"
            + (" (trained with --single-cls?)" if model.nc == 1 else "")
        )
    with measure_engagement(model) if engagement is not None else contextlib.nullcontext() as meter:
        res = evaluate(model, loader, list(dcfg.names), dev, verbose=False)
    if engagement is not None and meter is not None:
        engagement.update(meter.summary())
    if records is not None and res.records is not None:
        res.records.save(records)
    return res.metrics
