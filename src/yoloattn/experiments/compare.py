"""The ablation runner: baseline vs attention modules x seeds, with honest statistics.

Every variant x seed is one ordinary training run (same recipe, same data order for the same
seed) followed by one evaluation with the COCO-standard and YOLO-style metrics, whose per-image
match records (``records.npz``) feed the summary's bootstrap. Runs live in
``runs/compare/<name>/<variant>-s<seed>/``; a finished run has ``done.json`` and is skipped when
the command runs again (its resume state is deleted unless ``keep_state``), an unfinished one
resumes from its last checkpoint, a failed one is recorded in ``error.json`` and reported in the
summary without stopping the others. ``study.json`` holds the study's fingerprint
(:mod:`yoloattn.experiments.fingerprint`): a rerun with other result-changing options is refused.

``launcher="local"`` runs the runs one after the other in this process; ``"submitit"`` runs the
unfinished ones as one SLURM job array (:class:`SlurmTask` per task, submission and waiting in
:mod:`yoloattn.experiments.slurm`) and writes the summary here when all have ended.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yoloattn._io import write_text_atomic
from yoloattn.experiments.slurm import (
    LauncherError,
    SlurmOptions,
    TaskOutcome,
    check_slurm,
    run_array,
    sbatch_command_line,
    sbatch_view,
)

LOGGER = logging.getLogger("yoloattn.compare")

__all__ = [
    "CompareConfig",
    "LauncherError",
    "SlurmTask",
    "Variant",
    "parse_variants",
    "plan_slurm",
    "run_compare",
    "run_one",
]


@dataclass(frozen=True)
class Variant:
    """One model variant: ``attention`` is a placement spec (None for the baseline)."""

    name: str
    attention: str | None

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.+@=-]+", "_", self.name)


@dataclass
class CompareConfig:
    model: str = "yolov5s"
    data: str = ""
    attention: list[str] = field(default_factory=list)
    place: str = "neck"
    seeds: int = 3
    weights: str | None = None
    project: str = "runs/compare"
    name: str = "exp"
    launcher: str = "local"
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig options shared by all runs
    latency_runs: int = 20
    skip_latency: bool = False
    fresh: bool = False  # discard an existing study folder of this name first
    keep_state: bool = False  # keep finished runs' resume state (weights/last.state.safetensors)
    n_resamples: int = 1000  # bootstrap resamples of the summary
    slurm: SlurmOptions = field(default_factory=SlurmOptions)  # --launcher submitit: what each task asks for
    report_images: int = 3  # validation images explained per variant in report.html (0: none)

    def __post_init__(self) -> None:
        """Check the study's own options and the shared training options before any run starts."""
        import dataclasses

        from yoloattn.engine.train_config import TrainConfig, check_count

        check_count("--seeds", self.seeds, 1, note="seeds per variant")
        check_count("--latency-runs", self.latency_runs, 0)
        check_count("--resamples", self.n_resamples, 1, note="bootstrap resamples")
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        TrainConfig(**{k: v for k, v in self.train.items() if k in names})  # raises on a bad option


def parse_variants(attention: list[str] | str, place: str = "neck") -> list[Variant]:
    """``"se,cbam@backbone"`` -> baseline, ``se@neck``, ``cbam@backbone``.

    ``place`` is the default placement (``neck``, ``backbone``, ``all`` or row indices joined by
    ``+``, e.g. ``6+8``); a module may carry its own with ``key@place``.
    """
    from yoloattn.attention import get_attention_info

    items = attention.split(",") if isinstance(attention, str) else list(attention)
    out = [Variant("baseline", None)]
    seen = {"baseline"}
    for raw in items:
        raw = raw.strip()
        if not raw:
            continue
        key, _, where = raw.partition("@")
        base = key.split("(")[0].strip()
        key = get_attention_info(base).key + key.strip()[len(base) :]  # validates, canonical case
        spec = f"{key}@{where or place}"
        if spec in seen:
            raise ValueError(f"variant {spec!r} is listed twice in --attention")
        seen.add(spec)
        out.append(Variant(spec, spec))
    return out


def _run_dir(cfg: CompareConfig, variant: Variant, seed: int) -> Path:
    return Path(cfg.project) / cfg.name / f"{variant.slug}-s{seed}"


