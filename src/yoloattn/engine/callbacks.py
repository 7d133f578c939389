"""Trainer callbacks: the hooks loggers attach to, and the TensorBoard logger.

On the main process the trainer calls, on every callback in order:

* ``on_train_start(trainer)`` once the run folder exists (``trainer.run_dir``);
* ``on_epoch_end(trainer, epoch, values)`` after each epoch's ``results.csv`` row is written;
  ``values`` maps that row's columns (``train/box_loss``, ``metrics/mAP_0.5:0.95``, ``x/lr0``, ...)
  to floats, or to None where the cell is empty (an epoch without validation);
* ``on_train_end(trainer, result)`` after the last epoch (``result``: the ``TrainResult``).

A failing callback is logged and dropped: a logger must never lose a training.

>>> class Printer(Callback):                                          # doctest: +SKIP
...     def on_epoch_end(self, trainer, epoch, values):
...         print(epoch, values["metrics/mAP_0.5:0.95"])
>>> train(TrainConfig(data="data.yaml"), callbacks=[Printer()])      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger("yoloattn.train")

__all__ = ["Callback", "CallbackList", "TensorBoardLogger", "tensorboard_missing"]

TENSORBOARD_EXTRA = "pip install 'yoloattn[tensorboard]'"


class Callback:
    """Base class: override the hooks you need (each does nothing by default)."""

    def on_train_start(self, trainer: Any) -> None:
        """The run folder exists; no epoch has run in this session yet."""

    def on_epoch_end(self, trainer: Any, epoch: int, values: Mapping[str, float | None]) -> None:
        """Epoch ``epoch`` (0-based) finished; ``values`` is its ``results.csv`` row."""

    def on_train_end(self, trainer: Any, result: Any) -> None:
        """The training finished (or stopped early); ``result`` is its ``TrainResult``."""


class CallbackList(Callback):
    """Calls each callback in turn; one that raises is logged and removed from the list."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in list(self.callbacks):
            try:
                getattr(cb, hook)(*args)
            except Exception as e:  # a logger must never lose a training
                LOGGER.warning("callback %s.%s failed (%s); it is switched off", type(cb).__name__, hook, e)
                self.callbacks.remove(cb)

    def on_train_start(self, trainer: Any) -> None:
        self._call("on_train_start", trainer)

    def on_epoch_end(self, trainer: Any, epoch: int, values: Mapping[str, float | None]) -> None:
        self._call("on_epoch_end", trainer, epoch, values)

    def on_train_end(self, trainer: Any, result: Any) -> None:
        self._call("on_train_end", trainer, result)


def tensorboard_missing() -> str | None:
    """None when TensorBoard event files can be written here, else why not (and what to install)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        return f"--tensorboard needs the optional tensorboard package ({e}): {TENSORBOARD_EXTRA}"
    return None


class TensorBoardLogger(Callback):
    """Writes every numeric ``results.csv`` cell as a TensorBoard scalar (step = epoch).

    The event files go into ``log_dir``, by default the run folder itself, so
    ``tensorboard --logdir runs/train`` shows each run under its folder name. Tags are the column
    names with characters TensorBoard refuses replaced by ``_`` (``metrics/mAP_0.5_0.95``). Empty
    cells (epochs without validation) are not written. Raises ImportError at construction when the optional
    ``tensorboard`` package is missing, before any training starts.
    """

    def __init__(self, log_dir: str | Path | None = None) -> None:
        why = tensorboard_missing()
        if why:
            raise ImportError(why)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.writer: Any = None

    def on_train_start(self, trainer: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.log_dir or trainer.run_dir))

    def on_epoch_end(self, trainer: Any, epoch: int, values: Mapping[str, float | None]) -> None:
        if self.writer is None:
            return
        for tag, v in values.items():
            if v is not None and math.isfinite(v):
                self.writer.add_scalar(re.sub(r"[^-/\w.]", "_", tag), v, epoch)
        self.writer.flush()

    def on_train_end(self, trainer: Any, result: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
