"""The ablation runner: baseline vs attention modules x seeds, with honest statistics.

Every variant x seed is one ordinary training run (same recipe, same data order for the same
seed) followed by one evaluation with the COCO-standard and YOLO-style metrics, whose per-image
match records (``records.npz``) feed the summary's bootstrap. Runs live in
``runs/compare/<name>/<variant>-s<seed>/``; a finished run has ``done.json`` and is skipped when
the command runs again (its resume state is deleted unless ``keep_state``), an unfinished one
resumes from its last checkpoint, a failed one is recorded in ``error.json`` and reported in the
summary without stopping the others. ``study.json`` holds the study's fingerprint
(:mod:`yoloattn.experiments.fingerprint`): a rerun with other result-changing options is refused.
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

LOGGER = logging.getLogger("yoloattn.compare")

__all__ = ["Variant", "CompareConfig", "parse_variants", "run_compare", "run_one"]


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


class LauncherError(ValueError):
    """The chosen launcher cannot run here (missing package or cluster)."""


def _check_slurm() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise LauncherError(
            "--launcher submitit needs the optional extra: pip install 'yoloattn[cluster]'"
        ) from None
    if shutil.which("sbatch") is None:
        raise LauncherError(
            "--launcher submitit needs a SLURM cluster: `sbatch` is not on PATH here. "
            "Run on a SLURM login node, or use --launcher local."
        )


def _submit_slurm(cfg: CompareConfig, jobs: list[tuple[Variant, int]]) -> list[dict[str, Any]]:
    _check_slurm()
    import submitit

    ex = submitit.AutoExecutor(folder=str(Path(cfg.project) / cfg.name / "slurm"))
    ex.update_parameters(timeout_min=24 * 60, slurm_array_parallelism=len(jobs))
    futures = ex.map_array(run_one, [cfg] * len(jobs), [v for v, _ in jobs], [s for _, s in jobs])
    return [f.result() for f in futures]


def run_compare(cfg: CompareConfig, on_record: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Run (or resume) the whole study and write the summary. Returns the study folder."""
    from tqdm import tqdm

    from yoloattn.experiments.fingerprint import check_study, discard_study, study_fingerprint
    from yoloattn.experiments.report import write_summary

    variants = parse_variants(cfg.attention, cfg.place)
    if cfg.launcher == "submitit":
        _check_slurm()  # before anything is written
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
        records = _submit_slurm(cfg, jobs)
    elif cfg.launcher == "local":
        bar = tqdm(jobs, desc="compare", unit="run", position=0, disable=cfg.train.get("quiet", False))
        for v, s in bar:
            bar.set_postfix_str(f"{v.name} seed {s}")
            try:
                rec = run_one(cfg, v, s)
            except Exception as e:  # one failed variant must not stop the study
                LOGGER.error("run %s seed %d failed: %s", v.name, s, e)
                rec = {
                    "variant": v.name,
                    "attention": v.attention,
                    "seed": s,
                    "error": f"{type(e).__name__}: {e}",
                }
                d = _run_dir(cfg, v, s)
                d.mkdir(parents=True, exist_ok=True)
                (d / "error.json").write_text(
                    json.dumps({**rec, "traceback": traceback.format_exc()}, indent=2)
                )
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
