"""Devices, seeding and the few collective operations the trainer needs under ``torchrun``.

Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) every helper is a no-op, so the same training
code runs on one CPU, one GPU or many GPUs.
"""

from __future__ import annotations

import os
import random
from datetime import timedelta

import numpy as np
import torch

__all__ = [
    "all_finite",
    "broadcast_flag",
    "init_distributed",
    "is_dist",
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
    return int(os.environ.get("RANK", 0))


def init_distributed(device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU) once, if running distributed."""
    if not is_dist() or torch.distributed.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # rank 0 validates and saves while the others wait in the next all-reduce: allow hours
    torch.distributed.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=3)
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
