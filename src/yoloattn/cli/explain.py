"""``yoloattn explain``: what the attention rows attend to and where the detections come from.

For every image it writes, under ``<project>/<name>/``:

* ``<image>_cam.png``       detection heatmap (LayerCAM per detection, or EigenCAM) with the boxes;
* ``<image>_row<i>_<key>.png``  one overlay per attention row (spatial map, attention received,
  or, for channel modules, where the up-weighted channels are active plus a channel-weight strip);
* ``<image>_summary.png``   all panels tiled;

and ``explain.json`` (detections and per-row map statistics). Maps are drawn on the original
image: the letterbox is undone. See docs/explain.md.

Examples::

    yoloattn explain --weights runs/train/exp --source path/to/images
    yoloattn explain --weights model.safetensors --source img.jpg --method eigencam --rows 19 23
    yoloattn explain --weights src/yoloattn/demo/yolov5n-raccoon.safetensors \\
        --source src/yoloattn/demo/raccoon/images/val --imgsz 320
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

METHODS = ("layercam", "eigencam")
TARGETS = ("detection", "class")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "explain",
        help="attention maps and detection heatmaps (LayerCAM/EigenCAM) on images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--weights", required=True, help="run folder (weights/best.safetensors) or .safetensors file"
    )
    p.add_argument("--source", required=True, nargs="+", help="image file(s), folder(s) or glob(s)")
    p.add_argument(
        "--rows",
        type=int,
        nargs="*",
        default=None,
        help="attention rows to draw (default: all; no value: none)",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="layercam",
        help="detection heatmap: layercam (gradients, per target) or eigencam (gradient-free)",
    )
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="detection",
        help="layercam: one map per detection, or per detected class (the image shows their maximum)",
    )
    p.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="rows whose outputs the heatmap explains (default: the Detect head's inputs)",
    )
    p.add_argument(
        "--imgsz", type=int, default=None, help="inference size (default: the weights' imgsz, else 640)"
    )
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (predict default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (predict default 0.45)")
    p.add_argument("--max-det", type=int, default=1000)
    p.add_argument("--device", default="")
    p.add_argument("--project", default="runs/explain")
    p.add_argument("--name", default="exp")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from yoloattn.engine.distributed import select_device
    from yoloattn.engine.evaluator import resolve_weights
    from yoloattn.engine.explain import attention_rows, explain_image, explanation_record, save_explanation
    from yoloattn.engine.predictor import collect_sources, load_image
    from yoloattn.engine.runs import increment_path
    from yoloattn.models.weights import load_model, read_sidecar

    device = select_device(args.device)
    weights = resolve_weights(args.weights)
    model = load_model(weights, device=device)
    imgsz = args.imgsz or int(read_sidecar(weights).get("imgsz") or 640)
    names = list(model.names)
    rows = sorted(attention_rows(model, args.rows))  # checks --rows before any work
    paths = collect_sources(args.source)
    out = increment_path(Path(args.project) / args.name)
    out.mkdir(parents=True)
    print(
        f"explaining {len(paths)} image(s) at {imgsz}px with {args.method}; attention rows: {rows or 'none'}"
    )
    records, n_ok = [], 0
    for path in paths:
        try:
            img0 = load_image(path)
        except Exception as e:  # unreadable, truncated, not an image
            print(f"warning: {path}: cannot read image: {e} (skipped)", file=sys.stderr)
            continue
        exp = explain_image(
            model,
            img0,
            imgsz=imgsz,
            rows=rows,
            method=args.method,
            target=args.target,
            layers=args.layers,
            conf=args.conf,
            iou=args.iou,
            max_det=args.max_det,
            device=device,
        )
        save_explanation(exp, img0, names, out, path.stem)
        records.append({"file": str(path), **explanation_record(exp, names)})
        n_ok += 1
        print(f"{path}: {len(exp.detections)} detection(s), {len(exp.rows)} attention map(s)")
    (out / "explain.json").write_text(json.dumps(records, indent=1))
    print(f"{n_ok} image(s) explained; results saved to {out}")
    return 0 if n_ok else 1
