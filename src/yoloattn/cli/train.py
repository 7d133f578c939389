"""``yoloattn train``: train a YOLOv5/YOLOv7 model (optionally with attention) on a YOLO dataset.

Examples::

    yoloattn train --model yolov5n --data data.yaml --epochs 100 --imgsz 640
    yoloattn train --model yolov5s --attention cbam@neck --weights base.safetensors --data data.yaml
    yoloattn train --resume runs/train/exp3
    torchrun --nproc_per_node 4 -m yoloattn.cli train --model yolov7 --data data.yaml  # GPU i = LOCAL_RANK
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def parse_overrides(items: list[str] | None) -> dict[str, float]:
    """``['lr0=0.02', 'mosaic=0']`` -> ``{'lr0': 0.02, 'mosaic': 0.0}`` with clear errors."""
    out: dict[str, float] = {}
    for item in items or []:
        for part in item.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(f"hyperparameter override {part!r} must look like key=value (e.g. lr0=0.02)")
            k, v = part.split("=", 1)
            try:
                out[k.strip()] = float(v)
            except ValueError:
                raise ValueError(f"hyperparameter {k.strip()!r}: value {v!r} is not a number") from None
    return out


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``compare``."""
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs (default: 100 for YOLOv5, 300 for YOLOv7, as officially)",
    )
    p.add_argument("--batch", type=int, default=16, help="batch size per process")
    p.add_argument("--imgsz", type=int, default=640, help="train/val image size (pixels)")
    p.add_argument(
        "--hyp", default=None, help="hyperparameter file or shipped name (default: the model's recipe)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        help="override hyperparameters, e.g. --set lr0=0.02 --set mosaic=0",
    )
    p.add_argument("--optimizer", default="SGD", choices=["SGD", "AdamW", "Adam"])
    p.add_argument(
        "--lr-schedule",
        choices=["linear", "cos"],
        default=None,
        help="default: linear for YOLOv5, cos for YOLOv7",
    )
    p.add_argument("--device", default="", help="'' auto, cpu, 0, 0,1,...")
    p.add_argument("--workers", type=int, default=2, help="dataloader workers")
    p.add_argument("--val-interval", type=int, default=1, help="validate every k epochs")
    p.add_argument("--noval", action="store_true", help="validate only after the final epoch")
    p.add_argument(
        "--freeze",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="N: freeze the first N rows of the base model (10 = the YOLOv5 backbone; attention rows "
        "placed among them stay trainable); several numbers: those rows of the model as built",
    )
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable mixed precision on CUDA")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument(
        "--nbs",
        type=int,
        default=64,
        help="nominal batch size: gradients accumulate to it (weight decay scales with it)",
    )
    p.add_argument(
        "--clip-grad",
        type=float,
        default=None,
        metavar="NORM",
        help="clip the gradient norm (default: 10 for YOLOv5 as officially, off for YOLOv7; 0 = off; >= 0)",
    )
    p.add_argument(
        "--noautoanchor",
        dest="autoanchor",
        action="store_false",
        help="keep the model's anchors (default: check them against the labels, evolve if BPR <= 0.98)",
    )
    p.add_argument("--patience", type=int, default=0, help="stop after N validations without improvement")
    p.add_argument("--rect", action="store_true", help="rectangular training batches (no mosaic, no shuffle)")
    p.add_argument(
        "--multi-scale", action="store_true", help="resize every batch to a random 0.5x-1.5x of --imgsz"
    )
    p.add_argument(
        "--single-cls", action="store_true", help="train as one class (every label becomes 'item')"
    )
    p.add_argument(
        "--save-period",
        type=int,
        default=0,
        metavar="N",
        help="keep weights/epoch{k}, k = 0, N, 2N...",
    )
    p.add_argument(
        "--cache",
        nargs="?",
        const="ram",
        choices=["ram"],
        default=None,
        help="keep decoded, resized images in RAM (faster epochs; checked against free memory)",
    )
    p.add_argument("--cache-dir", default=None, help="where label-scan caches go if the dataset is read-only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default="yolov5s", help="shipped name (yolov5n..x, yolov7-tiny, yolov7, yolov7x) or YAML"
    )
    p.add_argument("--data", default=None, help="dataset YAML")
    p.add_argument(
        "--attention", default=None, help="placement spec, e.g. cbam@neck or se@backbone,cbam@neck"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="initial weights: .safetensors of ours, or an official .pt (read safely, no code runs)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="RUN_DIR",
        help="continue a run from its last checkpoint (no RUN_DIR: the newest run under --project)",
    )
    add_train_options(p)
    p.add_argument(
        "--noplots",
        dest="plots",
        action="store_false",
        help="skip the final validation of best (per-class table, PR/F1 curves, confusion matrix)",
    )
    return p


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig options of :func:`add_train_options`, shared by ``train`` and ``compare``."""
    return dict(
        epochs=args.epochs,
        batch=args.batch,
        imgsz=args.imgsz or 640,
        hyp=args.hyp,
        hyp_overrides=parse_overrides(args.overrides),
        optimizer=args.optimizer,
        lr_schedule=args.lr_schedule,
        device=args.device,
        workers=args.workers,
        val_interval=args.val_interval,
        noval=args.noval,
        freeze=list(args.freeze),
        sync_bn=args.sync_bn,
        amp=args.amp,
        label_smoothing=args.label_smoothing,
        nbs=args.nbs,
        patience=args.patience,
        clip_grad=args.clip_grad,
        autoanchor=args.autoanchor,
        plots=getattr(args, "plots", True),  # train only; compare evaluates on its own
        cache_dir=args.cache_dir,
        cache=args.cache,
        rect=args.rect,
        multi_scale=args.multi_scale,
        single_cls=args.single_cls,
        save_period=args.save_period,
        quiet=args.quiet,
    )


def config_from_args(args: argparse.Namespace):
    from yoloattn.engine.trainer import TrainConfig

    return TrainConfig(
        model=args.model,
        data=args.data or "",
        attention=args.attention,
        weights=args.weights,
        seed=args.seed,
        project=args.project,
        name=args.name,
        exist_ok=args.exist_ok,
        **train_options(args),
    )


def run(args: argparse.Namespace) -> int:
    from yoloattn.engine.trainer import TrainConfig, train

    if args.resume:
        if args.resume == "latest":
            from yoloattn.engine.runs import RunDir

            args.resume = str(RunDir.latest(args.project).root)
            if int(os.environ.get("RANK", 0)) == 0:
                print(f"resuming {args.resume}")
        cfg = TrainConfig(resume=args.resume, device=args.device, workers=args.workers, quiet=args.quiet)
    else:
        if not args.data:
            raise ValueError("--data is required (a dataset YAML), or --resume RUN_DIR")
        cfg = config_from_args(args)
    from yoloattn.engine.trainer import TrainingDiverged

    try:
        res = train(cfg)
    except TrainingDiverged as e:
        print(f"yoloattn train: stopped: {e}", file=sys.stderr)
        return 1
    if res is not None:
        print(
            f"done: {res.epochs_done} epochs, best fitness {res.best_fitness:.4f}, run folder {res.run_dir}"
        )
    return 0
