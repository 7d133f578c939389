"""The training loop: official YOLOv5/YOLOv7 recipes on 1 CPU, 1 GPU or many GPUs (torchrun).

``train(TrainConfig(...))`` runs one training and writes one run folder, ``runs/train/<name>/``
(layout: :class:`~yoloattn.engine.runs.RunDir`): the resolved options and architecture, one
``results.csv`` row per epoch (losses, P, R, mAP50, mAP50-95, learning rates) and its plot, the
last and best EMA weights (best by fitness 0.1*mAP50 + 0.9*mAP50-95) with JSON sidecars, and the
state an exact resume needs (no pickle). Loggers attach as callbacks
(:mod:`yoloattn.engine.callbacks`; ``--tensorboard`` adds the TensorBoard one).

Under ``torchrun`` the same code runs DistributedDataParallel; rank 0 logs and writes files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from yoloattn._io import write_text_atomic
from yoloattn.engine import setup as parts
from yoloattn.engine.callbacks import Callback, CallbackList, TensorBoardLogger
from yoloattn.engine.checkpoint import (
    Resume,
    ResumePoint,
    check_unfinished,
    load_resume,
    restore_rng,
    restore_training,
    resume_epoch,
    save_training_state,
)
from yoloattn.engine.distributed import (
    all_finite,
    broadcast_flag,
    init_distributed,
    is_dist,
    peer_lost_error,
    rank,
    seed_everything,
    select_device,
)
from yoloattn.engine.ema import ModelEMA, unwrap
from yoloattn.engine.metrics import fitness
from yoloattn.engine.optim import warmup_step
from yoloattn.engine.runs import (
    RESULT_COLUMNS,
    RunDir,
    increment_path,
    truncate_results,
    write_results_row,
)
from yoloattn.engine.train_config import (
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    freeze_rows,
    model_family,
)
from yoloattn.models.placement import insert_mode

LOGGER = logging.getLogger("yoloattn.train")

# the names below are re-exported: they lived here before the split into train_config/runs/distributed
__all__ = [
    "RESULT_COLUMNS",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "freeze_rows",
    "increment_path",
    "select_device",
    "train",
]


class Trainer:
    """One training run. Use :func:`train` for the common case."""

    def __init__(self, cfg: TrainConfig, callbacks: Sequence[Callback] = ()):
        self.cfg = dataclasses.replace(cfg)  # setup() resolves defaults into it; the caller's stays as given
        self.resume: Resume | None = None
        if cfg.resume:
            self.resume = load_resume(self.cfg)
            self.cfg, self.run = self.resume.cfg, self.resume.run
        self.rank = rank()
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.device = select_device(self.cfg.device)
        init_distributed(self.device)
        self.main = self.rank == 0
        self.start_epoch = 0
        if self.main and not cfg.resume:  # refused before any data is read: a folder of another run
            RunDir.new(self.cfg.project, self.cfg.name, self.cfg.exist_ok)
        logger = [TensorBoardLogger()] if self.cfg.tensorboard and self.main else []
        self.callbacks = CallbackList([*logger, *(callbacks if self.main else ())])  # rank 0 logs

    @property
    def run_dir(self) -> Path:
        """The run folder (set by :meth:`setup` on rank 0, or by resume)."""
        return self.run.root

    # ----------------------------------------------------------------- setup
    def setup(self) -> None:
        """Build the run's parts (see :mod:`yoloattn.engine.setup`); the order is fixed: it is
        the order in which they draw from the seeded random generators."""
        cfg = self.cfg
        resuming = self.resume is not None
        seed_everything(cfg.seed + self.rank, cfg.deterministic)
        self.threads = parts.resolve_threads(cfg.threads, cfg.workers, self.world)
        torch.set_num_threads(self.threads)
        saved_cfg = self.run.model_yaml if resuming else None
        base_cfg, model_cfg, self.index_map = parts.model_configs(cfg, saved_cfg)
        self.family = model_family(model_cfg)
        self.epochs = parts.resolve_epochs(cfg, self.family)
        if self.resume is not None:  # a finished run says so before any dataset is read or scanned
            check_unfinished(self.resume, self.epochs)
            if self.main:
                n = resume_epoch(self.resume)
                LOGGER.info("resuming %s from epoch %d of %d", self.run.root, n + 1, self.epochs)
        self.data, self.scan_nc = parts.load_data(cfg)
        model = parts.build_run_model(
            cfg,
            base_cfg,
            model_cfg,
            self.index_map,
            self.data.nc,
            list(self.data.names),
            seed=cfg.seed + self.rank,
            paired_init=not cfg.weights and not resuming,
        )
        self.hyp, self.hyp_file = parts.resolve_hyp(cfg, model, self.data.nc)
        if cfg.weights and not resuming:
            self.transfer_report = parts.load_initial_weights(model, cfg.weights, self.index_map)
        saved_rows = self.resume.extra.get("frozen_rows") if self.resume else None
        self.frozen_rows = parts.freeze_model(model, cfg.freeze, self.index_map, saved_rows)

        model.to(self.device)
        self.model_cfg = model.yaml
        self.gs = max(int(model.stride.max()), 32)
        parts.check_image_options(cfg, self.gs)
        self.train_set = parts.build_train_set(cfg, self.data, self.hyp, self.gs, self.scan_nc)
        self.anchor_report = None
        if cfg.autoanchor and not resuming:
            self.anchor_report = parts.check_run_anchors(cfg, self.train_set, model, self.hyp)
            self.model_cfg = model.yaml
        self.train_loader = parts.build_train_loader(cfg, self.train_set, self.rank, self.world)
        if self.main:
            nw = self.train_loader.num_workers
            each = f"+{nw} worker{'s' if nw != 1 else ''}, 1 thread each" if nw else "no dataloader workers"
            LOGGER.info("threads: %d (%s)", self.threads, each)
        self.val_set, self.val_loader = None, None
        if self.main and self.data.val:
            self.val_set, self.val_loader = parts.build_val_loader(cfg, self.data, self.gs, self.scan_nc)

        opt = parts.build_optimization(cfg, model, self.hyp, self.family, self.world)
        self.optimizer, self.scheduler, self.lf = opt.optimizer, opt.scheduler, opt.lf
        self.accumulate, self.clip_grad = opt.accumulate, opt.clip_grad
        self.ema = ModelEMA(model) if self.main else None
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.start_epoch = 0
        self.best_fitness = 0.0
        # global iteration of the last optimizer step; it carries across epochs (as officially),
        # so with accumulation the first step of an epoch comes `accumulate` batches after the last
        self.last_opt_step = -1
        self.bad_epochs = 0  # validations without improvement (--patience)
        self.resume_point: ResumePoint | None = None
        if self.resume:
            self.resume_point = p = restore_training(
                self.resume,
                model=model,
                ema=self.ema,
                optimizer=self.optimizer,
                scaler=self.scaler,
                scheduler=self.scheduler,
                epochs=self.epochs,
            )
            self.start_epoch, self.best_fitness = p.start_epoch, p.best_fitness
            self.last_opt_step, self.bad_epochs = p.last_opt_step, p.bad_epochs
        self.warmup_fixed = parts.warmup_new_fixed(model, cfg.warmup_new)
        parts.log_insertion(model, cfg)
        self.model = parts.wrap_distributed(model, cfg.sync_bn, self.device)
        self.loss_fn, self.loss_needs_imgs, self.val_loss_fn = parts.build_losses(self.model, self.hyp)
        if self.main:
            self._open_run_dir()

    def _open_run_dir(self) -> None:
        cfg = self.cfg
        if not self.resume:
            self.run = RunDir.new(cfg.project, cfg.name, cfg.exist_ok)
        else:  # rows of epochs that ran after the checkpoint (killed mid-save) are redone
            truncate_results(self.run.results_csv, self.start_epoch)
        self.run.weights_dir.mkdir(parents=True, exist_ok=True)
        args = cfg.to_dict()
        args["hyp_resolved"] = self.hyp_file
        args["insert_resolved"] = insert_mode(self.model_cfg)
        # atomic: under DDP the other ranks of a resumed run read these files while rank 0 writes
        write_text_atomic(self.run.args_yaml, yaml.safe_dump(args, sort_keys=False))
        write_text_atomic(self.run.model_yaml, yaml.safe_dump(self.model_cfg, sort_keys=False))

    # ----------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        """Set up and train; the process's torch thread count is restored afterwards."""
        before = torch.get_num_threads()
        try:
            return self._fit()
        except RuntimeError as e:  # a peer of a distributed run died: say so, and how to resume
            run = getattr(self, "run", None)
            lost = peer_lost_error(e, run.root if run is not None else None)
            if lost is None:
                raise
            LOGGER.error("%s", lost)
            raise lost from e
        finally:
            torch.set_num_threads(before)

    def _fit(self) -> TrainResult:
        self.setup()
        cfg = self.cfg
        nb = len(self.train_loader)
        warm = self.hyp.get("warmup_epochs", 3.0)
        nw = 0 if warm <= 0 else max(round(warm * nb), 1000 if self.family == "v7" else 100)
        metrics: dict[str, float] = {}
        if self.resume_point is not None:
            restore_rng(*self.resume_point.rng)
            metrics = dict(self.resume_point.extra.get("metrics", {}))
        epochs_done = self.start_epoch
        stopped_early = False  # by --patience (not by stop_after_epochs, which simulates a kill)
        if self.main and cfg.eval_start and self.resume is None and self.val_loader is not None:
            start, _ = self._validate()
            write_text_atomic(self.run.metrics_start, json.dumps({k: float(v) for k, v in start.items()}))
        if self.main:
            self.callbacks.on_train_start(self)
        for epoch in range(self.start_epoch, self.epochs):
            self.model.train()
            self.train_loader.set_epoch(epoch)  # shuffle order and augmentation depend on (seed, epoch)
            mloss = self._train_epoch(epoch, nb, nw)
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            self.scheduler.step()
            epochs_done = epoch + 1
            stop = False
            if self.main:
                final = epoch + 1 == self.epochs
                periodic = not cfg.noval and (epoch + 1) % cfg.val_interval == 0
                do_val = self.val_loader is not None and (periodic or final)
                vloss: torch.Tensor | None = None  # empty cells in results.csv
                if do_val:
                    metrics, vloss = self._validate()
                fit = fitness(metrics.get("map50", 0.0), metrics.get("map", 0.0)) if do_val else -1.0
                improved = do_val and fit >= self.best_fitness  # ties count, as officially
                if improved:
                    self.best_fitness = fit
                if cfg.patience and do_val:
                    self.bad_epochs = 0 if improved else self.bad_epochs + 1
                    if self.bad_epochs >= cfg.patience:
                        LOGGER.info("early stop: no improvement for %d validations", self.bad_epochs)
                        stop = stopped_early = True
                row = self._write_results(epoch, mloss, metrics, vloss, lrs)
                self.callbacks.on_epoch_end(self, epoch, row)
                self._save(epoch, improved or (self.val_loader is None), metrics)
            if cfg.stop_after_epochs is not None and epochs_done - self.start_epoch >= cfg.stop_after_epochs:
                stop = True
            if broadcast_flag(stop):  # rank 0 decides; every rank must leave the loop together
                break
        result = None
        if self.main:
            self._plot()
            if cfg.plots and (epochs_done == self.epochs or stopped_early):
                self._final_validation()
            result = TrainResult(
                self.run.root,
                self.run.best,
                self.run.last,
                epochs_done,
                metrics,
                self.best_fitness,
            )
            self.callbacks.on_train_end(self, result)
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
                if epoch < cfg.warmup_new:  # --warmup-new: the base network keeps its weights
                    for p in self.warmup_fixed:
                        p.grad = None
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

        assert self.ema is not None  # rank 0 validates
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

    def _write_results(
        self,
        epoch: int,
        mloss: torch.Tensor,
        metrics: dict[str, float],
        vloss: torch.Tensor | None,
        lrs: list[float],
    ) -> dict[str, float | None]:
        """One ``results.csv`` row, returned as column -> value for the callbacks. Cells with
        nothing to report stay empty (not 0, None in the returned row): the metrics before the first
        validation (``--noval``), and the val losses of unvalidated epochs. An unvalidated epoch
        after a validation repeats the last metrics, as officially."""
        mkeys = ("mp", "mr", "map50", "map")
        values: list[float | None] = [
            *[float(x) for x in mloss],
            *(float(metrics[k]) if k in metrics else None for k in mkeys),
            *([float(x) for x in vloss] if vloss is not None else [None] * 3),
            *lrs[:3],
        ]
        write_results_row(self.run.results_csv, epoch, values)
        return dict(zip(RESULT_COLUMNS[1:], values))

    def _save(self, epoch: int, best: bool, metrics: dict[str, float]) -> None:
        from yoloattn import __version__
        from yoloattn.models.weights import save_model

        assert self.ema is not None  # rank 0 saves
        ema = self.ema.ema
        meta = {
            "imgsz": self.cfg.imgsz,
            "epoch": epoch,
            "best_fitness": self.best_fitness,
            "train_args": self.cfg.to_dict(),
            "yoloattn": __version__,
        }
        # weights first, the resume state last: the state is the commit point. A kill before it
        # resumes from the previous state and redoes this epoch (rewriting these files); a kill
        # after it finds last/best already at this epoch. So last never lags the state.
        save_model(ema, self.run.last, meta=meta)
        if self.cfg.save_period > 0 and epoch % self.cfg.save_period == 0:  # as officially: 0, N, 2N, ...
            save_model(ema, self.run.epoch_weights(epoch), meta=meta)
        if best:
            save_model(ema, self.run.best, meta=meta)
        save_training_state(
            self.run.state,
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

    def _final_validation(self) -> None:
        """Validate ``best`` once more, as the official trainers do: the per-class table, and
        ``confusion_matrix.png`` plus the PR/F1/P/R curves in the run folder."""
        best = self.run.best
        if self.val_loader is None or not best.is_file():
            return
        try:
            from yoloattn.engine.engagement import format_engagement, measure_engagement
            from yoloattn.engine.evaluator import evaluate, format_table
            from yoloattn.engine.plots import plot_confusion_matrix, plot_metric_curves
            from yoloattn.models.weights import load_model

            names = list(self.data.names)
            model = load_model(best, device=self.device)
            with measure_engagement(model) as meter:
                res = evaluate(
                    model, self.val_loader, names, self.device, half=self.amp, verbose=False, coco=False
                )
            summary = meter.summary()
            if summary:
                write_text_atomic(self.run.engagement, json.dumps({str(k): v for k, v in summary.items()}))
                LOGGER.info("engagement (best): %s", format_engagement(summary))
            if not self.cfg.quiet:
                LOGGER.info("validating %s:\n%s", best, format_table(res))
            assert res.confusion is not None and res.det_metrics is not None  # evaluate() fills both
            plot_confusion_matrix(res.confusion.matrix, self.run.confusion_png, names)
            plot_metric_curves(res.det_metrics.result, self.run.plots_dir, res.det_metrics.names)
        except Exception as e:  # a plot must never lose a finished training
            LOGGER.warning("final validation of %s failed: %s", best, e)

    def _plot(self) -> None:
        try:
            from yoloattn.engine.plots import plot_results_csv

            plot_results_csv(self.run.results_csv, self.run.results_png)
        except Exception as e:  # plots must never lose a finished training
            LOGGER.warning("could not plot results: %s", e)


def session_summary(trainer: Trainer, result: TrainResult, seconds: float) -> str:
    """E.g. ``2 epochs trained in this session (3 of 3 done) in 6.9 min``: a resumed session
    counts only the epochs it trained itself."""
    trained = result.epochs_done - trainer.start_epoch
    return (
        f"{trained} epoch{'s' if trained != 1 else ''} trained in this session "
        f"({result.epochs_done} of {trainer.epochs} done) in {seconds / 60:.1f} min"
    )


def train(cfg: TrainConfig, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Run one training; see :class:`TrainConfig` for the options and
    :mod:`yoloattn.engine.callbacks` for ``callbacks``."""
    t0 = time.time()
    trainer = Trainer(cfg, callbacks)
    result = trainer.fit()
    if result is not None and not cfg.quiet:
        LOGGER.info("%s; results in %s", session_summary(trainer, result, time.time() - t0), result.run_dir)
    if math.isnan(result.best_fitness if result else 0.0):
        raise TrainingDiverged("fitness is NaN")
    return result
