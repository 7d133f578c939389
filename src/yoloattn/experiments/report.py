"""Summary of an ablation: statistics, then the table (CSV, Markdown, JSON) and plots.

Per variant: parameters, GFLOPs at the training size, CPU latency (median over interleaved
repetitions measured in one process, so variants are comparable), mAP50 and mAP50-95 (YOLO-style
and COCO-standard) as mean +/- std over seeds, the epoch-0 metrics and the attention engagement,
and the paired difference to the baseline: Δ mAP50 and Δ mAP50-95 with 95 % intervals from the
paired hierarchical bootstrap over seeds and validation images
(:func:`yoloattn.experiments.bootstrap.bootstrap_study`, from each run's ``records.npz``), and a
verdict from the Holm-adjusted bootstrap p-value (:func:`~yoloattn.experiments.stats.decide`).
Runs without match records (older studies) fall back to the paired t-test over seeds. The study's
minimum detectable effect, the per-class AP50-95, the settings and the size on disk complete it.
Text: :mod:`yoloattn.experiments.tables`; plots: :mod:`yoloattn.experiments.plots`; cost:
:mod:`yoloattn.experiments.cost`; the self-contained ``report.html`` (plots, training curves,
heatmaps of validation images per variant): :mod:`yoloattn.experiments.report_data` and
:mod:`yoloattn.experiments.html_report`.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoloattn.engine.records import MatchRecords, map_from_records
from yoloattn.experiments.bootstrap import PairedBootstrap, bootstrap_study
from yoloattn.experiments.cost import architecture_figures, measure_latency
from yoloattn.experiments.plots import PLOTS, draw_curves, draw_plots
from yoloattn.experiments.stats import (
    decide,
    mean_std,
    minimum_detectable_effect,
    paired_compare,
    pooled_se,
)
from yoloattn.experiments.tables import (
    COLUMNS,
    per_class_cells,
    per_class_markdown,
    settings_lines,
    to_markdown,
    write_csv,
    write_per_class_csv,
)

LOGGER = logging.getLogger("yoloattn.compare")

__all__ = ["COLUMNS", "StudyStats", "measure_latency", "study_statistics", "summarise", "write_summary"]


def _metric(rec: dict[str, Any], key: str) -> float:
    return float(rec["metrics"].get(key, math.nan))


def _start_metric(rec: dict[str, Any], key: str) -> float:
    start = rec.get("metrics_start") or {}
    return float(start.get(key, math.nan))


def _engagement(rec: dict[str, Any]) -> tuple[float, float]:
    """Mean contribution and mean |gate| over a run's attention rows (NaN when not recorded)."""
    rows = (rec.get("engagement") or {}).values()
    contrib = [r["contribution"] for r in rows if r.get("contribution") is not None]
    gates = [abs(g) for r in rows for g in (r.get("gate") or [])]
    return (
        float(np.mean(contrib)) if contrib else math.nan,
        float(np.mean(gates)) if gates else math.nan,
    )


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


@dataclass
class StudyStats:
    """The study's statistics from the runs' match records (see :func:`study_statistics`)."""

    boot: dict[str, PairedBootstrap] = field(default_factory=dict)
    decisions: dict[str, Any] = field(default_factory=dict)  #: variant -> Decision (mAP50-95)
    decisions50: dict[str, Any] = field(default_factory=dict)  #: variant -> Decision (mAP50)
    mde: float = math.nan
    mde_line: str = ""
    per_class: dict[str, list[float]] = field(default_factory=dict)  #: variant -> AP50-95 per class
    n_images: int | None = None
    n_instances: int | None = None
    n_resamples: int = 0
    missing: list[str] = field(default_factory=list)  #: runs without records.npz


def _load_records(rec: dict[str, Any]) -> MatchRecords | None:
    from yoloattn.engine.runs import RunDir

    if "run_dir" not in rec:
        return None
    path = RunDir(rec["run_dir"]).records
    if not path.is_file():
        return None
    try:
        return MatchRecords.load(path)
    except (OSError, ValueError) as e:
        LOGGER.warning("cannot read %s: %s", path, e)
        return None


