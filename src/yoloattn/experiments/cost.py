"""The cost side of an ablation: parameters, GFLOPs and interleaved CPU latency per variant."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

LOGGER = logging.getLogger("yoloattn.compare")

__all__ = ["architecture_figures", "measure_latency"]


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


def architecture_figures(cfg, variants) -> dict[str, dict[str, float]]:
    """Params, GFLOPs at the training size and interleaved CPU latency for every variant."""
    from yoloattn.data import load_dataset_config
    from yoloattn.models.detector import build_model
    from yoloattn.models.profile import count_flops

    nc = load_dataset_config(cfg.data).nc
    imgsz = int(cfg.train.get("imgsz", 640))
    models: dict[str, torch.nn.Module] = {}
    out: dict[str, dict[str, float]] = {}
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
        for k, ms in measure_latency(models, imgsz, cfg.latency_runs).items():
            out[k]["latency_ms"] = ms
    return out
