"""``yoloattn val``: evaluate weights on a dataset split with YOLO-style and COCO-standard mAP.

Writes ``runs/val/<name>/``: metrics.json, predictions.json (COCO format), confusion_matrix.png,
PR_curve.png, F1_curve.png, P_curve.png, R_curve.png and a few images with predicted (left) and
true (right) boxes.

Example::

    yoloattn val --weights runs/train/exp --data data.yaml
    yoloattn val --weights best.onnx --data data.yaml   # an export (yoloattn export --dynamic), onnxruntime

``--imgsz`` and ``--single-cls`` default to what the weights' sidecar records (the training
image size and ``--single-cls``), else 640 px and multi-class; the values used are printed.
The default ``--protocol per-image`` gives the same metrics at every ``--batch``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from yoloattn.engine.protocol import DEFAULT_PROTOCOL, PROTOCOLS


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "val",
        help="evaluate weights on a dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--weights", required=True, help="run folder, .safetensors file or .onnx export (run by onnxruntime)"
    )
    p.add_argument("--data", required=True, help="dataset YAML")
    p.add_argument(
        "--imgsz",
        type=int,
        default=None,
        help="image size (default: the one recorded in the weights' sidecar, else 640)",
    )
    p.add_argument(
        "--batch", type=int, default=32, help="images per batch (an upper bound; no effect on metrics)"
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=DEFAULT_PROTOCOL,
        help="per-image: each image padded only to its own stride multiple, metrics independent of "
        "--batch; official-rect: the official val scripts' rect batches (to reproduce published "
        "numbers; metrics change with --batch). See docs/evaluation.md",
    )
    p.add_argument("--conf", type=float, default=0.001, help="confidence threshold (val default 0.001)")
    p.add_argument("--iou", type=float, default=0.6, help="NMS IoU threshold (val default 0.6)")
    p.add_argument("--split", choices=["val", "test", "train"], default="val")
    p.add_argument("--device", default="")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="dataloader workers (default: 0 on CPU, where the model needs every core; else "
        "min(8, CPUs - 1)); torch threads are CPUs // (1 + workers)",
    )
    p.add_argument("--cache-dir", default=None, help="where label-scan caches go if the dataset is read-only")
    p.add_argument("--project", default="runs/val")
    p.add_argument("--name", default="exp")
    p.add_argument("--samples", type=int, default=4, help="images drawn with predicted and true boxes")
    p.add_argument(
        "--single-cls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score all classes as one (default: as the weights were trained, from their sidecar)",
    )
    return p


def _save_samples(res, names, out) -> None:
    from PIL import Image, ImageOps

    from yoloattn.engine.draw import draw_boxes

    for i, (path, pred, labels) in enumerate(res.samples):
        im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        left = draw_boxes(im, pred[pred[:, 4] >= 0.25].tolist(), names)
        right = draw_boxes(im, labels.tolist(), names, scores=False)
        canvas = Image.new("RGB", (im.width * 2 + 10, im.height), (255, 255, 255))
        canvas.paste(left, (0, 0))
        canvas.paste(right, (im.width + 10, 0))
        canvas.save(out / f"val_sample{i}_pred_vs_true.jpg", quality=90)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from yoloattn.engine.backend import load_weights
    from yoloattn.engine.distributed import select_device
    from yoloattn.engine.evaluator import (
        build_val_loader,
        eval_threads,
        evaluate,
        format_table,
        resolve_weights,
    )
    from yoloattn.engine.plots import plot_confusion_matrix, plot_metric_curves
    from yoloattn.engine.predictor import input_stride
    from yoloattn.engine.protocol import resolve_eval_options
    from yoloattn.engine.runs import increment_path

    device = select_device(args.device)
    wpath = resolve_weights(args.weights)
    imgsz, single_cls, note = resolve_eval_options(wpath, args.imgsz, args.single_cls)
    print(f"{note}, protocol {args.protocol}")
    model = load_weights(wpath, device=device)
    stride = input_stride(model)
    if args.workers is None:
        from yoloattn.data.loader import default_workers

        args.workers = default_workers() if device.type != "cpu" else 0
    dcfg, loader = build_val_loader(
        args.data,
        imgsz,
        args.batch,
        stride,
        args.split,
        args.workers,
        args.cache_dir,
        single_cls,
        protocol=args.protocol,
    )
    names = list(dcfg.names)
    if model.nc != len(names):
        hint = " (trained with --single-cls? pass --single-cls)" if model.nc == 1 else ""
        raise ValueError(f"weights {wpath} predict {model.nc} classes but {args.data} has {len(names)}{hint}")
    with eval_threads(loader.num_workers) as threads:
        nw = loader.num_workers
        print(
            f"{nw} dataloader worker{'s' if nw != 1 else ''}, "
            f"{threads} torch thread{'s' if threads != 1 else ''}"
        )
        res = evaluate(model, loader, names, device, conf=args.conf, iou=args.iou, keep_samples=args.samples)
    print(format_table(res))
    out = increment_path(Path(args.project) / args.name)
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "weights": str(wpath),
                "data": args.data,
                "split": args.split,
                "imgsz": imgsz,
                "single_cls": single_cls,
                "protocol": args.protocol,
                "metrics": res.metrics,
                "per_class": res.per_class,
                "speed_ms": res.speed_ms,
            },
            indent=2,
        )
    )
    (out / "predictions.json").write_text(json.dumps(res.predictions))
    assert res.confusion is not None and res.det_metrics is not None  # evaluate() fills both
    plot_confusion_matrix(res.confusion.matrix, out / "confusion_matrix.png", names)
    plot_metric_curves(res.det_metrics.result, out, res.det_metrics.names)
    _save_samples(res, names, out)
    print(f"results saved to {out}")
    return 0
