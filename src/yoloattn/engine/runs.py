"""Run folders: names that never overwrite, atomic small files, ``results.csv``, the newest run."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

__all__ = [
    "RESULT_COLUMNS",
    "increment_path",
    "latest_run",
    "truncate_results",
    "write_atomic",
    "write_results_row",
]

RESULT_COLUMNS = [
    "epoch",
    "train/box_loss",
    "train/obj_loss",
    "train/cls_loss",
    "metrics/precision",
    "metrics/recall",
    "metrics/mAP_0.5",
    "metrics/mAP_0.5:0.95",
    "val/box_loss",
    "val/obj_loss",
    "val/cls_loss",
    "x/lr0",
    "x/lr1",
    "x/lr2",
]


def increment_path(path: str | Path, exist_ok: bool = False) -> Path:
    """``runs/train/exp`` -> ``exp``, ``exp2``, ``exp3``... never overwriting an existing run."""
    path = Path(path)
    if exist_ok or not path.exists():
        return path
    n = 2
    while (p := path.with_name(f"{path.name}{n}")).exists():
        n += 1
    return p


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results_row(path: Path, epoch: int, values: list[Any]) -> None:
    """Append one epoch's row to ``results.csv`` (a new file, with the header, at epoch 0)."""
    new = not path.exists() or epoch == 0
    with path.open("w" if new else "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(RESULT_COLUMNS)
        w.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in [epoch, *values]])


def truncate_results(path: Path, before_epoch: int) -> int:
    """Keep only the rows of epochs ``< before_epoch`` in ``results.csv``; returns rows dropped.

    A run killed after writing an epoch's row but before its checkpoint is resumed from the
    previous epoch and writes that row again; this keeps one row per epoch.
    """
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return 0
    keep = [lines[0]]
    for line in lines[1:]:
        first = line.split(",", 1)[0].strip()
        if first.isdigit() and int(first) < before_epoch:
            keep.append(line)
    dropped = len(lines) - len(keep)
    if dropped:
        write_atomic(path, "".join(keep))
    return dropped


def latest_run(project: str | Path) -> Path:
    """The run folder under ``project`` whose resume state was written last."""
    states = sorted(Path(project).glob("*/weights/last.state.safetensors"), key=lambda f: f.stat().st_mtime)
    if not states:
        raise FileNotFoundError(
            f"--resume: no run with a checkpoint under {project}/ (looked for "
            "*/weights/last.state.safetensors); pass the run folder, e.g. --resume runs/train/exp3, "
            "or --project where the runs are"
        )
    return states[-1].parent.parent
