"""Helpers shared by the attention families, each defined once.

Rules every module of the zoo follows (spec ``attention-zoo.md`` section 5), and the helpers
that implement them:

* Construction checks name the failed constraint and the hyperparameter to change
  (:func:`require_divisible`, :func:`require_at_least`, :func:`require_odd`,
  :func:`reduced_width`, :func:`require_spatial_min`).
* Statistics, attention logits and softmaxes run in (at least) float32, with autocast disabled
  where a matmul is involved, and are cast back to the input dtype; float64 stays float64
  (:func:`float32`, :func:`no_autocast`, :func:`softmax32`, :func:`gap`).
* A BatchNorm that sees pooled ``1 x 1`` statistics cannot compute batch statistics from one
  value per channel; :class:`GuardedBatchNorm2d` / :class:`GuardedBatchNorm1d` then normalise
  with their running statistics (spec rule 5.3), so the batch-1 stride probe of YOLOv5/v7 on a
  freshly built train-mode model works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "GuardedBatchNorm1d",
    "GuardedBatchNorm2d",
    "channel_shuffle",
    "float32",
    "gap",
    "largest_divisor",
    "no_autocast",
    "reduced_width",
    "require_at_least",
    "require_divisible",
    "require_odd",
    "require_spatial_min",
    "softmax32",
]


# --------------------------------------------------------------------------------------------
# construction checks
# --------------------------------------------------------------------------------------------


def require_divisible(module: str, channels: int, divisor: int, what: str, hint: str) -> None:
    """Raise a ValueError naming the failed constraint and the hyperparameter to change.

    Example message: ``sa: channels=48 must be divisible by 2*groups=64; pass groups=8``.
    """
    if divisor < 1 or channels % divisor != 0:
        raise ValueError(f"{module}: channels={channels} must be divisible by {what}={divisor}; {hint}")


def require_at_least(module: str, name: str, value: int, minimum: int, hint: str) -> None:
    if value < minimum:
        raise ValueError(f"{module}: {name}={value} must be >= {minimum}; {hint}")


def require_odd(module: str, name: str, value: int) -> None:
    """Reject kernel sizes that are not positive and odd ('same' padding needs an odd kernel)."""
    if value < 1 or value % 2 == 0:
        raise ValueError(
            f"{module}: {name}={value} must be a positive odd number so the output keeps "
            f"the input size; pass e.g. {name}={value + 1 if value > 0 else 3}"
        )


def reduced_width(module: str, channels: int, reduction: int, name: str = "reduction") -> int:
    """Hidden width ``channels // reduction`` (floor), checked to be at least 1."""
    require_at_least(module, name, reduction, 1, f"pass {name}>=1")
    hidden = channels // reduction
    require_at_least(
        module,
        f"channels//{name}",
        hidden,
        1,
        f"pass {name}<={channels} for channels={channels}",
    )
    return hidden


def require_spatial_min(module: str, x: Tensor, minimum: int = 2) -> None:
    """Reject feature maps with fewer than ``minimum`` positions (outside tracing)."""
    if not torch.jit.is_tracing():
        hw = int(x.shape[2]) * int(x.shape[3])
        if hw < minimum:
            raise ValueError(
                f"{module}: needs H*W >= {minimum} spatial positions for its per-channel "
                f"statistics, got input of size {tuple(x.shape[2:])}; place it on a larger map"
            )


def largest_divisor(n: int, at_most: int) -> int:
    """Largest divisor of ``n`` that is ``<= at_most`` (at least 1); used in error hints."""
    for d in range(min(n, at_most), 0, -1):
        if n % d == 0:
            return d
    return 1


# --------------------------------------------------------------------------------------------
# numerics
# --------------------------------------------------------------------------------------------


def float32(x: Tensor) -> Tensor:
    """Upcast half/bfloat16 tensors to float32 for statistics (keeps float64 as is)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def no_autocast(x: Tensor) -> torch.autocast:
    """Context that disables autocast on ``x``'s device (for float32 attention logits)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def softmax32(logits: Tensor, dim: int, dtype: torch.dtype, scale: float = 1.0) -> Tensor:
    """``softmax(logits * scale)`` computed in (at least) float32, cast to ``dtype`` afterwards."""
    with no_autocast(logits):
        z = float32(logits)
        if scale != 1.0:
            z = z * scale
        return z.softmax(dim).to(dtype)


def gap(x: Tensor) -> Tensor:
    """Global average pool over (H, W) in float32, cast back to ``x.dtype`` (B x C x 1 x 1)."""
    return float32(x).mean((2, 3), keepdim=True).to(x.dtype)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle: (B, g*k, H, W) -> interleave the ``groups`` blocks."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


# --------------------------------------------------------------------------------------------
# BatchNorm on pooled statistics
# --------------------------------------------------------------------------------------------


class _BatchOneGuard(_BatchNorm):
    """BatchNorm that tolerates one value per channel in training mode (spec rule 5.3).

    PyTorch's BatchNorm raises "Expected more than 1 value per channel when training" when a
    batch-1 input carries a single value per channel (pooled ``1 x 1`` statistics). In that
    case this layer normalises with its running statistics (as in eval mode) and does not
    update them; affine parameters still receive gradients. Otherwise it is plain BatchNorm
    (same state_dict).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.numel() <= x.shape[1]:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class GuardedBatchNorm1d(_BatchOneGuard, nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` that accepts batch 1 in training mode (rule 5.3)."""


class GuardedBatchNorm2d(_BatchOneGuard, nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` that accepts one value per channel in training mode (rule 5.3)."""
