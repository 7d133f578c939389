"""Training options and the small rules around them: ``TrainConfig``, ``--freeze`` rows, family.

The official meanings (yolo-architectures spec, section 6): ``--freeze N`` freezes the first N
rows; a model whose head is ``IDetect`` follows the YOLOv7 recipe, any other the YOLOv5 one.
(Fitness, the best-epoch score, is :func:`yoloattn.engine.metrics.fitness`.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "API",
    "RUN",
    "TRAINING",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "check_count",
    "check_options",
    "freeze_rows",
    "model_family",
    "option",
]


class TrainingDiverged(RuntimeError):
    """Raised when the loss becomes NaN or infinite."""


#: Where a :class:`TrainConfig` field is a command-line option (its ``scope`` metadata):
TRAINING = "training"  #: ``yoloattn train`` and ``yoloattn compare`` (the default for new fields)
RUN = "run"  #: ``yoloattn train`` only: what to train and where (``compare`` has its own)
API = "api"  #: the Python API only


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    scope: str = TRAINING,
    flag: str | tuple[str, ...] | None = None,
    factory: Callable[[], Any] | None = None,
    **cli: Any,
) -> Any:
    """A :class:`TrainConfig` field and its command-line option, described once.

    ``help`` is the option's help text; ``flag`` its name when it is not ``--field-name``
    (``--no-amp`` for ``amp``); ``cli`` holds further :meth:`argparse.ArgumentParser.add_argument`
    keywords (``choices``, ``metavar``, ``nargs``, ``const``) and ``cli_default``, the parser's
    default when it differs from the field's (the field's default applies when the option is
    not given). The option's type and action follow from the annotation (see
    :mod:`yoloattn.cli._options`).
    """
    metadata = {"help": help, "scope": scope, "flag": flag, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every option of one training run; ``yoloattn train`` and ``compare`` generate theirs from it."""

    model: str = option(
        "yolov5s", scope=RUN, help="shipped name (yolov5n..x, yolov7-tiny, yolov7, yolov7x) or YAML"
    )
    data: str = option("", scope=RUN, cli_default=None, help="dataset YAML")
    attention: str | None = option(
        None, scope=RUN, help="placement spec, e.g. cbam@neck or se@backbone,cbam@neck"
    )
    weights: str | None = option(
        None,
        scope=RUN,
        help="initial weights: .safetensors of ours, or an official .pt (read safely, no code runs)",
    )
    epochs: int | None = option(None, help="epochs (default: 100 for YOLOv5, 300 for YOLOv7, as officially)")
    batch: int = option(16, help="batch size per process")
    imgsz: int = option(640, help="train/val image size (pixels)")
    hyp: str | None = option(None, help="hyperparameter file or shipped name (default: the model's recipe)")
    hyp_overrides: dict[str, float] = option(
        flag="--set", factory=dict, help="override hyperparameters, e.g. --set lr0=0.02 --set mosaic=0"
    )
    optimizer: str = option("SGD", choices=["SGD", "AdamW", "Adam"], help="optimizer")
    lr_schedule: str | None = option(
        None,
        choices=["linear", "cos"],
        help="learning-rate schedule (default: linear for YOLOv5, cos for YOLOv7)",
    )
    device: str = option("", help="'' auto, cpu, 0, 0,1,...")
    workers: int = option(2, help="dataloader workers")
    threads: int | None = option(
        None,
        help="torch threads of each training process (default: $OMP_NUM_THREADS when set, else "
        "max(1, CPUs per process // (1 + workers)); each dataloader worker uses 1)",
    )
    seed: int = option(0, scope=RUN, help="random seed (initialisation, data order, augmentation)")
    deterministic: bool = option(True, scope=API, help="deterministic algorithms")
    project: str = option("runs/train", scope=RUN, help="folder of the run folders")
    name: str = option("exp", scope=RUN, help="run folder name (exp2, exp3... if it exists)")
    exist_ok: bool = option(False, scope=RUN, help="reuse the run folder if it exists")
    resume: str | None = option(
        None,
        scope=RUN,
        nargs="?",
        const="latest",
        metavar="RUN_DIR",
        help="continue a run from its last checkpoint (no RUN_DIR: the newest run under --project)",
    )
    val_interval: int = option(1, help="validate every k epochs")
    noval: bool = option(False, help="validate only after the final epoch")
    freeze: list[int] = option(
        factory=list,
        nargs="*",
        metavar="N",
        help="N: freeze the first N rows of the base model (10 = the YOLOv5 backbone; attention rows "
        "placed among them stay trainable); several numbers: those rows of the model as built",
    )
    sync_bn: bool = option(False, help="SyncBatchNorm under DDP")
    amp: bool = option(True, flag="--no-amp", help="disable mixed precision on CUDA")
    label_smoothing: float = option(0.0, help="label smoothing epsilon")
    nbs: int = option(64, help="nominal batch size: gradients accumulate to it (weight decay scales with it)")
    patience: int = option(0, help="stop after N validations without improvement (0 = off)")
    cache_dir: str | None = option(None, help="where label-scan caches go if the dataset is read-only")
    single_cls: bool = option(False, help="train as one class (every label becomes 'item')")
    multi_scale: bool = option(
        False, help="resize every batch to a random 0.5x-1.5x of --imgsz (a multiple of the stride)"
    )
    save_period: int = option(0, metavar="N", help="also keep weights/epoch{k}, k = 0, N, 2N... (0 = off)")
    cache: str | None = option(
        None,
        nargs="?",
        const="ram",
        choices=["ram"],
        help="keep decoded, resized images in RAM (faster epochs; checked against free memory)",
    )
    rect: bool = option(False, help="rectangular training batches (no mosaic, no shuffle)")
    quiet: bool = option(False, help="no progress bars")
    tensorboard: bool = option(
        False,
        help="also log the results.csv scalars as TensorBoard event files in the run folder "
        "(needs the optional extra: pip install 'yoloattn[tensorboard]')",
    )
    plots: bool = option(
        True,
        scope=RUN,
        flag="--noplots",
        help="skip the final validation of best (per-class table, PR/F1 curves, confusion matrix)",
    )
    autoanchor: bool = option(
        True,
        flag="--noautoanchor",
        help="keep the model's anchors (default: check them against the labels, evolve if BPR <= 0.98)",
    )
    clip_grad: float | None = option(
        None,
        metavar="NORM",
        help="clip the gradient norm (default: 10 for YOLOv5 as officially, off for YOLOv7; 0 = off; >= 0)",
    )
    insert: str = option(
        "auto",
        choices=["auto", "identity", "plain"],
        help="how attention rows enter the network: identity (zero-initialised residual gate, the "
        "network keeps its function at step 0), plain (the paper's module), auto (identity when "
        "--weights are given, plain from scratch); a config's own insert key wins over auto",
    )
    gate: str = option(
        "scalar", choices=["scalar", "channel"], help="identity insertion: one gate per row or per channel"
    )
    gate_lr_mult: float = option(
        100.0,
        metavar="K",
        help="learning-rate multiplier of the insertion gates (their own group, no weight decay); "
        "the default is measured on the demo, see docs/compare.md",
    )
    new_lr_mult: float = option(
        1.0, metavar="K", help="learning-rate multiplier of the inserted attention modules' own parameters"
    )
    warmup_new: int = option(
        0,
        metavar="N",
        help="first N epochs: only the inserted attention rows, their gates and the Detect head train",
    )
    allow_unused_rows: bool = option(
        False,
        help="skip the model parser's miswire check (a row nothing consumes, a Detect input of the "
        "wrong stride) for research configs that mean it; recorded in model.yaml",
    )
    eval_start: bool = option(
        False, scope=API, help="validate the model before its first step (compare's epoch-0 column)"
    )
    stop_after_epochs: int | None = option(
        None, scope=API, help="stop (as if killed) after this many epochs in this call"
    )

    def __post_init__(self) -> None:
        check_options(self)

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


