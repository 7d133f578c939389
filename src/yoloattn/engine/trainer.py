"""The training loop: official YOLOv5/YOLOv7 recipes on 1 CPU, 1 GPU or many GPUs (torchrun).

``train(TrainConfig(...))`` runs one training and writes one run folder::

    runs/train/<name>/
        args.yaml            every resolved option (model, data, hyperparameters, ...)
        model.yaml           the resolved architecture (attention rows included)
        results.csv          one row per epoch: losses, P, R, mAP50, mAP50-95, learning rates
        results.png          the same as plots
        weights/last.safetensors, last.json   EMA weights + sidecar (load with load_model)
        weights/best.safetensors, best.json   best epoch by fitness 0.1*mAP50 + 0.9*mAP50-95
        weights/last.state.safetensors        everything an exact resume needs (no pickle)

Under ``torchrun`` the same code runs DistributedDataParallel; rank 0 logs and writes files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from yoloattn.engine.checkpoint import (
    load_training_state,
    restore_optimizer,
    restore_rng,
    save_training_state,
    split_prefix,
)
from yoloattn.engine.distributed import (
    all_finite,
    broadcast_flag,
    init_distributed,
    is_dist,
    rank,
    seed_everything,
    select_device,
)
from yoloattn.engine.ema import ModelEMA, unwrap
from yoloattn.engine.optim import build_optimizer, lr_lambda, warmup_step
from yoloattn.engine.runs import (
    RESULT_COLUMNS,
    increment_path,
    truncate_results,
    write_atomic,
    write_results_row,
)
from yoloattn.engine.train_config import (
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    _ranges,
    fitness,
    freeze_rows,
    model_family,
)

LOGGER = logging.getLogger("yoloattn.train")

# the names below are re-exported: they lived here before the split into train_config/runs/distributed
__all__ = [
    "RESULT_COLUMNS",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "fitness",
    "freeze_rows",
    "increment_path",
    "select_device",
    "train",
]


class Trainer:
    """One training run. Use :func:`train` for the common case."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = dataclasses.replace(cfg)  # setup() resolves defaults into it; the caller's stays as given
        self.resume_state: tuple[dict, dict] | None = None
        if cfg.resume:
            self._load_resume_args()
        self.rank = rank()
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.device = select_device(self.cfg.device)
        init_distributed(self.device)
        self.main = self.rank == 0

    # ----------------------------------------------------------------- setup
    def _load_resume_args(self) -> None:
        run = Path(self.cfg.resume)
        state_file = run / "weights" / "last.state.safetensors" if run.is_dir() else run
        run_dir = state_file.parent.parent
        args_file = run_dir / "args.yaml"
        if not args_file.is_file():
            raise FileNotFoundError(f"cannot resume: {args_file} not found (is {run} a run folder?)")
        saved = yaml.safe_load(args_file.read_text())
        keep = {
            "stop_after_epochs": self.cfg.stop_after_epochs,
            "quiet": self.cfg.quiet,
            "device": self.cfg.device or saved.get("device", ""),
            "workers": self.cfg.workers,
        }
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        self.cfg = TrainConfig(**{k: v for k, v in saved.items() if k in names})
        self.cfg.__dict__.update(keep)
        self.cfg.resume = str(state_file)
        self.run_dir = run_dir
        if not state_file.is_file():
            raise FileNotFoundError(
                f"cannot resume {run_dir}: it has no checkpoint ({state_file} is missing), so it stopped "
                "before its first epoch finished; start the training again with the same command"
            )
        self.resume_state = load_training_state(state_file)

    def setup(self) -> None:
        from yoloattn.data import YoloDataset, build_dataloader, load_dataset_config
        from yoloattn.engine.hyp import default_hyp_for, load_hyp
        from yoloattn.models.detector import build_model
        from yoloattn.models.parse import load_config

        cfg = self.cfg
        if not cfg.data:
            raise ValueError("no dataset given: pass --data path/to/data.yaml")
        seed_everything(cfg.seed + self.rank, cfg.deterministic)
        self.data = load_dataset_config(cfg.data)
        self.scan_nc = self.data.nc  # label class ids are checked against the dataset's classes
        if cfg.single_cls:
            self.data = self.data.as_single_class()

        base_cfg = load_config(cfg.model)
        self.index_map: dict[int, int] | None = None
        model_cfg = base_cfg
        saved_cfg = getattr(self, "run_dir", None) and self.run_dir / "model.yaml"
        if self.resume_state and saved_cfg and saved_cfg.is_file():
            # the architecture actually trained (attention rows placed, anchors evolved by AutoAnchor)
            model_cfg = load_config(str(saved_cfg))
        elif cfg.attention:
            from yoloattn.models.placement import place_attention

            model_cfg, self.index_map = place_attention(base_cfg, cfg.attention)
        self.family = model_family(model_cfg)
        if cfg.epochs is None:
            cfg.epochs = 300 if self.family == "v7" else 100
        if cfg.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {cfg.epochs}")
        model = build_model(model_cfg, nc=self.data.nc)
        if self.index_map is not None and not cfg.weights and not self.resume_state:
            # From scratch, the layers shared with the baseline start from the baseline's
            # initialisation for this seed, so variant and baseline runs are paired by seed.
            from yoloattn.models.weights import transfer_weights

            seed_everything(cfg.seed + self.rank, cfg.deterministic)
            base = build_model(base_cfg, nc=self.data.nc)
            transfer_weights(base.state_dict(), model, self.index_map)
            del base
        model.names = list(self.data.names)

        hyp = load_hyp(
            cfg.hyp or default_hyp_for(cfg.model if isinstance(cfg.model, str) else "yolov5s"),
            cfg.hyp_overrides,
        )
        self.hyp_file = dict(hyp)
        det = model.detect
        nl = det.nl
        hyp["box"] *= 3 / nl
        hyp["cls"] *= self.data.nc / 80 * 3 / nl
        hyp["obj"] *= (cfg.imgsz / 640) ** 2 * 3 / nl
        hyp["label_smoothing"] = cfg.label_smoothing or hyp.get("label_smoothing", 0.0)
        self.hyp = hyp

        if cfg.weights and not self.resume_state:
            self._load_weights(model)

        saved_rows = self.resume_state[1].get("extra", {}).get("frozen_rows") if self.resume_state else None
        if saved_rows is not None:  # resume: the rows resolved when the run started
            frozen = [int(i) for i in saved_rows]
        elif len(cfg.freeze) == 1 and self.index_map is not None:
            # --freeze N with attention placed: the first N rows of the base model, wherever
            # placement moved them; inserted attention rows are never frozen
            frozen = sorted(self.index_map[i] for i in freeze_rows(cfg.freeze, len(self.index_map)))
        else:
            frozen = freeze_rows(cfg.freeze, len(model.model))
        self.frozen_rows = frozen
        for n, p in model.named_parameters():
            if any(n.startswith(f"model.{i}.") for i in frozen):
                p.requires_grad_(False)
        if frozen:
            LOGGER.info(
                "freeze: rows %s (%d tensors)",
                _ranges(frozen),
                sum(not p.requires_grad for p in model.parameters()),
            )

        model.to(self.device)
        self.model_cfg = model.yaml
        self.gs = max(int(model.stride.max()), 32)
        if cfg.imgsz % self.gs:
            raise ValueError(f"--imgsz {cfg.imgsz} must be a multiple of the max stride {self.gs}")
        if cfg.cache not in (None, "", "ram"):
            raise ValueError(f"--cache {cfg.cache!r}: the only image cache is 'ram'")
        cache_images = cfg.cache == "ram"

        # data
        self.train_set = YoloDataset(
            self.data.train,
            imgsz=cfg.imgsz,
            augment=True,
            hyp=hyp,
            rect=cfg.rect,
            batch_size=cfg.batch,
            stride=self.gs,
            seed=cfg.seed,
            cache_dir=cfg.cache_dir,
            prefix="train: ",
            nc=self.scan_nc,
            cache_images=cache_images,
            single_cls=cfg.single_cls,
        )
        self.anchor_report = None
        if cfg.autoanchor and not self.resume_state:
            # every rank computes the same anchors (seeded), so DDP replicas agree without a broadcast
            from yoloattn.engine.autoanchor import check_anchors

            self.anchor_report = check_anchors(
                self.train_set, model, thr=hyp["anchor_t"], imgsz=cfg.imgsz, seed=cfg.seed
            )
            if self.anchor_report.replaced and isinstance(model.yaml.get("anchors"), list):
                # model.yaml and the weight sidecars record the anchors used
                model.yaml = {**model.yaml, "anchors": self.anchor_report.anchors_px}
                self.model_cfg = model.yaml
        self.train_loader = build_dataloader(
            self.train_set,
            cfg.batch,
            shuffle=not cfg.rect,
            workers=cfg.workers,
            seed=cfg.seed,
            rank=self.rank if is_dist() else -1,
            world_size=self.world,
        )
        self.val_loader = None
        if self.main and self.data.val:
            self.val_set = YoloDataset(
                self.data.val,
                imgsz=cfg.imgsz,
                augment=False,
                hyp=None,  # no augmentation: the recipe does not apply (and warns only once, for train)
                rect=True,
                batch_size=cfg.batch * 2,
                stride=self.gs,
                pad=0.5,
                seed=cfg.seed,
                cache_dir=cfg.cache_dir,
                prefix="val: ",
                nc=self.scan_nc,
                cache_images=cache_images,
                single_cls=cfg.single_cls,
            )
            self.val_loader = build_dataloader(
                self.val_set, cfg.batch * 2, shuffle=False, workers=cfg.workers, seed=cfg.seed
            )

        # optimisation
        total_batch = cfg.batch * self.world  # --batch is per process
        self.accumulate = max(round(cfg.nbs / total_batch), 1)
        wd = hyp["weight_decay"] * total_batch * self.accumulate / cfg.nbs
        self.optimizer = build_optimizer(model, cfg.optimizer, hyp["lr0"], hyp["momentum"], wd)
        sched = cfg.lr_schedule or ("cos" if self.family == "v7" else "linear")
        self.lf = lr_lambda(sched, cfg.epochs, hyp["lrf"], self.family)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)
        self.ema = ModelEMA(model) if self.main else None
        # YOLOv5 clips the gradient norm at 10 before every step; YOLOv7 does not clip
        if cfg.clip_grad is not None and cfg.clip_grad < 0:
            raise ValueError(f"--clip-grad must be >= 0 (0 turns clipping off), got {cfg.clip_grad}")
        clip = cfg.clip_grad if cfg.clip_grad is not None else (10.0 if self.family == "v5" else 0.0)
        self.clip_grad = float(clip)
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.start_epoch = 0
        self.best_fitness = 0.0
        # global iteration of the last optimizer step; it carries across epochs (as officially),
        # so with accumulation the first step of an epoch comes `accumulate` batches after the last
        self.last_opt_step = -1
        self.bad_epochs = 0  # validations without improvement (--patience)
        self.resume_extra: dict[str, Any] = {}
        if self.resume_state:
            self._restore(model)

        if is_dist():
            if cfg.sync_bn:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ddp_kw = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            model = nn.parallel.DistributedDataParallel(model, **ddp_kw)
        self.model = model

        if int(hyp.get("loss_ota", 0)) == 1:  # set by the YOLOv7 recipes; --set loss_ota=0 turns it off
            from yoloattn.engine.loss_ota import ComputeLossOTA

            self.loss_fn = ComputeLossOTA(unwrap(model), hyp)
            self.loss_needs_imgs = True
        else:
            from yoloattn.engine.loss import ComputeLoss

            self.loss_fn = ComputeLoss(unwrap(model), hyp)
            self.loss_needs_imgs = False
        from yoloattn.engine.loss import ComputeLoss

        self.val_loss_fn = ComputeLoss(unwrap(model), hyp)

        if self.main:
            if not self.resume_state:
                self.run_dir = increment_path(Path(cfg.project) / cfg.name, cfg.exist_ok)
            else:  # rows of epochs that ran after the checkpoint (killed mid-save) are redone
                truncate_results(self.run_dir / "results.csv", self.start_epoch)
            self.wdir = self.run_dir / "weights"
            self.wdir.mkdir(parents=True, exist_ok=True)
            args = cfg.to_dict()
            args["hyp_resolved"] = self.hyp_file
            # atomic: under DDP the other ranks of a resumed run read these files while rank 0 writes
            write_atomic(self.run_dir / "args.yaml", yaml.safe_dump(args, sort_keys=False))
            write_atomic(self.run_dir / "model.yaml", yaml.safe_dump(self.model_cfg, sort_keys=False))

    def _load_weights(self, model: nn.Module) -> None:
        from yoloattn.models.weights import load_state_for_transfer, transfer_weights

        src_state, src_meta = load_state_for_transfer(self.cfg.weights)
        index_map = self.index_map
        if isinstance(src_meta.get("cfg"), dict):
            # the source architecture is known: pair its rows with ours (handles sources that
            # already carry attention rows, and plain base -> placed transfers alike)
            from yoloattn.models.placement import row_map

            index_map = row_map(src_meta["cfg"], model.yaml)
        report = transfer_weights(src_state, model, index_map)
        LOGGER.info("weights: %s from %s", report.summary(), self.cfg.weights)
        self.transfer_report = report

    def _restore(self, model: nn.Module) -> None:
        tensors, state = self.resume_state  # type: ignore[misc]
        model.load_state_dict(split_prefix(tensors, "model"), strict=True)
        if self.ema is not None:
            self.ema.ema.load_state_dict(split_prefix(tensors, "ema"), strict=True)
            self.ema.updates = state["ema_updates"]
        restore_optimizer(self.optimizer, tensors, state)
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.best_fitness = state["best_fitness"]
        self.resume_extra = dict(state.get("extra", {}))
        self.last_opt_step = int(self.resume_extra.get("last_opt_step", -1))
        self.bad_epochs = int(self.resume_extra.get("bad_epochs", 0))
        # the in-process loop has stepped the scheduler once per finished epoch (plus the step
        # LambdaLR takes at construction), so the next step must give lf(start_epoch + 1)
        self.scheduler.last_epoch = self.start_epoch
        self._rng_to_restore = (tensors, state["rng"])
        if self.start_epoch >= self.cfg.epochs:
            raise ValueError(
                f"run {self.run_dir} already finished all {self.cfg.epochs} epochs; nothing to resume"
            )

    # ----------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        self.setup()
        cfg = self.cfg
        nb = len(self.train_loader)
        warm = self.hyp.get("warmup_epochs", 3.0)
        nw = 0 if warm <= 0 else max(round(warm * nb), 1000 if self.family == "v7" else 100)
        if hasattr(self, "_rng_to_restore"):
            restore_rng(*self._rng_to_restore)
        metrics: dict[str, float] = dict(self.resume_extra.get("metrics", {}))
        epochs_done = self.start_epoch
        stopped_early = False  # by --patience (not by stop_after_epochs, which simulates a kill)
        for epoch in range(self.start_epoch, cfg.epochs):
            self.model.train()
            self.train_loader.set_epoch(epoch)  # shuffle order and augmentation depend on (seed, epoch)
            mloss = self._train_epoch(epoch, nb, nw)
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            self.scheduler.step()
            epochs_done = epoch + 1
            stop = False
            if self.main:
                final = epoch + 1 == cfg.epochs
                periodic = not cfg.noval and (epoch + 1) % cfg.val_interval == 0
                do_val = self.val_loader is not None and (periodic or final)
                vloss = torch.zeros(3)
                if do_val:
                    metrics, vloss = self._validate()
                fit = fitness(metrics) if do_val else -1.0
                improved = do_val and fit >= self.best_fitness  # ties count, as officially
                if improved:
                    self.best_fitness = fit
                if cfg.patience and do_val:
                    self.bad_epochs = 0 if improved else self.bad_epochs + 1
                    if self.bad_epochs >= cfg.patience:
                        LOGGER.info("early stop: no improvement for %d validations", self.bad_epochs)
                        stop = stopped_early = True
                self._write_results(epoch, mloss, metrics, vloss, lrs)
                self._save(epoch, improved or (self.val_loader is None), metrics)
            if cfg.stop_after_epochs is not None and epochs_done - self.start_epoch >= cfg.stop_after_epochs:
                stop = True
            if broadcast_flag(stop):  # rank 0 decides; every rank must leave the loop together
                break
        result = None
        if self.main:
            self._plot()
            if cfg.plots and (epochs_done == cfg.epochs or stopped_early):
                self._final_validation()
            result = TrainResult(
                self.run_dir,
                self.wdir / "best.safetensors",
                self.wdir / "last.safetensors",
                epochs_done,
                metrics,
                self.best_fitness,
            )
        if is_dist():
            torch.distributed.barrier()
        return result  # type: ignore[return-value]

    def _train_epoch(self, epoch: int, nb: int, nw: int) -> torch.Tensor:
        from tqdm import tqdm

        cfg = self.cfg
        mloss = torch.zeros(3)
        self.optimizer.zero_grad()
        accumulate = self.accumulate
        bar = tqdm(
            enumerate(self.train_loader),
            total=nb,
            disable=not self.main or cfg.quiet,
            bar_format="{l_bar}{bar:10}{r_bar}",
            leave=True,
        )
        for i, batch in bar:
            ni = i + nb * epoch
            imgs = batch[0].to(self.device, non_blocking=True).float() / 255.0
            if cfg.multi_scale:
                imgs = self._rescale_batch(imgs, ni)
            targets = batch[1].to(self.device)
            if ni <= nw:
                accumulate = warmup_step(
                    self.optimizer, ni, nw, epoch, self.lf, self.hyp, cfg.nbs, cfg.batch * self.world
                )
            with torch.autocast(self.device.type, enabled=self.amp):
                pred = self.model(imgs)
                if self.loss_needs_imgs:
                    loss, items = self.loss_fn(pred, targets, imgs)
                else:
                    loss, items = self.loss_fn(pred, targets)
                if is_dist():
                    loss = loss * self.world
            if not all_finite(loss):  # one rank's NaN stops every rank (else the others hang in backward)
                kept = "the checkpoint of the last finished epoch is kept" if epoch else "no epoch finished"
                value = loss.item() if not torch.isfinite(loss).all() else "non-finite on another process"
                raise TrainingDiverged(
                    f"loss became {value} at epoch {epoch}, batch {i}; {kept}. Lower the learning rate "
                    f"(--set lr0=...), check the data (yoloattn data check) or train without AMP (--no-amp)."
                )
            self.scaler.scale(loss).backward()
            if ni - self.last_opt_step >= accumulate:
                if self.clip_grad > 0:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad()
                if self.ema is not None:
                    self.ema.update(self.model)
                self.last_opt_step = ni
            mloss = (mloss * i + items[:3].detach().cpu()) / (i + 1)  # the OTA loss appends the total
            if self.main and not cfg.quiet:
                mem = f"{torch.cuda.memory_reserved() / 1e9:.3g}G" if self.device.type == "cuda" else "cpu"
                bar.set_description(
                    f"{epoch + 1:>4}/{cfg.epochs:<4} {mem:>6} box {mloss[0]:.4f} obj {mloss[1]:.4f} "
                    f"cls {mloss[2]:.4f} inst {targets.shape[0]:>4} {imgs.shape[-1]}px"
                )
        return mloss

    def _rescale_batch(self, imgs: torch.Tensor, ni: int) -> torch.Tensor:
        """Multi-scale training: resize the batch so its long side is a random multiple of the
        stride in [0.5, 1.5] x imgsz; the size depends only on (seed, iteration), so resume is exact."""
        gs, imgsz = self.gs, self.cfg.imgsz
        rng = np.random.default_rng([self.cfg.seed, ni, 0x5CA1E])
        size = max(int(rng.integers(int(imgsz * 0.5), int(imgsz * 1.5) + gs)) // gs * gs, gs)
        sf = size / max(imgs.shape[2:])
        if sf == 1:
            return imgs
        new = [math.ceil(x * sf / gs) * gs for x in imgs.shape[2:]]
        return nn.functional.interpolate(imgs, size=new, mode="bilinear", align_corners=False)

    def _validate(self) -> tuple[dict[str, float], torch.Tensor]:
        from yoloattn.engine.evaluator import evaluate

        res = evaluate(
            self.ema.ema,
            self.val_loader,
            names=self.data.names,
            device=self.device,
            loss_fn=self.val_loss_fn,
            half=self.amp,
            verbose=False,
            coco=False,
        )
        m = res.metrics
        if not self.cfg.quiet:
            LOGGER.info(
                "%10s P %.3f  R %.3f  mAP50 %.3f  mAP50-95 %.3f",
                "val",
                m["mp"],
                m["mr"],
                m["map50"],
                m["map"],
            )
        return m, res.loss

    def _write_results(self, epoch, mloss, metrics, vloss, lrs) -> None:
        values = [
            *[float(x) for x in mloss],
            *(float(metrics.get(k, 0.0)) for k in ("mp", "mr", "map50", "map")),
            *[float(x) for x in vloss],
            *lrs[:3],
        ]
        write_results_row(self.run_dir / "results.csv", epoch, values)

    def _save(self, epoch: int, best: bool, metrics: dict[str, float]) -> None:
        from yoloattn import __version__
        from yoloattn.models.weights import save_model

        ema = self.ema.ema
        meta = {
            "imgsz": self.cfg.imgsz,
            "epoch": epoch,
            "best_fitness": self.best_fitness,
            "train_args": self.cfg.to_dict(),
            "yoloattn": __version__,
        }
        # resume state first: a kill between the two writes leaves a consistent resume file
        save_training_state(
            self.wdir / "last.state.safetensors",
            model=unwrap(self.model),
            ema=self.ema,
            optimizer=self.optimizer,
            scaler=self.scaler,
            epoch=epoch,
            best_fitness=self.best_fitness,
            extra={
                "frozen_rows": self.frozen_rows,
                "last_opt_step": self.last_opt_step,
                "bad_epochs": self.bad_epochs,
                "metrics": {k: float(v) for k, v in metrics.items()},
            },
        )
        save_model(ema, self.wdir / "last.safetensors", meta=meta)
        if self.cfg.save_period > 0 and epoch % self.cfg.save_period == 0:  # as officially: 0, N, 2N, ...
            save_model(ema, self.wdir / f"epoch{epoch}.safetensors", meta=meta)
        if best:
            save_model(ema, self.wdir / "best.safetensors", meta=meta)

    def _final_validation(self) -> None:
        """Validate ``best`` once more, as the official trainers do: the per-class table, and
        ``confusion_matrix.png`` plus the PR/F1/P/R curves in the run folder."""
        best = self.wdir / "best.safetensors"
        if self.val_loader is None or not best.is_file():
            return
        try:
            from yoloattn.engine.evaluator import evaluate, format_table
            from yoloattn.models.weights import load_model

            names = list(self.data.names)
            model = load_model(best, device=self.device)
            res = evaluate(
                model, self.val_loader, names, self.device, half=self.amp, verbose=False, coco=False
            )
            if not self.cfg.quiet:
                LOGGER.info("validating %s:\n%s", best, format_table(res))
            res.confusion.plot(self.run_dir / "confusion_matrix.png", names)
            res.det_metrics.plot(self.run_dir)
        except Exception as e:  # a plot must never lose a finished training
            LOGGER.warning("final validation of %s failed: %s", best, e)

    def _plot(self) -> None:
        try:
            from yoloattn.engine.plots import plot_results_csv

            plot_results_csv(self.run_dir / "results.csv")
        except Exception as e:  # plots must never lose a finished training
            LOGGER.warning("could not plot results: %s", e)


def train(cfg: TrainConfig) -> TrainResult:
    """Run one training; see :class:`TrainConfig` for the options."""
    t0 = time.time()
    result = Trainer(cfg).fit()
    if result is not None and not cfg.quiet:
        LOGGER.info(
            "%d epochs done in %.1f min; results in %s",
            result.epochs_done,
            (time.time() - t0) / 60,
            result.run_dir,
        )
    if math.isnan(result.best_fitness if result else 0.0):
        raise TrainingDiverged("fitness is NaN")
    return result
