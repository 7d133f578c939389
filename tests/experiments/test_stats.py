import math

import numpy as np
import pytest

from yoloattn.experiments.stats import mean_std, paired_compare, t_cdf, t_ppf


@pytest.mark.parametrize("df,q", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)])
def test_t_quantiles_match_tables(df, q):
    assert t_ppf(0.975, df) == pytest.approx(q, abs=1e-3)
    assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-5)


def test_mean_std_known_values():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


def test_clear_difference_is_better_or_worse():
    base = [0.30, 0.31, 0.29, 0.30, 0.32]
    better = [b + 0.05 + e for b, e in zip(base, [0.001, -0.002, 0.0, 0.002, -0.001])]
    pc = paired_compare(better, base)
    assert pc.verdict == "better" and pc.ci_low > 0 and pc.p_value < 0.001
    assert pc.mean_diff == pytest.approx(0.05, abs=1e-3)
    assert paired_compare(base, better).verdict == "worse"


def test_noise_is_no_significant_difference():
    rng = np.random.default_rng(0)
    base = list(rng.normal(0.3, 0.01, 3))
    other = [b + d for b, d in zip(base, [0.01, -0.012, 0.003])]
    pc = paired_compare(other, base)
    assert pc.verdict == "no significant difference"
    assert pc.ci_low < 0 < pc.ci_high
    # the interval is mean +- t(0.975, 2) * sd / sqrt(3)
    d = np.array(other) - np.array(base)
    half = 4.302653 * d.std(ddof=1) / math.sqrt(3)
    assert pc.ci_high - pc.mean_diff == pytest.approx(half, rel=1e-4)


def test_single_seed_gives_no_verdict_and_lengths_must_match():
    assert "2 seeds" in paired_compare([0.5], [0.4]).verdict
    with pytest.raises(ValueError, match="equal lengths"):
        paired_compare([0.1, 0.2], [0.1])