# ----------------------------------------------------------------------------- option rules
#: field -> (lowest allowed value, highest allowed value or None, inclusive high?, what it means);
#: ``None`` values (option unset) are always allowed. The only place the ranges are spelled.
_RULES: dict[str, tuple[float, float | None, bool, str]] = {
    "epochs": (1, None, True, ""),
    "batch": (1, None, True, ""),
    "imgsz": (32, None, True, "pixels; a multiple of the model's max stride"),
    "workers": (0, None, True, ""),
    "threads": (1, None, True, ""),
    "val_interval": (1, None, True, "validate every k epochs"),
    "patience": (0, None, True, "0 = off"),
    "label_smoothing": (0.0, 1.0, False, "epsilon"),
    "nbs": (1, None, True, "nominal batch size"),
    "save_period": (-1, None, True, "0 or -1 = off, as officially"),
    "clip_grad": (0.0, None, True, "0 = off"),
    "gate_lr_mult": (0.0, None, True, ""),
    "new_lr_mult": (0.0, None, True, ""),
    "warmup_new": (0, None, True, ""),
    "stop_after_epochs": (1, None, True, ""),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_count(
    flag: str, value: Any, low: float, high: float | None = None, note: str = "", *, high_open: bool = False
) -> None:
    """Raise a one-line ``ValueError`` naming ``flag``, ``value`` and the allowed range when
    ``value`` is not a finite number in ``[low, high]`` (``high_open``: ``[low, high)``; ``high``
    None: no upper bound)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and math.isfinite(value) and value >= low
    ok = ok and (high is None or value < high or (value == high and not high_open))
    if not ok:
        shown = f"{value:g}" if isinstance(value, float) else value
        allowed = f">= {low:g}" if high is None else f"{low:g} <= x {'<' if high_open else '<='} {high:g}"
        raise ValueError(f"{flag} {shown}: out of range; allowed: {allowed}" + (f" ({note})" if note else ""))


def check_options(cfg: TrainConfig) -> None:
    """Check every option against its allowed range (:data:`_RULES`) before anything runs: one
    line naming the option, the value and the range (``--patience -1: out of range; allowed: >= 0
    (0 = off)``)."""
    for name, (low, high, closed, note) in _RULES.items():
        value = getattr(cfg, name)
        if value is not None:
            check_count(_flag(name), value, low, high, note, high_open=not closed)
    for n in cfg.freeze:
        check_count("--freeze", n, 0, None, "row numbers, or one count N: the first N rows")
    for key, v in cfg.hyp_overrides.items():
        if not math.isfinite(float(v)):
            raise ValueError(f"--set {key}={v}: not a finite number")


def freeze_rows(freeze: list[int], n_rows: int) -> list[int]:
    """Rows to freeze, as the official ``--freeze``: one number N means rows ``0..N-1`` (so
    ``--freeze 10`` freezes the YOLOv5 backbone and ``--freeze 0`` nothing); several numbers
    name the rows themselves."""
    if len(freeze) == 1 and freeze[0] > n_rows:
        raise ValueError(
            f"--freeze {freeze[0]}: out of range; allowed: 0..{n_rows} "
            f"(the model has {n_rows} rows, 0..{n_rows - 1})"
        )
    rows = list(range(freeze[0])) if len(freeze) == 1 else list(freeze)
    bad = [i for i in rows if not 0 <= i < n_rows]
    if bad:
        raise ValueError(
            f"--freeze: row(s) [{_ranges(sorted(set(bad)))}] do not exist; the model has rows 0..{n_rows - 1}"
        )
    return sorted(set(rows))


def _ranges(rows: list[int]) -> str:
    if rows == list(range(rows[0], rows[-1] + 1)) and len(rows) > 2:
        return f"{rows[0]}..{rows[-1]}"
    return ", ".join(map(str, rows))


def model_family(cfg: dict) -> str:
    """'v7' when the head is IDetect (YOLOv7 training configs), else 'v5'."""
    last = cfg["head"][-1]
    return "v7" if str(last[2]).lower() == "idetect" else "v5"
