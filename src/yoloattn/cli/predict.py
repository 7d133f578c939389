"""``yoloattn predict``: detect objects in images and save annotated copies (and txt/JSON).

Example::

    yoloattn predict --weights runs/train/exp --source path/to/images --conf 0.25 --save-txt
    yoloattn predict --weights runs/train/exp --source path/to/images --visualize  # + LayerCAM heatmap
    yoloattn predict --weights best.onnx --source path/to/images  # an export, run by onnxruntime
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, cast


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="detect objects in images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--weights", required=True, help="run folder, .safetensors file or .onnx export (run by onnxruntime)"
    )
    p.add_argument("--source", required=True, nargs="+", help="image file(s), folder(s) or glob(s)")
    p.add_argument(
        "--imgsz",
        type=int,
        default=None,
        help="image size (default: the one recorded in the weights' sidecar, else 640)",
    )
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (predict default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (predict default 0.45)")
    p.add_argument("--max-det", type=int, default=1000)
    p.add_argument("--device", default="")
    p.add_argument("--save-txt", action="store_true", help="YOLO-format txt per image (class x y w h conf)")
    p.add_argument("--save-json", action="store_true", help="predictions.json with all detections")
    p.add_argument(
        "--visualize",
        nargs="?",
        const="layercam",
        choices=("layercam", "eigencam"),
        default=None,
        help="draw the detection heatmap under the boxes (default method layercam; see yoloattn explain)",
    )
    p.add_argument("--project", default="runs/predict")
    p.add_argument("--name", default="exp")
    return p


def _heatmap_image(model: Any, path: Any, args: argparse.Namespace) -> Any:
    """The image with its detection heatmap blended in (``--visualize``)."""
    from yoloattn.engine.explain import explain_image, overlay
    from yoloattn.engine.predictor import load_image

    img0 = load_image(path)
    exp = explain_image(
        model, img0, imgsz=args.imgsz, rows=[], method=args.visualize, conf=args.conf, iou=args.iou
    )
    return overlay(img0, exp.heatmap)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from yoloattn.engine.backend import is_onnx, load_weights
    from yoloattn.engine.distributed import select_device
    from yoloattn.engine.evaluator import resolve_weights
    from yoloattn.engine.predictor import (
        Prediction,
        collect_sources,
        dump_json,
        predict,
        save_prediction,
        to_json,
    )
    from yoloattn.engine.protocol import resolve_eval_options
    from yoloattn.engine.runs import increment_path

    device = select_device(args.device)
    wpath = resolve_weights(args.weights)
    imgsz, _, note = resolve_eval_options(wpath, args.imgsz)
    print(note.split(",")[0])  # single-cls plays no part in prediction
    if args.visualize and is_onnx(wpath):
        raise ValueError(
            "--visualize needs the PyTorch weights (.safetensors); an .onnx export has no gradients"
        )
    model = load_weights(wpath, device=device)
    names = [str(n) for n in cast(list[str], model.names)]
    paths = collect_sources(args.source)
    out = increment_path(Path(args.project) / args.name)
    out.mkdir(parents=True)
    items, n_ok, n_bad = [], 0, 0
    for res in predict(
        model, paths, imgsz=imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det, device=device
    ):
        if not isinstance(res, Prediction):
            n_bad += 1
            print(f"warning: {res[0]}: {res[1]} (skipped)", file=sys.stderr)
            continue
        n_ok += 1
        background = _heatmap_image(model, res.path, args) if args.visualize else None
        save_prediction(res, names, out, args.save_txt, image=background)
        items += to_json(res, names)
        counts: dict[str, int] = {}
        for c in res.boxes[:, 5].tolist():
            counts[names[int(c)]] = counts.get(names[int(c)], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no detections"
        print(f"{res.path}: {res.shape[1]}x{res.shape[0]} {summary}")
    if args.save_json:
        dump_json(items, out / "predictions.json")
    print(f"{n_ok} image(s) annotated, {n_bad} skipped; results saved to {out}")
    return 0 if n_ok else 1
