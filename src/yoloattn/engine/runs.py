"""Run folders: :class:`RunDir` (every path of one), names that never overwrite, ``results.csv``.

A training run writes one folder, ``runs/<task>/<name>/``::

    args.yaml                      every resolved option
    model.yaml                     the resolved architecture (attention rows, evolved anchors)
    results.csv, results.png       one row per epoch, and its plot
    confusion_matrix.png, *_curve.png   the final validation of best
    weights/last.safetensors + last.json, weights/best.safetensors + best.json
    weights/epoch{N}.safetensors + epoch{N}.json   (--save-period)
    weights/last.state.safetensors everything an exact resume needs (compare drops it when done)
    records.npz                    per-image match records of the final evaluation (compare)

:class:`RunDir` is the only place these names are spelled.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yoloattn._io import write_text_atomic

__all__ = [
    "RESULT_COLUMNS",
    "RunDir",
    "increment_path",
    "read_results",
    "truncate_results",
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


def write_results_row(path: Path, epoch: int, values: list[Any]) -> None:
    """Append one epoch's row to ``results.csv`` (a new file, with the header, at epoch 0).
    ``None`` values (nothing measured that epoch, e.g. metrics under ``--noval``) are empty cells."""
    new = not path.exists() or epoch == 0
    with path.open("w" if new else "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(RESULT_COLUMNS)
        w.writerow(["" if v is None else f"{v:.6g}" if isinstance(v, float) else v for v in [epoch, *values]])


def read_results(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The numeric columns of a ``results.csv`` (names stripped of spaces), as float arrays.

    Empty cells (nothing measured that epoch, e.g. metrics under ``--noval``) are NaN; a column
    with a non-numeric cell is left out. Raises FileNotFoundError, or ValueError for a file
    without data rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results CSV not found: {path}")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if len(rows) < 2:
        raise ValueError(f"{path} has no data rows (need a header and at least one row)")
    body = rows[1:]
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(h.strip() for h in rows[0]):
        try:
            out[name] = np.array([float(r[i]) if i < len(r) and r[i].strip() else np.nan for r in body])
        except ValueError:
            continue  # non-numeric column
    return out


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
        write_text_atomic(path, "".join(keep))
    return dropped


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder (see the module docstring); nothing is created until asked.

    >>> run = RunDir("runs/train/exp")
    >>> run.last.as_posix(), run.state.as_posix()
    ('runs/train/exp/weights/last.safetensors', 'runs/train/exp/weights/last.state.safetensors')
    """

    root: Path

    WEIGHTS = "weights"
    STATE = "last.state.safetensors"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def new(cls, project: str | Path, name: str, exist_ok: bool = False) -> RunDir:
        """``project/name``, or ``name2``, ``name3``... so an existing run is never overwritten.

        ``exist_ok`` reuses an existing folder, but never one that holds another run (its
        ``args.yaml`` or ``weights/``): two runs in one folder would leave the options of one beside
        the weights of the other. That is refused with a ``ValueError`` naming the folder.
        """
        run = cls(increment_path(Path(project) / name, exist_ok))
        if exist_ok:
            held = [p.name for p in (run.args_yaml, run.weights_dir, run.results_csv) if p.exists()]
            if held:
                raise ValueError(
                    f"--exist-ok: {run.root} holds another run ({', '.join(held)}); continue it with "
                    f"--resume {run.root}, delete it, or choose another --name"
                )
        return run

    @classmethod
    def of_state(cls, state: str | Path) -> RunDir:
        """The run folder holding the training-state file ``state`` (``<run>/weights/<file>``)."""
        return cls(Path(state).parent.parent)

    @classmethod
    def latest(cls, project: str | Path) -> RunDir:
        """The run under ``project`` whose resume state was written last."""
        pattern = f"*/{cls.WEIGHTS}/{cls.STATE}"
        states = sorted(Path(project).glob(pattern), key=lambda f: f.stat().st_mtime)
        if not states:
            raise FileNotFoundError(
                f"--resume: no run with a checkpoint under {project}/ (looked for {pattern}); pass "
                "the run folder, e.g. --resume runs/train/exp3, or --project where the runs are"
            )
        return cls.of_state(states[-1])

    # ------------------------------------------------------------------ weights
    @property
    def weights_dir(self) -> Path:
        return self.root / self.WEIGHTS

    @property
    def last(self) -> Path:
        """The final-epoch (EMA) weights; sidecar: :meth:`sidecar`."""
        return self.weights_dir / "last.safetensors"

    @property
    def best(self) -> Path:
        """The weights of the best epoch by fitness."""
        return self.weights_dir / "best.safetensors"

    def epoch_weights(self, epoch: int) -> Path:
        """The weights kept at ``epoch`` by ``--save-period``."""
        return self.weights_dir / f"epoch{epoch}.safetensors"

    @staticmethod
    def sidecar(weights: Path) -> Path:
        """The JSON sidecar written beside a weights file (``last.safetensors`` -> ``last.json``)."""
        from yoloattn.models.weights import sidecar_path

        return sidecar_path(weights)

    @property
    def state(self) -> Path:
        """The training state an exact resume needs (model, EMA, optimizer, RNG)."""
        return self.weights_dir / self.STATE

    # ------------------------------------------------------------------ records and plots
    @property
    def args_yaml(self) -> Path:
        return self.root / "args.yaml"

    @property
    def model_yaml(self) -> Path:
        return self.root / "model.yaml"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def results_png(self) -> Path:
        return self.root / "results.png"

    @property
    def confusion_png(self) -> Path:
        return self.root / "confusion_matrix.png"

    @property
    def metrics_start(self) -> Path:
        """Metrics of the model before its first step (``eval_start``; compare's epoch-0 column)."""
        return self.root / "metrics_start.json"

    @property
    def engagement(self) -> Path:
        """Gate values and mean relative contribution of every attention row (final weights)."""
        return self.root / "engagement.json"

    @property
    def records(self) -> Path:
        """Per-image match records of the final evaluation (compare's bootstrap; ``MatchRecords``)."""
        return self.root / "records.npz"

    def drop_state(self) -> int:
        """Delete the resume state of a finished run; returns the bytes freed (0 if none)."""
        try:
            size = self.state.stat().st_size
        except FileNotFoundError:
            return 0
        self.state.unlink(missing_ok=True)
        return size

    @property
    def plots_dir(self) -> Path:
        """Where the PR / F1 / P / R curves go (their names are :mod:`yoloattn.engine.plots`'s)."""
        return self.root

    def is_run(self) -> bool:
        """Whether the folder looks like a run (it has a ``weights`` folder)."""
        return self.weights_dir.is_dir()