def study_statistics(
    variants: Any, records: list[dict[str, Any]], n_resamples: int = 1000, seed: int = 0
) -> StudyStats:
    """Bootstrap Δ per variant (paired by seed with the baseline), Holm verdicts, MDE, per-class AP.

    Variants are bootstrapped together when they share the baseline's seeds (the same resamples
    for all); a variant with a failed seed is paired on the seeds it has. A variant whose runs
    or whose baseline partners lack match records is left out (the summary falls back to the
    t-test for it).
    """
    out = StudyStats(n_resamples=n_resamples)
    mr: dict[str, dict[int, MatchRecords]] = {}
    for r in records:
        if "metrics" not in r:
            continue
        m = _load_records(r)
        if m is None:
            out.missing.append(f"{r['variant']}-s{r['seed']}")
            continue
        mr.setdefault(r["variant"], {})[r["seed"]] = m
    for name, runs in mr.items():
        pcs = np.stack([map_from_records(m)[2] for m in runs.values()])
        with warnings.catch_warnings():  # a class without labels is NaN in every run
            warnings.simplefilter("ignore", RuntimeWarning)
            out.per_class[name] = [float(x) for x in np.nanmean(pcs, 0)]
    base = mr.get("baseline", {})
    if base:
        any_base = next(iter(base.values()))
        out.n_images, out.n_instances = any_base.n_images, any_base.n_targets
    groups: dict[tuple[int, ...], list[str]] = {}
    for v in variants:
        if v.name == "baseline" or v.name not in mr:
            continue
        seeds = tuple(sorted(set(mr[v.name]) & set(base)))
        if seeds:
            groups.setdefault(seeds, []).append(v.name)
    for seeds, names in groups.items():
        try:
            res = bootstrap_study(
                [base[s] for s in seeds], {n: [mr[n][s] for s in seeds] for n in names}, n_resamples, seed
            )
        except ValueError as e:  # e.g. runs evaluated on other images: report, fall back to the t-test
            LOGGER.warning("bootstrap skipped for %s: %s", ", ".join(names), e)
            continue
        out.boot.update(res)
    if out.boot:
        out.decisions = decide(out.boot, metric="map")
        out.decisions50 = decide(out.boot, metric="map50")
        n_seeds = max(b.n_seeds for b in out.boot.values())
        se = pooled_se(out.boot, "map")
        if not math.isnan(se):
            out.mde, out.mde_line = minimum_detectable_effect(
                se, n_seeds=n_seeds, n_images=out.n_images, metric="mAP50-95"
            )
    return out


def summarise(
    variants: Any,
    records: list[dict[str, Any]],
    arch: dict[str, dict[str, float]],
    stats: StudyStats | None = None,
) -> list[dict[str, Any]]:
    """One row per variant (see COLUMNS); ``arch`` maps variant -> params/gflops/latency.

    With ``stats`` (:func:`study_statistics`) the Δ columns, p-values and verdict of a variant
    come from the bootstrap and Holm; otherwise (no match records) from the paired t-test.
    """
    stats = stats or StudyStats()
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["variant"], {})[r["seed"]] = r
    base_ok = {s: r for s, r in by.get("baseline", {}).items() if "metrics" in r}
    rows = []
    for v in variants:
        runs = by.get(v.name, {})
        ok = {s: r for s, r in runs.items() if "metrics" in r}
        errs = sorted({r["error"] for r in runs.values() if "error" in r})
        m50 = mean_std([_metric(r, "map50") for r in ok.values()])
        m = mean_std([_metric(r, "map") for r in ok.values()])
        coco = mean_std([_metric(r, "coco_ap") for r in ok.values()])
        row: dict[str, Any] = {
            "variant": v.name,
            **arch.get(v.name, {}),
            "seeds": len(ok),
            "failed": len(runs) - len(ok),
            "mAP50_mean": m50[0],
            "mAP50_std": m50[1],
            "mAP50-95_mean": m[0],
            "mAP50-95_std": m[1],
            "coco_AP_mean": coco[0],
            "coco_AP_std": coco[1],
            "insert": ",".join(sorted({str(r.get("insert")) for r in ok.values() if r.get("insert")})),
            "mAP50@0_mean": _nanmean([_start_metric(r, "map50") for r in ok.values()]),
            "mAP50-95@0_mean": _nanmean([_start_metric(r, "map") for r in ok.values()]),
            "engagement_mean": _nanmean([_engagement(r)[0] for r in ok.values()]),
            "gate_abs_mean": _nanmean([_engagement(r)[1] for r in ok.values()]),
            "errors": "; ".join(errs),
        }
        if v.name == "baseline":
            row.update({"d_mAP50": 0.0, "d_mAP50-95": 0.0, "verdict": "reference", "method": ""})
        elif v.name in stats.boot:
            b, d = stats.boot[v.name], stats.decisions[v.name]
            row.update(
                {
                    "d_mAP50": b.map50.estimate,
                    "d_mAP50_ci_low": b.map50.ci_low,
                    "d_mAP50_ci_high": b.map50.ci_high,
                    "d_mAP50-95": b.map.estimate,
                    "d_mAP50-95_ci_low": b.map.ci_low,
                    "d_mAP50-95_ci_high": b.map.ci_high,
                    "p_value": d.p_value,
                    "p_holm": d.p_holm,
                    "verdict": d.verdict,
                    "method": f"bootstrap ({b.n_seeds} seed(s) x {b.n_images} images, Holm)",
                }
            )
        else:
            seeds = sorted(set(ok) & set(base_ok))
            pc = paired_compare(
                [_metric(ok[s], "map") for s in seeds], [_metric(base_ok[s], "map") for s in seeds]
            )
            pc50 = paired_compare(
                [_metric(ok[s], "map50") for s in seeds], [_metric(base_ok[s], "map50") for s in seeds]
            )
            row.update(
                {
                    "d_mAP50": pc50.mean_diff,
                    "d_mAP50_ci_low": pc50.ci_low,
                    "d_mAP50_ci_high": pc50.ci_high,
                    "d_mAP50-95": pc.mean_diff,
                    "d_mAP50-95_ci_low": pc.ci_low,
                    "d_mAP50-95_ci_high": pc.ci_high,
                    "p_value": pc.p_value,
                    "verdict": pc.verdict,
                    "method": "paired t-test over seeds (no match records)",
                }
            )
        rows.append(row)
    return rows


