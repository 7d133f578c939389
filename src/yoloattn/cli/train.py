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

from yoloattn.cli._options import HelpFormatter, add_config_options, config_options, parse_overrides
from yoloattn.engine.train_config import RUN, TRAINING, TrainConfig

__all__ = ["add_parser", "add_train_options", "config_from_args", "parse_overrides", "run", "train_options"]


def add_train_options(p: argparse.ArgumentParser) -> None:
    """The training options, shared by ``train`` and ``compare``: every :class:`TrainConfig`
    field of scope ``training`` (a new one appears in both commands)."""
    add_config_options(p, TrainConfig, TRAINING, "training options")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a model", description=__doc__, formatter_class=HelpFormatter)
    add_config_options(p, TrainConfig, RUN, "run")
    add_train_options(p)
    return p


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig options of :func:`add_train_options`, shared by ``train`` and ``compare``."""
    opts = config_options(args, TrainConfig, TRAINING)
    if opts["imgsz"] is None:  # compare leaves it unset: 640, or the demo's 320
        opts["imgsz"] = TrainConfig.imgsz
    return opts


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**config_options(args, TrainConfig, RUN), **train_options(args))


def run(args: argparse.Namespace) -> int:
    from yoloattn.engine.trainer import TrainingDiverged, train

    if args.resume:
        if args.resume == "latest":
            from yoloattn.engine.runs import RunDir

            args.resume = str(RunDir.latest(args.project).root)
            if int(os.environ.get("RANK", 0)) == 0:
                print(f"resuming {args.resume}")
        cfg = TrainConfig(
            resume=args.resume,
            device=args.device,
            workers=args.workers,
            threads=args.threads,
            quiet=args.quiet,
        )
    else:
        if not args.data:
            raise ValueError("--data is required (a dataset YAML), or --resume RUN_DIR")
        cfg = config_from_args(args)
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
