"""Devices, seeding and the few collective operations the trainer needs under ``torchrun``.

Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) every helper is a no-op, so the same training
code runs on one CPU, one GPU or many GPUs, on one node or several (``rank()`` is the *global*
rank: only global rank 0 writes files).

A collective that waits longer than ``$YOLOATTN_DIST_TIMEOUT`` seconds (default 10800: rank 0
validates and saves while the others wait) fails instead of hanging; a process whose peer died
fails at once, and :func:`peer_lost_error` turns that into one clear message.
"""

from __future__ import annotations

import os
import random
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "PeerLostError",
    "all_finite",
    "broadcast_flag",
    "dist_timeout",
    "init_distributed",
    "is_dist",
    "peer_lost_error",
    "rank",
    "seed_everything",
    "select_device",
]


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def select_device(spec: str = "") -> torch.device:
    """'' (auto), 'cpu', 'cuda', '0', '0,1' -> a torch.device (the local rank's GPU under DDP)."""
    spec = str(spec).strip().lower()
    local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if spec == "cpu":
        return torch.device("cpu")
    if spec in ("", "cuda") or spec.replace(",", "").isdigit():
        if torch.cuda.is_available():
            if local_rank >= 0:
                return torch.device("cuda", local_rank)
            idx = int(spec.split(",")[0]) if spec and spec[0].isdigit() else 0
            return torch.device("cuda", idx)
        if spec not in ("",):
            raise ValueError(f"--device {spec!r} asks for CUDA but no GPU is available; use --device cpu")
        return torch.device("cpu")
    raise ValueError(f"unknown device {spec!r}; use '', 'cpu', 'cuda', '0' or '0,1'")


def is_dist() -> bool:
    """True under ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def rank() -> int:
    """The global rank (``RANK``; ``LOCAL_RANK`` only picks the GPU of a node)."""
    return int(os.environ.get("RANK", 0))


def dist_timeout() -> timedelta:
    """How long a collective may wait: ``$YOLOATTN_DIST_TIMEOUT`` seconds, default 3 hours."""
    raw = os.environ.get("YOLOATTN_DIST_TIMEOUT", "").strip()
    try:
        secs = float(raw) if raw else 3 * 3600.0
    except ValueError:
        raise ValueError(f"YOLOATTN_DIST_TIMEOUT={raw!r}: give seconds, e.g. 600") from None
    if secs <= 0:
        raise ValueError(f"YOLOATTN_DIST_TIMEOUT={raw!r} must be positive")
    return timedelta(seconds=secs)


class PeerLostError(RuntimeError):
    """Another process of a distributed run died or stopped answering."""


_PEER_LOST = re.compile(
    r"gloo|nccl|connection|closed|reset by peer|broken pipe|timed out|timeout|socket|peer", re.IGNORECASE
)


def peer_lost_error(exc: BaseException, run_dir: str | Path | None) -> PeerLostError | None:
    """A clear :class:`PeerLostError` when ``exc`` is a collective failing because another
    process of this distributed run is gone; None for any other error (or outside ``torchrun``)."""
    if not is_dist() or not isinstance(exc, RuntimeError) or isinstance(exc, PeerLostError):
        return None
    text = str(exc).strip()
    if not _PEER_LOST.search(text):
        return None
    first = text.splitlines()[0].split(" This is typically caused")[0][:300] if text else type(exc).__name__
    world = int(os.environ.get("WORLD_SIZE", 1))
    run = str(run_dir) if run_dir else "<the run folder>"
    return PeerLostError(
        f"rank {rank()} of {world}: lost contact with another process of this distributed run (a node or "
        f"process died, or the network failed): {first}. Checkpoints are written atomically by rank 0 after "
        f"each epoch, so {run}/weights/last.state.safetensors holds the last finished epoch: start the same "
        f"torchrun command on every node with `--resume {run}` to continue."
    )


def init_distributed(device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU) once, if running distributed."""
    if not is_dist() or torch.distributed.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # rank 0 validates and saves while the others wait in the next all-reduce: allow hours
    torch.distributed.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo", timeout=dist_timeout()
    )


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. "stop training"), so all ranks act together."""
    if not is_dist():
        return flag
    box = [bool(flag)]
    torch.distributed.broadcast_object_list(box, src=0)
    return bool(box[0])


def all_finite(loss: torch.Tensor) -> bool:
    """True when ``loss`` is finite on every rank (one rank's NaN stops all of them)."""
    finite = torch.isfinite(loss).all().to(torch.int32)
    if is_dist():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite)
