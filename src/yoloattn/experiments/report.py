"""Summary of an ablation: table (CSV + Markdown) and plots.

Per variant: parameters, GFLOPs at the training size, CPU latency (median over interleaved
repetitions measured in one process, so variants are comparable), mAP50 and mAP50-95 (YOLO-style
and COCO-standard) as mean +/- std over seeds, the paired difference to the baseline with a
95 % confidence interval, and a verdict from a paired t-test over seeds.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yoloattn.experiments.stats import mean_std, paired_compare

LOGGER = logging.getLogger("yoloattn.compare")

__all__ = ["write_summary", "measure_latency", "summarise"]

COLUMNS = [
    "variant",
    "params",
    "gflops",
    "latency_ms",
    "seeds",
    "failed",
    "mAP50_mean",
    "mAP50_std",
    "mAP50-95_mean",
    "mAP50-95_std",
    "coco_AP_mean",
    "coco_AP_std",
    "insert",
    "mAP50@0_mean",
    "mAP50-95@0_mean",
    "engagement_mean",
    "gate_abs_mean",
    "d_mAP50-95",
    "d_mAP50-95_ci_low",
    "d_mAP50-95_ci_high",
    "p_value",
    "verdict",
    "errors",
]


def measure_latency(
    models: dict[str, torch.nn.Module], imgsz: int, runs: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median CPU forward latency (ms, batch 1) per model, measured interleaved in one process."""
    x = torch.zeros(1, 3, imgsz, imgsz)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m.eval()
            for _ in range(warmup):
                m(x)
        for _ in range(runs):
            for k, m in models.items():
                t = time.perf_counter()
                m(x)
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


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


def summarise(
    variants, records: list[dict[str, Any]], arch: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """One row per variant (see COLUMNS); ``arch`` maps variant -> params/gflops/latency."""
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
        if v.name != "baseline":
            seeds = sorted(set(ok) & set(base_ok))
            pc = paired_compare(
                [_metric(ok[s], "map") for s in seeds], [_metric(base_ok[s], "map") for s in seeds]
            )
            row.update(
                {
                    "d_mAP50-95": pc.mean_diff,
                    "d_mAP50-95_ci_low": pc.ci_low,
                    "d_mAP50-95_ci_high": pc.ci_high,
                    "p_value": pc.p_value,
                    "verdict": pc.verdict,
                }
            )
        else:
            row.update({"d_mAP50-95": 0.0, "verdict": "reference"})
        rows.append(row)
    return rows


def _fmt(v: Any, nd: int = 4) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.{nd}f}"
    return "" if v is None else str(v)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = [
        "variant",
        "params",
        "GFLOPs",
        "latency ms",
        "seeds",
        "mAP50",
        "mAP50-95",
        "COCO AP",
        "insert",
        "mAP50-95 @0",
        "engagement",
        "Δ mAP50-95 [95% CI]",
        "verdict",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        ci = ""
        if r["variant"] != "baseline" and not math.isnan(r.get("d_mAP50-95", math.nan)):
            lo, hi = r.get("d_mAP50-95_ci_low", math.nan), r.get("d_mAP50-95_ci_high", math.nan)
            ci = f"{r['d_mAP50-95']:+.4f}" + ("" if math.isnan(lo) else f" [{lo:+.4f}, {hi:+.4f}]")
        seeds = f"{r['seeds']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    r["variant"],
                    f"{r.get('params', 0):,}",
                    _fmt(r.get("gflops"), 2),
                    _fmt(r.get("latency_ms"), 1),
                    seeds,
                    f"{_fmt(r['mAP50_mean'])} ± {_fmt(r['mAP50_std'])}",
                    f"{_fmt(r['mAP50-95_mean'])} ± {_fmt(r['mAP50-95_std'])}",
                    f"{_fmt(r['coco_AP_mean'])} ± {_fmt(r['coco_AP_std'])}",
                    r.get("insert") or "",
                    _fmt(r.get("mAP50-95@0_mean")),
                    _fmt(r.get("engagement_mean"), 3),
                    ci,
                    r.get("verdict", ""),
                ]
            )
            + " |"
        )
    errs = [r for r in rows if r["errors"]]
    for r in errs:
        lines.append(f"\n**{r['variant']} failed:** {r['errors']}")
    return "\n".join(lines)


