"""Optimizer parameter groups, learning-rate schedules and warmup, as the official recipes.

Three parameter groups (YOLOv5/YOLOv7 recipe): biases (no weight decay), normalisation weights
and implicit-layer parameters (no weight decay), all other weights (decay). Each group carries
a ``"name"`` so warmup can treat the bias group specially, whatever its position.

Inserted attention rows add groups after those three (so ``x/lr0..2`` keep their meaning):
``gate`` (the zero-initialised insertion gates: no weight decay, ``lr * gate_lr_mult``) and, when
``new_lr_mult != 1``, ``new_bias``/``new_decay``/``new_no_decay`` for the inserted modules' own
parameters at ``lr * new_lr_mult``. With no gates and ``new_lr_mult == 1`` the optimizer is
exactly the official one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from yoloattn.nn.gate import ResidualGate

__all__ = ["build_optimizer", "lr_lambda", "warmup_step", "param_groups", "new_parameters"]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def new_parameters(model: nn.Module) -> tuple[set[int], set[int]]:
    """``(ids of insertion-gate parameters, ids of the inserted attention modules' parameters)``."""
    from yoloattn.engine.engagement import attention_layers

    gates: set[int] = set()
    new: set[int] = set()
    for layer in attention_layers(model).values():
        if isinstance(layer, ResidualGate):
            gates.add(id(layer.gate))
        new.update(id(p) for p in layer.parameters() if id(p) not in gates)
    return gates, new


def param_groups(model: nn.Module, split_new: bool = False) -> dict[str, list[nn.Parameter]]:
    """Split trainable parameters into ``bias``, ``no_decay`` and ``decay`` groups.

    Insertion gates always go to a ``gate`` group; with ``split_new`` the inserted attention
    modules' parameters go to ``new_bias``/``new_no_decay``/``new_decay`` instead of the base groups.
    """
    groups: dict[str, list[nn.Parameter]] = {"bias": [], "no_decay": [], "decay": [], "gate": []}
    groups.update({"new_bias": [], "new_no_decay": [], "new_decay": []})
    gate_ids, new_ids = new_parameters(model)
    seen: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if id(p) in gate_ids:
                groups["gate"].append(p)
                continue
            prefix = "new_" if split_new and id(p) in new_ids else ""
            if pname == "bias":
                groups[prefix + "bias"].append(p)
            elif isinstance(module, _NORM_TYPES) or type(module).__name__ in ("ImplicitA", "ImplicitM"):
                groups[prefix + "no_decay"].append(p)
            else:  # every other weight decays, as officially, attention gates/scales (alpha, gamma) too
                groups[prefix + "decay"].append(p)
    return groups


def build_optimizer(
    model: nn.Module,
    name: str = "SGD",
    lr: float = 0.01,
    momentum: float = 0.937,
    weight_decay: float = 5e-4,
    gate_lr_mult: float = 1.0,
    new_lr_mult: float = 1.0,
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (default) or AdamW/Adam, with the recipe's three groups.

    The bias group is group 0 (YOLOv5 order); warmup finds it by its ``name``. Insertion gates
    and (with ``new_lr_mult != 1``) inserted modules get their own groups (module docstring);
    every group's ``lr_mult`` records its multiplier.
    """
    g = param_groups(model, split_new=new_lr_mult != 1.0)
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
    for group in opt.param_groups:
        group["lr_mult"] = 1.0
    extra = [
        ("gate", gate_lr_mult, 0.0),
        ("new_bias", new_lr_mult, 0.0),
        ("new_decay", new_lr_mult, weight_decay),
        ("new_no_decay", new_lr_mult, 0.0),
    ]
    for name_, mult, decay in extra:
        if g[name_]:
            opt.add_param_group(
                {"params": g[name_], "lr": lr * mult, "weight_decay": decay, "name": name_, "lr_mult": mult}
            )
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
