"""Training options and the small rules around them: ``TrainConfig``, ``--freeze`` rows, family.

The official meanings (yolo-architectures spec, section 6): ``--freeze N`` freezes the first N
rows; a model whose head is ``IDetect`` follows the YOLOv7 recipe, any other the YOLOv5 one.
(Fitness, the best-epoch score, is :func:`yoloattn.engine.metrics.fitness`.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "freeze_rows",
    "model_family",
]


class TrainingDiverged(RuntimeError):
    """Raised when the loss becomes NaN or infinite."""


@dataclass
class TrainConfig:
    model: str = "yolov5s"
    data: str = ""
    attention: str | None = None
    weights: str | None = None
    epochs: int | None = None  # None: the official CLI default, 100 for YOLOv5 and 300 for YOLOv7
    batch: int = 16
    imgsz: int = 640
    hyp: str | None = None
    hyp_overrides: dict[str, float] = field(default_factory=dict)
    optimizer: str = "SGD"
    lr_schedule: str | None = None  # linear (v5 default) | cos (v7 default)
    device: str = ""
    workers: int = 2
    seed: int = 0
    deterministic: bool = True
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    resume: str | None = None
    val_interval: int = 1
    noval: bool = False
    freeze: list[int] = field(default_factory=list)
    sync_bn: bool = False
    amp: bool = True
    label_smoothing: float = 0.0
    nbs: int = 64
    patience: int = 0
    cache_dir: str | None = None
    single_cls: bool = False  # train as one class ("item" unless the dataset has one class)
    multi_scale: bool = False  # every batch resized to a random 0.5x-1.5x of imgsz (stride multiple)
    save_period: int = 0  # also keep weights/epoch{N}.safetensors every N epochs (0 = off)
    cache: str | None = None  # "ram": keep the decoded, resized images in memory (train and val)
    rect: bool = False
    quiet: bool = False
    plots: bool = True  # after training: validate best once more, per-class table + curve/confusion PNGs
    autoanchor: bool = True  # check the anchors against the labels at start, evolve if BPR <= 0.98
    clip_grad: float | None = None  # max gradient norm; None = recipe default (10 for v5, off for v7)
    stop_after_epochs: int | None = None  # stop (as if killed) after this many epochs in this call

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    run_dir: Path
    best: Path
    last: Path
    epochs_done: int
    metrics: dict[str, float]
    best_fitness: float


def freeze_rows(freeze: list[int], n_rows: int) -> list[int]:
    """Rows to freeze, as the official ``--freeze``: one number N means rows ``0..N-1`` (so
    ``--freeze 10`` freezes the YOLOv5 backbone and ``--freeze 0`` nothing); several numbers
    name the rows themselves."""
    rows = list(range(freeze[0])) if len(freeze) == 1 else list(freeze)
    bad = [i for i in rows if not 0 <= i < n_rows]
    if bad:
        raise ValueError(f"--freeze: row(s) {bad} do not exist; the model has rows 0..{n_rows - 1}")
    return sorted(set(rows))


def _ranges(rows: list[int]) -> str:
    if rows == list(range(rows[0], rows[-1] + 1)) and len(rows) > 2:
        return f"{rows[0]}..{rows[-1]}"
    return ", ".join(map(str, rows))


def model_family(cfg: dict) -> str:
    """'v7' when the head is IDetect (YOLOv7 training configs), else 'v5'."""
    last = cfg["head"][-1]
    return "v7" if str(last[2]).lower() == "idetect" else "v5"