def _disk_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _settings(root: Path, cfg: Any, variants: Any, stats: StudyStats) -> dict[str, Any]:
    from yoloattn.experiments.fingerprint import result_option_defaults, study_fingerprint

    study = root / "study.json"
    fp = json.loads(study.read_text()).get("fingerprint") if study.is_file() else None
    fp = fp or study_fingerprint(cfg)
    shown = {"model", "data", "weights", "epochs", "imgsz", "batch", "nbs", "hyp", "hyp_overrides"}
    shown |= {"insert", "gate", "gate_lr_mult", "new_lr_mult", "warmup_new", "version"}
    defaults = result_option_defaults()
    other = {k: v for k, v in fp.items() if k not in shown and v != defaults.get(k, object())}
    return {
        "fingerprint": fp,
        "seeds": list(range(cfg.seeds)),
        "variants": [v.name for v in variants],
        "other_options": ", ".join(f"{k}={v}" for k, v in other.items()),
        "val_images": stats.n_images,
        "val_instances": stats.n_instances,
        "keep_state": bool(getattr(cfg, "keep_state", False)),
        "disk_bytes": _disk_bytes(root),
    }


def _title(cfg: Any, settings: dict[str, Any]) -> str:
    epochs = settings["fingerprint"].get("epochs")
    seeds = len(settings["seeds"])
    return (
        f"{cfg.model} on {Path(cfg.data).stem}, {epochs if epochs is not None else 'default'} "
        f"epoch{'' if epochs == 1 else 's'}, "
        f"{seeds} seed{'s' if seeds != 1 else ''} per variant"
    )


def _class_names(cfg: Any, nc: int) -> list[str]:
    try:
        from yoloattn.data import load_dataset_config

        dcfg = load_dataset_config(cfg.data)
        if cfg.train.get("single_cls"):
            dcfg = dcfg.as_single_class()
        if len(dcfg.names) == nc:
            return list(dcfg.names)
    except Exception:  # the names are a nicety
        pass
    return [str(i) for i in range(nc)]


def _write_html(
    root: Path,
    cfg: Any,
    variants: Any,
    records: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    title: str,
    settings: dict[str, Any],
    notes: list[str],
    plots: list[str],
    names: list[str],
    stats: StudyStats,
) -> str | None:
    """``report.html`` (:mod:`yoloattn.experiments.html_report`); its name, or None if it failed."""
    try:
        from yoloattn.experiments.html_report import write_report
        from yoloattn.experiments.report_data import build_report

        per_class = {v.name: stats.per_class[v.name] for v in variants if v.name in stats.per_class}
        data = build_report(
            root,
            cfg,
            variants,
            records,
            rows,
            title=title,
            settings=settings_lines(settings),
            notes=notes,
            plots=plots,
            per_class=per_class_cells(names, per_class) if per_class else None,
            n_images=int(getattr(cfg, "report_images", 3)),
        )
        return write_report(root / "report.html", data).name
    except Exception as e:  # the report is a view of the study: it must never lose the summary
        LOGGER.warning("could not write report.html: %s", e)
        return None


