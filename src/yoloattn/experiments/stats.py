"""Statistics for ablations over seeds: mean/std, paired differences, t confidence intervals.

A variant and the baseline trained with the same seed see the same data order and the same
initialisation of the shared layers, so results are *paired* by seed. The difference of a
variant to the baseline is summarised by the mean paired difference, its 95 % confidence
interval from Student's t distribution, and a two-sided paired t-test. The verdict is
"better"/"worse" when the interval excludes 0 (p < 0.05), else "no significant difference".
With one seed no interval exists and the verdict says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PairedComparison", "paired_compare", "mean_std", "t_cdf", "t_ppf"]


def _t_pdf(x: np.ndarray, df: float) -> np.ndarray:
    c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(c - (df + 1) / 2 * np.log1p(x * x / df))


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t with ``df`` degrees of freedom (Simpson integration of the density)."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    a = abs(t)
    # substitution x = a*u keeps the grid dense where the density lives
    n = 4000
    x = np.linspace(0.0, a, n + 1)
    y = _t_pdf(x, df)
    h = a / n
    integral = h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())
    half = 0.5 + integral
    return float(half if t >= 0 else 1.0 - half)


def t_ppf(q: float, df: float) -> float:
    """Inverse CDF of Student's t (bisection on :func:`t_cdf`)."""
    if not 0.0 < q < 1.0:
        raise ValueError("q must be in (0, 1)")
    lo, hi = -1e3, 1e3
    for _ in range(100):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


@dataclass
class PairedComparison:
    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str


def paired_compare(variant: list[float], baseline: list[float], alpha: float = 0.05) -> PairedComparison:
    """Paired t comparison of ``variant`` against ``baseline`` (same seeds, same order)."""
    if len(variant) != len(baseline):
        raise ValueError(f"paired comparison needs equal lengths, got {len(variant)} and {len(baseline)}")
    d = np.asarray(variant, dtype=float) - np.asarray(baseline, dtype=float)
    n = int(d.size)
    if n == 0:
        return PairedComparison(0, math.nan, math.nan, math.nan, math.nan, "no data")
    mean = float(d.mean())
    if n < 2:
        return PairedComparison(n, mean, math.nan, math.nan, math.nan, "need >= 2 seeds for a verdict")
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    tcrit = t_ppf(1 - alpha / 2, n - 1)
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        lo = hi = mean
    else:
        t = mean / se
        p = 2 * (1 - t_cdf(abs(t), n - 1))
        lo, hi = mean - tcrit * se, mean + tcrit * se
    if p < alpha and mean > 0:
        verdict = "better"
    elif p < alpha and mean < 0:
        verdict = "worse"
    else:
        verdict = "no significant difference"
    return PairedComparison(n, mean, lo, hi, max(0.0, min(1.0, p)), verdict)
