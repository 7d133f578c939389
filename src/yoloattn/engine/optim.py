"""Optimizer parameter groups, learning-rate schedules and warmup, as the official recipes.

Three parameter groups (YOLOv5/YOLOv7 recipe): biases (no weight decay), normalisation weights
and implicit-layer parameters (no weight decay), all other weights (decay). Each group carries
a ``"name"`` so warmup can treat the bias group specially, whatever its position.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

__all__ = ["build_optimizer", "lr_lambda", "warmup_step", "param_groups"]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split trainable parameters into ``bias``, ``no_decay`` and ``decay`` groups."""
    groups: dict[str, list[nn.Parameter]] = {"bias": [], "no_decay": [], "decay": []}
    seen: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if pname == "bias":
                groups["bias"].append(p)
            elif isinstance(module, _NORM_TYPES) or type(module).__name__ in ("ImplicitA", "ImplicitM"):
                groups["no_decay"].append(p)
            else:  # every other weight decays, as officially, attention gates/scales (alpha, gamma) too
                groups["decay"].append(p)
    return groups


def build_optimizer(
    model: nn.Module,
    name: str = "SGD",
    lr: float = 0.01,
    momentum: float = 0.937,
    weight_decay: float = 5e-4,
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (default) or AdamW/Adam, with the recipe's three groups.

    The bias group is group 0 (YOLOv5 order); warmup finds it by its ``name``.
    """
    g = param_groups(model)
    key = name.lower()
    if key == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(g["bias"], lr=lr, momentum=momentum, nesterov=True)
    elif key == "adamw":
        opt = torch.optim.AdamW(g["bias"], lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    elif key == "adam":
        opt = torch.optim.Adam(g["bias"], lr=lr, betas=(momentum, 0.999))
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose SGD, AdamW or Adam")
    opt.param_groups[0]["name"] = "bias"
    opt.param_groups[0]["weight_decay"] = 0.0
    opt.add_param_group({"params": g["decay"], "weight_decay": weight_decay, "name": "decay"})
    opt.add_param_group({"params": g["no_decay"], "weight_decay": 0.0, "name": "no_decay"})
    return opt


def lr_lambda(schedule: str, epochs: int, lrf: float, family: str = "v5") -> Callable[[float], float]:
    """Per-epoch learning-rate factor.

    ``linear``: ``(1 - e/epochs)(1 - lrf) + lrf`` (YOLOv5 default); YOLOv7's ``--linear-lr`` is
    ``(1 - e/(epochs - 1))(1 - lrf) + lrf`` (``family="v7"``, it reaches ``lrf`` at the last epoch);
    ``cos``: one-cycle cosine ``((1 - cos(e*pi/epochs))/2)(lrf - 1) + 1`` (YOLOv7 default).
    """
    if family not in ("v5", "v7"):
        raise ValueError(f"unknown model family {family!r}; expected 'v5' or 'v7'")
    if schedule == "linear":
        span = max(epochs - 1, 1) if family == "v7" else epochs
        return lambda e: (1 - e / span) * (1.0 - lrf) + lrf
    if schedule in ("cos", "cosine"):
        return lambda e: ((1 - math.cos(e * math.pi / epochs)) / 2) * (lrf - 1) + 1
    raise ValueError(f"unknown lr schedule {schedule!r}; choose 'linear' or 'cos'")


def warmup_step(
    optimizer: torch.optim.Optimizer,
    ni: int,
    nw: int,
    epoch: int,
    lf: Callable[[float], float],
    hyp: dict,
    nbs: int,
    batch_size: int,
) -> int:
    """Apply warmup at global iteration ``ni`` of ``nw``; returns the accumulation count.

    Over the warmup window the bias lr falls from ``warmup_bias_lr`` to ``lr0*lf(epoch)``,
    other groups rise from 0, momentum rises from ``warmup_momentum`` to ``momentum`` and
    accumulation ramps from 1 to ``nbs / batch_size``.
    """
    xi = [0, nw]
    accumulate = max(1, int(np.interp(ni, xi, [1, nbs / batch_size]).round()))
    for group in optimizer.param_groups:
        start = hyp["warmup_bias_lr"] if group.get("name") == "bias" else 0.0
        group["lr"] = float(np.interp(ni, xi, [start, group["initial_lr"] * lf(epoch)]))
        if "momentum" in group:
            group["momentum"] = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
    return accumulate