def write_summary(
    root: Path,
    cfg: Any,
    variants: Any,
    records: list[dict[str, Any]],
    arch: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Write ``summary.md``, ``summary.csv``, ``summary.json``, ``per_class.csv``, the plots and
    ``report.html``."""
    if arch is None:
        arch = architecture_figures(cfg, variants)
    stats = study_statistics(variants, records, getattr(cfg, "n_resamples", 1000))
    rows = summarise(variants, records, arch, stats)
    settings = _settings(root, cfg, variants, stats)
    title = _title(cfg, settings)
    write_csv(root / "summary.csv", rows)
    names: list[str] = []
    if stats.per_class:
        names = _class_names(cfg, len(next(iter(stats.per_class.values()))))
        per_class = {v.name: stats.per_class[v.name] for v in variants if v.name in stats.per_class}
        write_per_class_csv(root / "per_class.csv", names, per_class)
    try:
        plots = draw_plots(root, rows, title)
    except Exception as e:
        LOGGER.warning("could not draw plots: %s", e)
        plots = []
    try:
        from yoloattn.experiments.report_data import training_curves

        if draw_curves(root, training_curves(variants, records), title):
            plots.append("curves.png")
    except Exception as e:
        LOGGER.warning("could not draw the training curves: %s", e)
    if stats.boot:
        method = (
            f"Δ is variant − baseline, paired by seed; its 95 % interval is the percentile interval of "
            f"a paired hierarchical bootstrap ({stats.n_resamples} resamples: seeds, then validation "
            "images, with replacement; mAP recomputed exactly). Verdict: `better`/`worse` when the "
            "Holm-adjusted bootstrap p-value over the variants is below 0.05, else `no significant "
            "difference`."
        )
    else:
        method = (
            "Δ is variant − baseline, paired by seed (95 % t interval; verdict from a two-sided paired "
            "t-test at 0.05): no match records, so no bootstrap."
        )
    mde = (
        stats.mde_line
        or "Minimum detectable effect: not available (needs a baseline, a variant and match records)."
    )
    md = to_markdown(rows)
    notes = [
        f"**{mde}**",
        method + f" Latency: CPU, batch 1, {settings['fingerprint'].get('imgsz')} px, median of "
        "interleaved runs. `mAP50-95 @0`: before the first step (identity insertion starts level).",
    ]
    if stats.missing:
        notes.append(f"Runs without match records (t-test used): {', '.join(stats.missing)}.")
    report = _write_html(root, cfg, variants, records, rows, title, settings, notes, plots, names, stats)
    text = [
        f"# Ablation `{cfg.name}`: {title}",
        "",
        *(
            [f"The whole study on one page (plots, training curves, heatmaps): [{report}]({report})", ""]
            if report
            else []
        ),
        *settings_lines(settings),
        "",
        md,
        "",
        notes[0],
        "",
        notes[1],
    ]
    if stats.missing:
        text += ["", notes[2]]
    if stats.per_class:
        text += ["", "## Per-class AP50-95 (mean over seeds)", "", per_class_markdown(names, per_class)]
    if plots:
        text += ["", "## Plots", ""] + [f"- `{p}`: {PLOTS[p]}" for p in plots]
    (root / "summary.md").write_text("\n".join(text) + "\n")
    summary = {
        "title": title,
        "settings": settings,
        "statistics": {
            "method": "bootstrap" if stats.boot else "t-test",
            "n_resamples": stats.n_resamples if stats.boot else None,
            "alpha": 0.05,
            "correction": "holm" if stats.boot else None,
            "mde_mAP50-95": _jsonable(stats.mde),
            "mde_line": stats.mde_line or None,
            "mAP50": {
                n: {
                    "delta": d.delta,
                    "ci": [d.ci_low, d.ci_high],
                    "p": d.p_value,
                    "p_holm": d.p_holm,
                    "verdict": d.verdict,
                }
                for n, d in stats.decisions50.items()
            },
        },
        "dataset": {
            "train_images": settings["fingerprint"]["data"].get("train_images"),
            "val_images": stats.n_images,
            "val_instances": stats.n_instances,
        },
        "rows": [{k: _jsonable(v) for k, v in r.items()} for r in rows],
        "per_class_ap50_95": {
            "classes": names,
            **{k: [_jsonable(x) for x in v] for k, v in stats.per_class.items()},
        },
        "disk_bytes": settings["disk_bytes"],
        "plots": plots,
        "report": report,
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(md)
    if stats.mde_line:
        print(stats.mde_line)
    return rows
