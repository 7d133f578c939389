"""Statistics for ablations: paired seed comparisons (t-test), Holm verdicts, MDE.

A variant and the baseline trained with the same seed see the same data order and the same
initialisation of the shared layers, so runs are *paired* by seed index; all runs are evaluated
on the same validation images, so they are also paired by image.

* :func:`paired_compare` (seed level only): mean paired difference of a per-run number, its 95 %
  Student-t interval and a two-sided paired t-test ("better"/"worse" when p < 0.05; one seed gives
  no verdict).
* the paired hierarchical bootstrap of Δ mAP from match records (seeds *and* images) is
  :mod:`yoloattn.experiments.bootstrap` (:func:`~yoloattn.experiments.bootstrap.bootstrap_study`).
* :func:`holm` and :func:`decide`: Holm–Bonferroni over the variants of a study, and the verdict
  ("better"/"worse" only if the Holm-adjusted bootstrap p-value is below ``alpha``).
* :func:`minimum_detectable_effect`: the smallest Δ these seeds and images can tell from noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from yoloattn.experiments.bootstrap import PairedBootstrap

__all__ = [
    "PairedComparison",
    "paired_compare",
    "mean_std",
    "t_cdf",
    "t_ppf",
    "Decision",
    "holm",
    "decide",
    "pooled_se",
    "minimum_detectable_effect",
]


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


# --------------------------------------------------------------------------------------------
# multiple comparisons and verdicts
# --------------------------------------------------------------------------------------------
def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values (same order as given).

    With the ``m`` p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``:
    monotone in the sorted order and capped at 1. Rejecting where ``p_adj < alpha`` controls the
    family-wise error rate at ``alpha``. NaN entries stay NaN and do not count in ``m``.

    >>> holm([0.01, 0.04, 0.03, 0.005]).round(6).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    if (p[ok] < 0).any() or (p[ok] > 1).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


@dataclass(frozen=True)
class Decision:
    """The verdict on one variant (see :func:`decide`)."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float  #: bootstrap p-value, unadjusted
    p_holm: float  #: Holm-adjusted over the study's variants
    verdict: str  #: "better", "worse" or "no significant difference"


def decide(
    results: Mapping[str, PairedBootstrap], alpha: float = 0.05, metric: str = "map"
) -> dict[str, Decision]:
    """Verdicts for the variants of one study, Holm-corrected over the variants.

    A variant is "better" (or "worse") only if its Holm-adjusted bootstrap p-value is below
    ``alpha`` (family-wise error rate ``alpha`` over all variants compared with the baseline),
    else "no significant difference". The choice is the p-value, not an interval: the reported
    interval is the plain 95 % percentile one, so with several variants it may exclude 0 while
    the verdict, stricter by design, says "no significant difference".
    """
    names = list(results)
    est = [results[n].get(metric) for n in names]
    adj = holm([e.p_value for e in est])
    out = {}
    for n, e, pa in zip(names, est, adj):
        if pa < alpha and e.estimate > 0:
            verdict = "better"
        elif pa < alpha and e.estimate < 0:
            verdict = "worse"
        else:
            verdict = "no significant difference"
        out[n] = Decision(e.estimate, e.ci_low, e.ci_high, e.p_value, float(pa), verdict)
    return out


# --------------------------------------------------------------------------------------------
# minimum detectable effect
# --------------------------------------------------------------------------------------------
def pooled_se(
    results: Mapping[str, PairedBootstrap] | Sequence[PairedBootstrap], metric: str = "map"
) -> float:
    """Root mean square of the variants' bootstrap standard errors of Δ (a null-noise estimate)."""
    items = list(results.values()) if isinstance(results, Mapping) else list(results)
    se = np.array([r.get(metric).se for r in items], dtype=np.float64)
    return float(np.sqrt(np.mean(se**2))) if se.size else math.nan


def minimum_detectable_effect(
    se: float | Sequence[float],
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    metric: str = "mAP50-95",
    n_seeds: int | None = None,
    n_images: int | None = None,
) -> tuple[float, str]:
    """Smallest true Δ a two-sided test at ``alpha`` detects with probability ``power``.

    ``MDE = (z_{1 - alpha/2} + z_{power}) * SE_Δ``, with ``z`` the standard normal quantiles:
    for ``alpha = 0.05`` and ``power = 0.8``, ``(1.960 + 0.842) * SE = 2.80 * SE``. ``SE_Δ`` is the
    standard error of Δ under the null, i.e. the noise of seeds and images alone; pass the
    bootstrap SE of Δ (a sequence is pooled as the root mean square, e.g. over a study's
    variants, see :func:`pooled_se`; the SE barely depends on the true effect). Returns the MDE
    and a one-line sentence.

    >>> round(minimum_detectable_effect(0.01)[0], 5)
    0.02802
    """
    s = np.asarray(se, dtype=np.float64).ravel()
    if s.size == 0 or np.isnan(s).any() or (s < 0).any():
        raise ValueError("se must be one or more non-negative numbers")
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError("alpha and power must lie in (0, 1)")
    se_f = float(np.sqrt(np.mean(s**2)))
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0) + NormalDist().inv_cdf(power)
    mde = z * se_f
    where = "these seeds and images"
    if n_seeds is not None and n_images is not None:
        where = f"{n_seeds} seed(s) and {n_images} images"
    sentence = (
        f"With {where}, differences below {mde:.4f} {metric} cannot be told from noise "
        f"(MDE = {z:.2f} x SE {se_f:.4f}; two-sided alpha {alpha:g}, power {power:g})."
    )
    return mde, sentence