def run_one(cfg: CompareConfig, variant: Variant, seed: int) -> dict[str, Any]:
    """Train + evaluate one variant x seed (resuming if a checkpoint exists). Returns its record."""
    from yoloattn.engine.evaluator import evaluate_run
    from yoloattn.engine.runs import RunDir
    from yoloattn.engine.trainer import TrainConfig, train

    run_dir = _run_dir(cfg, variant, seed)
    done = run_dir / "done.json"
    if done.is_file():
        if not cfg.keep_state:
            RunDir(run_dir).drop_state()
        return json.loads(done.read_text())
    state = RunDir(run_dir).state
    t0 = time.time()
    (run_dir / "error.json").unlink(missing_ok=True)
    if state.is_file():
        tc = TrainConfig(
            resume=str(run_dir),
            quiet=cfg.train.get("quiet", False),
            device=cfg.train.get("device", ""),
            workers=cfg.train.get("workers", 2),
            threads=cfg.train.get("threads"),
        )
        try:
            train(tc)
        except ValueError as e:
            if "already finished" not in str(e):
                raise
    else:
        if run_dir.exists():  # a run that died before its first checkpoint: start it again
            shutil.rmtree(run_dir)
        opts = dict(cfg.train)
        opts.update(
            model=cfg.model,
            data=cfg.data,
            attention=variant.attention,
            weights=cfg.weights,
            seed=seed,
            project=str(run_dir.parent),
            name=run_dir.name,
            exist_ok=True,
            plots=False,  # compare evaluates the final weights itself (below) and draws its own plots
            eval_start=True,  # the epoch-0 column: proves the variants start level (identity insertion)
        )
        train(TrainConfig(**opts))
    # the final (EMA) weights: choosing the best epoch on the split we report would bias the study
    run = RunDir(run_dir)
    engagement: dict[int, dict[str, Any]] = {}
    ev = evaluate_run(
        run.last,
        data=cfg.data,
        imgsz=cfg.train.get("imgsz", 640),
        device=cfg.train.get("device", ""),
        single_cls=bool(cfg.train.get("single_cls", False)),
        engagement=engagement,
        records=run.records,
    )
    if engagement:
        write_text_atomic(run.engagement, json.dumps({str(k): v for k, v in engagement.items()}, indent=2))
    args = yaml.safe_load(run.args_yaml.read_text()) if run.args_yaml.is_file() else {}
    record = {
        "variant": variant.name,
        "attention": variant.attention,
        "seed": seed,
        "run_dir": str(run_dir),
        "insert": args.get("insert_resolved"),
        "metrics": ev,
        "metrics_start": json.loads(run.metrics_start.read_text()) if run.metrics_start.is_file() else None,
        "engagement": {str(k): v for k, v in engagement.items()},
        "train_minutes": (time.time() - t0) / 60,
    }
    write_text_atomic(done, json.dumps(record, indent=2))
    if not cfg.keep_state:
        run.drop_state()  # a finished run never resumes; its state is the largest file of the run
    return record


def _error_record(
    cfg: CompareConfig, variant: Variant, seed: int, error: str, tb: str | None = None, log: str | None = None
) -> dict[str, Any]:
    """The record of a failed run, also written to its ``error.json`` (with the traceback, when
    known, and the SLURM log)."""
    rec: dict[str, Any] = {
        "variant": variant.name,
        "attention": variant.attention,
        "seed": seed,
        "error": error,
    }
    if log:
        rec["log"] = log
    d = _run_dir(cfg, variant, seed)
    d.mkdir(parents=True, exist_ok=True)
    old: dict[str, Any] = {}
    if (d / "error.json").is_file():  # written by the task itself: keep its traceback
        try:
            old = json.loads((d / "error.json").read_text())
        except ValueError:
            old = {}
    full = {**rec, "traceback": tb or old.get("traceback")}
    write_text_atomic(d / "error.json", json.dumps(full, indent=2))
    return rec


class SlurmTask:
    """One array task on a SLURM node: :func:`run_one`; on failure its ``error.json`` is written
    and the exception re-raised (SLURM marks the task FAILED). On a time limit or preemption
    submitit calls :meth:`checkpoint` and requeues the task, which then resumes from its last
    epoch checkpoint (``run_one`` resumes unfinished runs)."""

    def __call__(self, cfg: CompareConfig, variant: Variant, seed: int) -> dict[str, Any]:
        import os

        cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
        if cfg.train.get("threads") is None and cpus.isdigit() and "OMP_NUM_THREADS" not in os.environ:
            os.environ["OMP_NUM_THREADS"] = cpus  # the task's CPUs, not the whole node's
        try:
            return run_one(cfg, variant, seed)
        except Exception as e:
            _error_record(cfg, variant, seed, f"{type(e).__name__}: {e}", traceback.format_exc())
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _slurm_folder(cfg: CompareConfig) -> Path:
    return Path(cfg.project) / cfg.name / "slurm"


def _split_finished(cfg: CompareConfig, jobs: list[tuple[Variant, int]]) -> tuple[list, list]:
    done = [(v, s) for v, s in jobs if (_run_dir(cfg, v, s) / "done.json").is_file()]
    return done, [j for j in jobs if j not in done]


