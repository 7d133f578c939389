"""Cost of every attention module at C=256, H=W=40, batch 8 on the CPU.

Prints one table: forward latency (median over interleaved repetitions, measured in one
process together with an identity baseline), the overhead over identity, parameters and
GFLOPs (FlopCounterMode). For modules that timm also provides, the latency ratio ours/timm is
measured in the same run.

Usage: python benchmarks/attention_overhead.py [--reps 15] [--threads 2] [--keys se,cbam]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from yoloattn.attention import create_attention, list_attention

C, H, W, N = 256, 40, 40, 8


def timm_equivalents() -> dict[str, nn.Module]:
    try:
        from timm import layers as tl
    except ImportError:
        return {}
    out: dict[str, nn.Module] = {}
    makers = {
        "se": lambda: tl.SEModule(C, rd_ratio=1 / 16),
        "eca": lambda: tl.EcaModule(C),
        "cbam": lambda: __import__("timm.layers.cbam", fromlist=["CbamModule"]).CbamModule(
            C, rd_ratio=1 / 16
        ),
        "gc": lambda: tl.GlobalContext(C),
        "nonlocal": lambda: tl.NonLocalAttn(C),
        "sk": lambda: tl.SelectiveKernel(C, C),
    }
    for k, f in makers.items():
        try:
            out[k] = f().eval()
        except Exception:  # a timm version without that layer
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keys", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    infos = [i for i in list_attention() if not args.keys or i.key in args.keys.split(",")]
    x = torch.randn(N, C, H, W)
    models: dict[str, tuple[nn.Module, torch.Tensor]] = {"identity": (nn.Identity(), x)}
    for i in infos:
        size = i.fixed_size if i.size_dependent else (H, W)
        models[i.key] = (create_attention(i.key, C).eval(), torch.randn(N, C, *size))
    timm = timm_equivalents()
    for k, m in timm.items():
        if k in models:
            models[f"timm:{k}"] = (m, x)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m, inp in models.values():
            m(inp)
        for _ in range(args.reps):
            for k, (m, inp) in models.items():
                t = time.perf_counter()
                m(inp)
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    base = med["identity"]
    print(f"CPU, {args.threads} threads, input {N}x{C}x{H}x{W}, median of {args.reps} interleaved reps")
    print(f"{'module':<12}{'params':>12}{'GFLOPs':>10}{'ms':>10}{'ms - id':>10}{'ours/timm':>11}")
    for i in infos:
        m, inp = models[i.key]
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            m(inp)
        g = fc.get_total_flops() / 1e9
        ratio = f"{med[i.key] / med['timm:' + i.key]:.2f}" if f"timm:{i.key}" in med else ""
        note = "*" if i.size_dependent else ""
        print(
            f"{i.key + note:<12}{sum(p.numel() for p in m.parameters()):>12,}{g:>10.3f}{med[i.key]:>10.2f}"
            f"{med[i.key] - base:>10.2f}{ratio:>11}"
        )
    print(f"identity baseline: {base:.3f} ms; * = measured at the module's fixed size")
    print(
        "timm configs as close as timm allows; nonlocal: timm has no 2x2 sub-sampling of phi/g (ours "
        "follows the paper's official code), sk: timm's SelectiveKernel defaults (split input, rd 1/16)"
    )


if __name__ == "__main__":
    main()