def _plots(root: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for a, key, title in ((ax[0], "mAP50", "mAP@0.5"), (ax[1], "mAP50-95", "mAP@0.5:0.95")):
        means = [r[f"{key}_mean"] for r in rows]
        stds = [0.0 if math.isnan(r[f"{key}_std"]) else r[f"{key}_std"] for r in rows]
        a.bar(range(len(rows)), means, yerr=stds, capsize=4, color=["grey"] + ["C0"] * (len(rows) - 1))
        a.set_xticks(range(len(rows)), names, rotation=30, ha="right")
        a.set_title(f"{title} (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(root / "map_bar.png", dpi=120)
    plt.close(fig)
    for xkey, label, fname in (
        ("gflops", "GFLOPs", "map_vs_gflops.png"),
        ("latency_ms", "CPU latency (ms)", "map_vs_latency.png"),
    ):
        if not all(isinstance(r.get(xkey), float) for r in rows):
            continue
        fig, a = plt.subplots(figsize=(5, 4))
        for r in rows:
            a.errorbar(
                r[xkey],
                r["mAP50-95_mean"],
                yerr=0 if math.isnan(r["mAP50-95_std"]) else r["mAP50-95_std"],
                fmt="o",
                capsize=3,
            )
            a.annotate(
                r["variant"],
                (r[xkey], r["mAP50-95_mean"]),
                fontsize=8,
                xytext=(3, 3),
                textcoords="offset points",
            )
        a.set_xlabel(label)
        a.set_ylabel("mAP@0.5:0.95")
        fig.tight_layout()
        fig.savefig(root / fname, dpi=120)
        plt.close(fig)


def architecture_figures(cfg, variants) -> dict[str, dict[str, float]]:
    """Params, GFLOPs at the training size and interleaved CPU latency for every variant."""
    from yoloattn.data import load_dataset_config
    from yoloattn.models.detector import build_model
    from yoloattn.models.profile import count_flops

    nc = load_dataset_config(cfg.data).nc
    imgsz = int(cfg.train.get("imgsz", 640))
    models, out = {}, {}
    for v in variants:
        try:
            m = build_model(cfg.model, nc=nc, attention=v.attention).eval()
        except Exception as e:  # reported through the run errors
            LOGGER.warning("cannot build %s: %s", v.name, e)
            continue
        models[v.name] = m
        out[v.name] = {
            "params": sum(p.numel() for p in m.parameters()),
            "gflops": count_flops(m, torch.zeros(1, 3, imgsz, imgsz)),
        }
    if not cfg.skip_latency and models:
        for k, ms in measure_latency(models, imgsz, cfg.latency_runs).items():  # type: ignore[arg-type]
            out[k]["latency_ms"] = ms
    return out


def write_summary(root: Path, cfg, variants, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    arch = architecture_figures(cfg, variants)
    rows = summarise(variants, records, arch)
    with (root / "summary.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(
                {k: _fmt(r.get(k), 6) if isinstance(r.get(k), float) else r.get(k, "") for k in COLUMNS}
            )
    md = to_markdown(rows)
    header = (
        f"# Ablation `{cfg.name}`: {cfg.model} on {cfg.data}\n\n"
        f"{cfg.seeds} seed(s) per variant; Δ is paired by seed against the baseline "
        f"(95% t interval; verdict from a two-sided paired t-test at 0.05). Latency: CPU, batch 1, "
        f"{cfg.train.get('imgsz', 640)} px, median of interleaved runs.\n\n"
    )
    (root / "summary.md").write_text(header + md + "\n")
    try:
        _plots(root, rows)
    except Exception as e:
        LOGGER.warning("could not draw plots: %s", e)
    print(md)
    return rows