def plan_slurm(cfg: CompareConfig) -> str:
    """What ``--launcher submitit`` would submit now (``--dry-run``): the runs reused and
    submitted, the ``sbatch`` line and the batch script. Writes nothing."""
    from yoloattn.experiments.fingerprint import check_study, study_fingerprint

    check_slurm(need_sbatch=False)
    variants = parse_variants(cfg.attention, cfg.place)
    root = Path(cfg.project) / cfg.name
    if root.is_dir() and not cfg.fresh:
        check_study(root, study_fingerprint(cfg))  # a rerun with other options would be refused
    jobs = [(v, s) for s in range(cfg.seeds) for v in variants]
    done, todo = _split_finished(cfg, jobs)
    folder = _slurm_folder(cfg).resolve()
    lines = [f"study {Path(cfg.project) / cfg.name}: {len(jobs)} runs, {len(done)} finished (reused), "
             f"{len(todo)} to submit as one job array"]  # fmt: skip
    lines += [f"  task {i}: {_run_dir(cfg, v, s).name}" for i, (v, s) in enumerate(todo)]
    if todo:
        lines += ["", "equivalent to: " + sbatch_command_line(cfg.slurm, cfg.name, len(todo)), ""]
        lines += ["batch script (submitit; the runs' arguments are pickled next to it):", ""]
        lines.append(sbatch_view(folder, cfg.slurm, cfg.name, len(todo)))
    return "\n".join(lines)


def _submit_slurm(
    cfg: CompareConfig,
    jobs: list[tuple[Variant, int]],
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Finished runs are reused here; the others run as one job array (see :func:`run_array`)."""
    done, todo = _split_finished(cfg, jobs)
    by_key: dict[str, dict[str, Any]] = {}
    for v, s in done:
        by_key[_run_dir(cfg, v, s).name] = run_one(cfg, v, s)
    tasks: dict[str, tuple[Any, ...]] = {}
    for v, s in todo:
        d = _run_dir(cfg, v, s)
        (d / "error.json").unlink(missing_ok=True)  # a retried run: its old error no longer holds
        tasks[d.name] = (cfg, v, s)
    lookup = {_run_dir(cfg, v, s).name: (v, s) for v, s in todo}

    def collect(key: str, out: TaskOutcome) -> None:
        v, s = lookup[key]
        if out.error is None:
            rec = out.result
            m = rec["metrics"]
            LOGGER.info("done %s seed %d (job %s): mAP50 %.4f  mAP50-95 %.4f", v.name, s, out.job_id,
                        m["map50"], m["map"])  # fmt: skip
        else:
            err = out.error
            try:  # the task's own error.json names the exception better than submitit's message
                err = json.loads((_run_dir(cfg, v, s) / "error.json").read_text())["error"]
            except (OSError, ValueError, KeyError):
                pass
            where = f"job {out.job_id}, log: {out.log}" if out.log else f"job {out.job_id}"
            rec = _error_record(cfg, v, s, f"{err} ({where})", log=out.log)
            LOGGER.error("FAILED %s seed %d: %s", v.name, s, rec["error"])
        by_key[key] = rec
        if on_record:
            on_record(rec)

    if tasks:
        run_array(SlurmTask(), tasks, _slurm_folder(cfg), cfg.slurm, name=cfg.name, on_outcome=collect)
    return [by_key[_run_dir(cfg, v, s).name] for v, s in jobs]


def run_compare(cfg: CompareConfig, on_record: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Run (or resume) the whole study and write the summary. Returns the study folder."""
    from tqdm import tqdm

    from yoloattn.experiments.fingerprint import check_study, discard_study, study_fingerprint
    from yoloattn.experiments.report import write_summary

    variants = parse_variants(cfg.attention, cfg.place)
    if cfg.launcher == "submitit":
        check_slurm()  # before anything is written
    elif cfg.launcher != "local":
        raise ValueError(f"unknown launcher {cfg.launcher!r}; choose local or submitit")
    root = Path(cfg.project) / cfg.name
    fingerprint = study_fingerprint(cfg)
    if cfg.fresh:
        discard_study(root)
    check_study(root, fingerprint)  # before anything is written
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        root / "study.json",
        json.dumps(
            {
                "fingerprint": fingerprint,
                "model": cfg.model,
                "data": cfg.data,
                "variants": [v.name for v in variants],
                "seeds": list(range(cfg.seeds)),
                "weights": cfg.weights,
                "train": cfg.train,
            },
            indent=2,
            default=str,
        ),
    )
    jobs = [(v, s) for s in range(cfg.seeds) for v in variants]
    records: list[dict[str, Any]] = []
    if cfg.launcher == "submitit":
        records = _submit_slurm(cfg, jobs, on_record)
    elif cfg.launcher == "local":
        bar = tqdm(jobs, desc="compare", unit="run", position=0, disable=cfg.train.get("quiet", False))
        for v, s in bar:
            bar.set_postfix_str(f"{v.name} seed {s}")
            try:
                rec = run_one(cfg, v, s)
            except Exception as e:  # one failed variant must not stop the study
                LOGGER.error("run %s seed %d failed: %s", v.name, s, e)
                rec = _error_record(cfg, v, s, f"{type(e).__name__}: {e}", traceback.format_exc())
            records.append(rec)
            if "metrics" in rec:
                m = rec["metrics"]
                tqdm.write(f"done {v.name:<20} seed {s}: mAP50 {m['map50']:.4f}  mAP50-95 {m['map']:.4f}")
            else:
                tqdm.write(f"FAILED {v.name:<18} seed {s}: {rec['error']}")
            if on_record:
                on_record(rec)
    else:
        raise ValueError(f"unknown launcher {cfg.launcher!r}; choose local or submitit")
    write_summary(root, cfg, variants, records)
    return root
