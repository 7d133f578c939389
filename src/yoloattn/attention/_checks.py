"""Shared construction checks and numerics helpers for attention modules."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["require_divisible", "require_at_least", "float32"]


def require_divisible(module: str, channels: int, divisor: int, what: str, hint: str) -> None:
    """Raise a ValueError naming the failed constraint and the hyperparameter to change.

    Example message: ``sa: channels=48 must be divisible by 2*groups=64; pass groups=8``.
    """
    if divisor < 1 or channels % divisor != 0:
        raise ValueError(f"{module}: channels={channels} must be divisible by {what}={divisor}; {hint}")


def require_at_least(module: str, name: str, value: int, minimum: int, hint: str) -> None:
    if value < minimum:
        raise ValueError(f"{module}: {name}={value} must be >= {minimum}; {hint}")


def float32(x: Tensor) -> Tensor:
    """Upcast half/bfloat16 tensors to float32 for statistics (keeps float64 as is)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
