"""A training run's parts, built from its :class:`~yoloattn.engine.train_config.TrainConfig`.

Each function builds one part: the dataset config, the model (attention placed, paired
initialisation, initial weights, frozen rows), the hyperparameters, the datasets and loaders,
the optimizer with its schedule, the losses and the DDP wrapper. :meth:`Trainer.setup
<yoloattn.engine.trainer.Trainer.setup>` calls them in a fixed order: the order in which
they draw from the global random generators is part of the exact-resume contract.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from yoloattn.engine.distributed import is_dist, seed_everything
from yoloattn.engine.ema import unwrap
from yoloattn.engine.optim import build_optimizer, lr_lambda
from yoloattn.engine.train_config import TrainConfig, _ranges, freeze_rows

if TYPE_CHECKING:
    from yoloattn.models import Model

__all__ = [
    "Optimization",
    "build_losses",
    "build_optimization",
    "build_run_model",
    "build_train_set",
    "build_train_loader",
    "build_val_loader",
    "check_image_options",
    "check_run_anchors",
    "freeze_model",
    "load_data",
    "load_initial_weights",
    "model_configs",
    "resolve_epochs",
    "resolve_hyp",
    "resolve_threads",
    "wrap_distributed",
    "warmup_new_fixed",
    "log_insertion",
]

LOGGER = logging.getLogger("yoloattn.train")


def load_data(cfg: TrainConfig) -> tuple[Any, int]:
    """The dataset config (one class under ``--single-cls``) and the class count labels are
    checked against (the dataset's own, also under ``--single-cls``)."""
    from yoloattn.data import load_dataset_config

    if not cfg.data:
        raise ValueError("no dataset given: pass --data path/to/data.yaml")
    data = load_dataset_config(cfg.data)
    scan_nc = data.nc
    if cfg.single_cls:
        data = data.as_single_class()
    return data, scan_nc


def model_configs(
    cfg: TrainConfig, saved: Path | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[int, int] | None]:
    """``(base config, config to build, placement index map)``.

    ``saved`` is the ``model.yaml`` of a resumed run: the architecture actually trained
    (attention rows placed, anchors evolved by AutoAnchor). Otherwise ``--attention`` is placed
    into the base config and the index map pairs base rows with the new ones.
    """
    from yoloattn.models import load_config
    from yoloattn.models.placement import expand_config

    if saved is not None and saved.is_file():
        return load_config(cfg.model), load_config(str(saved)), None
    placed = expand_config(
        cfg.model, cfg.attention or None, gate=cfg.gate, allow_unused_rows=cfg.allow_unused_rows
    )
    placed.cfg = _with_insert(placed.cfg, cfg)
    return placed.base, placed.cfg, placed.index_map


def _with_insert(model_cfg: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    """Resolve the insertion mode: ``--insert identity|plain`` wins; with ``auto`` a config's own
    ``identity``/``plain`` stays, else ``identity`` when weights are transferred, ``plain`` otherwise."""
    from yoloattn.models.placement import resolve_insert, set_insert

    own = model_cfg.get("insert")
    mode = cfg.insert if cfg.insert != "auto" or own in (None, "auto") else own
    return set_insert(model_cfg, resolve_insert(mode, transferred=bool(cfg.weights)))


def resolve_threads(threads: int | None, workers: int, world: int = 1) -> int:
    """Torch threads for one training process, so that threads plus dataloader workers do not
    oversubscribe the CPUs: ``threads`` when given, else ``$OMP_NUM_THREADS`` when set, else
    ``max(1, CPUs per process // (1 + workers))`` (each worker process runs 1 thread, see
    :func:`yoloattn.data.loader.seed_worker`)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(world, 1) // (1 + max(workers, 0)))


def resolve_epochs(cfg: TrainConfig, family: str) -> int:
    """Fill in the official default epochs (300 for YOLOv7, 100 for YOLOv5), check and return them."""
    if cfg.epochs is None:
        cfg.epochs = 300 if family == "v7" else 100
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {cfg.epochs}")
    return cfg.epochs


def build_run_model(
    cfg: TrainConfig,
    base_cfg: dict[str, Any],
    model_cfg: dict[str, Any],
    index_map: dict[int, int] | None,
    nc: int,
    names: list[str],
    *,
    seed: int,
    paired_init: bool,
) -> Model:
    """Build the model; with ``paired_init`` (attention placed, training from scratch) the rows
    shared with the baseline start from the baseline's initialisation for this seed, so variant
    and baseline runs are paired by seed."""
    from yoloattn.models import build_model

    model = build_model(model_cfg, nc=nc)
    if paired_init and index_map is not None:
        from yoloattn.models.weights import transfer_weights

        seed_everything(seed, cfg.deterministic)
        base = build_model(base_cfg, nc=nc)
        transfer_weights(base.state_dict(), model, index_map)
        del base
    model.names = list(names)
    return model


def resolve_hyp(cfg: TrainConfig, model: Model, nc: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(hyp, hyp as read)``: the recipe (``--hyp`` or the model's) with ``--set`` overrides,
    its loss gains scaled to the detection layers, classes and image size, as officially."""
    from yoloattn.engine.hyp import default_hyp_for, load_hyp

    hyp = load_hyp(
        cfg.hyp or default_hyp_for(cfg.model if isinstance(cfg.model, str) else "yolov5s"),
        cfg.hyp_overrides,
    )
    hyp_file = dict(hyp)
    nl = model.detect.nl
    hyp["box"] *= 3 / nl
    hyp["cls"] *= nc / 80 * 3 / nl
    hyp["obj"] *= (cfg.imgsz / 640) ** 2 * 3 / nl
    hyp["label_smoothing"] = cfg.label_smoothing or hyp.get("label_smoothing", 0.0)
    return hyp, hyp_file


def load_initial_weights(model: Model, weights: str, index_map: dict[int, int] | None) -> Any:
    """Copy ``--weights`` into ``model`` (rows paired through the placement); returns the report."""
    from yoloattn.models.weights import load_state_for_transfer, transfer_weights

    src_state, src_meta = load_state_for_transfer(weights)
    if isinstance(src_meta.get("cfg"), dict):
        # the source architecture is known: pair its rows with ours (handles sources that
        # already carry attention rows, and plain base -> placed transfers alike)
        from yoloattn.models.placement import row_map

        index_map = row_map(src_meta["cfg"], model.yaml)
    report = transfer_weights(src_state, model, index_map)
    LOGGER.info("weights: %s from %s", report.summary(), weights)
    return report


def freeze_model(
    model: Model, freeze: list[int], index_map: dict[int, int] | None, saved_rows: list[int] | None
) -> list[int]:
    """Stop the gradients of the ``--freeze`` rows; returns the rows frozen.

    ``saved_rows`` (a resumed run) are the rows resolved when the run started. ``--freeze N``
    with attention placed means the first N rows of the base model, wherever placement moved
    them; inserted attention rows are never frozen.
    """
    if saved_rows is not None:
        frozen = [int(i) for i in saved_rows]
    elif len(freeze) == 1 and index_map is not None:
        frozen = sorted(index_map[i] for i in freeze_rows(freeze, len(index_map)))
    else:
        frozen = freeze_rows(freeze, len(model.model))
    for n, p in model.named_parameters():
        if any(n.startswith(f"model.{i}.") for i in frozen):
            p.requires_grad_(False)
    if frozen:
        LOGGER.info(
            "freeze: rows %s (%d tensors)",
            _ranges(frozen),
            sum(not p.requires_grad for p in model.parameters()),
        )
    return frozen


def check_image_options(cfg: TrainConfig, gs: int) -> None:
    """Check ``--imgsz`` against the model's max stride ``gs`` and the ``--cache`` kind."""
    if cfg.imgsz % gs:
        raise ValueError(f"--imgsz {cfg.imgsz} must be a multiple of the max stride {gs}")
    if cfg.cache not in (None, "", "ram"):
        raise ValueError(f"--cache {cfg.cache!r}: the only image cache is 'ram'")


def build_train_set(cfg: TrainConfig, data: Any, hyp: dict[str, Any], gs: int, scan_nc: int) -> Any:
    """The augmented training set."""
    from yoloattn.data import YoloDataset

    return YoloDataset(
        data.train,
        imgsz=cfg.imgsz,
        augment=True,
        hyp=hyp,
        rect=cfg.rect,
        batch_size=cfg.batch,
        stride=gs,
        seed=cfg.seed,
        cache_dir=cfg.cache_dir,
        prefix="train: ",
        nc=scan_nc,
        cache_images=cfg.cache == "ram",
        single_cls=cfg.single_cls,
    )


def check_run_anchors(cfg: TrainConfig, train_set: Any, model: Model, hyp: dict[str, Any]) -> Any:
    """AutoAnchor: check the anchors against the labels, evolve them if needed; returns the report.

    Every rank computes the same anchors (seeded), so DDP replicas agree without a broadcast.
    When anchors are replaced, ``model.yaml`` (and so the run's ``model.yaml`` and the weight
    sidecars) records the anchors used.
    """
    from yoloattn.engine.autoanchor import check_anchors

    report = check_anchors(train_set, model, thr=hyp["anchor_t"], imgsz=cfg.imgsz, seed=cfg.seed)
    if report.replaced and isinstance(model.yaml.get("anchors"), list):
        model.yaml = {**model.yaml, "anchors": report.anchors_px}
    return report


def build_train_loader(cfg: TrainConfig, train_set: Any, rank: int, world: int) -> Any:
    from yoloattn.data import build_dataloader

    return build_dataloader(
        train_set,
        cfg.batch,
        shuffle=not cfg.rect,
        workers=cfg.workers,
        seed=cfg.seed,
        rank=rank if is_dist() else -1,
        world_size=world,
    )


def build_val_loader(cfg: TrainConfig, data: Any, gs: int, scan_nc: int) -> tuple[Any, Any]:
    """``(val set, val loader)``: the validation protocol of ``yoloattn val`` and ``compare``
    (:func:`yoloattn.engine.protocol.protocol_loader`, ``per-image``), at most twice
    ``--batch`` images per batch, no augmentation."""
    from yoloattn.engine.protocol import DEFAULT_PROTOCOL, protocol_loader

    return protocol_loader(
        data.val,
        cfg.imgsz,
        cfg.batch * 2,
        gs,
        DEFAULT_PROTOCOL,
        workers=cfg.workers,
        seed=cfg.seed,
        cache_dir=cfg.cache_dir,
        nc=scan_nc,
        single_cls=cfg.single_cls,
        cache_images=cfg.cache == "ram",
    )


@dataclass
class Optimization:
    """The optimizer and what drives it."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    lf: Any  # epoch -> learning-rate factor
    accumulate: int  # batches per optimizer step (gradients accumulate to --nbs)
    clip_grad: float  # max gradient norm, 0 = off


def build_optimization(
    cfg: TrainConfig, model: nn.Module, hyp: dict[str, Any], family: str, world: int
) -> Optimization:
    """Optimizer (weight decay scaled to the nominal batch), LR schedule and gradient clipping."""
    assert cfg.epochs is not None, "resolve_epochs first"
    total_batch = cfg.batch * world  # --batch is per process
    accumulate = max(round(cfg.nbs / total_batch), 1)
    wd = hyp["weight_decay"] * total_batch * accumulate / cfg.nbs
    optimizer = build_optimizer(
        model,
        cfg.optimizer,
        hyp["lr0"],
        hyp["momentum"],
        wd,
        gate_lr_mult=cfg.gate_lr_mult,
        new_lr_mult=cfg.new_lr_mult,
    )
    sched = cfg.lr_schedule or ("cos" if family == "v7" else "linear")
    lf = lr_lambda(sched, cfg.epochs, hyp["lrf"], family)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    # YOLOv5 clips the gradient norm at 10 before every step; YOLOv7 does not clip
    if cfg.clip_grad is not None and cfg.clip_grad < 0:
        raise ValueError(f"--clip-grad must be >= 0 (0 turns clipping off), got {cfg.clip_grad}")
    clip = cfg.clip_grad if cfg.clip_grad is not None else (10.0 if family == "v5" else 0.0)
    return Optimization(optimizer, scheduler, lf, accumulate, float(clip))


def wrap_distributed(model: nn.Module, sync_bn: bool, device: torch.device) -> nn.Module:
    """Under ``torchrun``: DistributedDataParallel (SyncBatchNorm first with ``--sync-bn``)."""
    if not is_dist():
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp_kw: dict[str, Any] = {"device_ids": [device.index]} if device.type == "cuda" else {}
    return nn.parallel.DistributedDataParallel(model, **ddp_kw)


def build_losses(model: nn.Module, hyp: dict[str, Any]) -> tuple[Any, bool, Any]:
    """``(training loss, whether it needs the images, validation loss)``.

    The YOLOv7 recipes set ``loss_ota: 1`` (``--set loss_ota=0`` turns it off); validation
    losses always use the plain YOLO loss, as officially.
    """
    from yoloattn.engine.loss import ComputeLoss

    bare = unwrap(model)
    if int(hyp.get("loss_ota", 0)) == 1:
        from yoloattn.engine.loss_ota import ComputeLossOTA

        loss_fn: Any = ComputeLossOTA(bare, hyp)
        needs_imgs = True
    else:
        loss_fn = ComputeLoss(bare, hyp)
        needs_imgs = False
    return loss_fn, needs_imgs, ComputeLoss(bare, hyp)


def warmup_new_fixed(model: nn.Module, warmup_new: int) -> list[nn.Parameter]:
    """The parameters that ``--warmup-new N`` keeps fixed for N epochs: all but the inserted
    attention rows (with their gates) and the Detect head. Their gradients are dropped before each
    optimizer step, so neither the weights nor the optimizer's momentum move."""
    if warmup_new < 0:
        raise ValueError(f"--warmup-new must be >= 0, got {warmup_new}")
    if warmup_new == 0:
        return []
    from yoloattn.engine.engagement import attention_layers

    bare = unwrap(model)
    free = {id(p) for layer in attention_layers(bare).values() for p in layer.parameters()}
    free.update(id(p) for p in bare.model[-1].parameters())  # type: ignore[index,union-attr]
    if len(free) == len(list(bare.model[-1].parameters())):  # type: ignore[index,union-attr]
        LOGGER.warning(
            "--warmup-new %d: the model has no attention rows; only the head trains then", warmup_new
        )
    return [p for p in bare.parameters() if id(p) not in free and p.requires_grad]


def log_insertion(model: nn.Module, cfg: TrainConfig) -> None:
    """The run header's insertion line (attention rows only)."""
    from yoloattn.engine.engagement import attention_layers
    from yoloattn.models.placement import insert_mode
    from yoloattn.nn.gate import ResidualGate

    rows = attention_layers(model)
    if not rows:
        return
    gated = sum(isinstance(m, ResidualGate) for m in rows.values())
    mode = insert_mode(unwrap(model).yaml)  # type: ignore[arg-type]
    text = f"insertion: {mode} ({len(rows)} attention rows, {gated} gated"
    if gated:
        text += f", gate lr x{cfg.gate_lr_mult:g}"
    if cfg.new_lr_mult != 1:
        text += f", module lr x{cfg.new_lr_mult:g}"
    if cfg.warmup_new:
        text += f", warmup-new {cfg.warmup_new} epochs"
    LOGGER.info(text + ")")
