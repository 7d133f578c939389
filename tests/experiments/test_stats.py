import dataclasses
import math

import numpy as np
import pytest

from yoloattn.engine.records import MatchRecords, map_from_records, simulate_records
from yoloattn.experiments.bootstrap import (
    DeltaEstimate,
    PairedBootstrap,
    bootstrap_maps,
    bootstrap_p_value,
    bootstrap_study,
    paired_bootstrap,
    resample_plan,
)
from yoloattn.experiments.stats import (
    decide,
    holm,
    mean_std,
    minimum_detectable_effect,
    paired_compare,
    pooled_se,
    t_cdf,
    t_ppf,
)


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


# --------------------------------------------------------------------------------------------
# the paired hierarchical bootstrap, Holm, MDE
# --------------------------------------------------------------------------------------------
def _study(n_seeds, n_images, nc, qualities, seed=0):
    """Runs sharing one validation set: ``{quality: [records per seed]}``."""
    rng = np.random.default_rng(seed)
    ref = simulate_records(n_images, nc, rng=rng)
    labels = (ref.target_cls, ref.target_img)
    return [
        [simulate_records(n_images, nc, rng=rng, labels=labels, detect_rate=q) for _ in range(n_seeds)]
        for q in qualities
    ]


def _brute_force(base, variant, n_resamples, seed):
    """Obviously correct and slow: the same draws, map_from_records per run and resample."""
    n_seeds = len(base)
    counts, weights = resample_plan(n_seeds, base[0].n_images, n_resamples, seed)
    dist = np.zeros((n_resamples, 2))
    for i in range(n_resamples):
        for k in range(n_seeds):
            if counts[i, k]:
                d = np.subtract(
                    map_from_records(variant[k], weights[i])[:2], map_from_records(base[k], weights[i])[:2]
                )
                dist[i] += counts[i, k] * d / n_seeds
    obs = np.mean(
        [np.subtract(map_from_records(v)[:2], map_from_records(b)[:2]) for b, v in zip(base, variant)], 0
    )
    return obs, dist


def test_resample_plan_draws_with_replacement_deterministically():
    counts, weights = resample_plan(3, 20, 50, seed=7)
    assert counts.shape == (50, 3) and weights.shape == (50, 20)
    assert (counts.sum(1) == 3).all() and (weights.sum(1) == 20).all()
    assert (counts.max(1) > 1).any() and (weights == 0).any()  # with replacement
    c2, w2 = resample_plan(3, 20, 50, seed=7)
    assert np.array_equal(counts, c2) and np.array_equal(weights, w2)
    assert not np.array_equal(weights, resample_plan(3, 20, 50, seed=8)[1])
    assert (resample_plan(1, 5, 10)[0] == 1).all()  # one seed: always drawn


@pytest.mark.parametrize("end_recall_one", [True, False])
def test_vectorised_map_equals_map_from_records(end_recall_one):
    rng = np.random.default_rng(0)
    for seed, n_images, nc in [(0, 30, 3), (1, 80, 12), (2, 200, 40)]:
        rec = dataclasses.replace(simulate_records(n_images, nc, rng=seed), end_recall_one=end_recall_one)
        w = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=15)
        w[0] = 1
        w[1] = 0
        w[2, : n_images // 2] = 0  # whole classes vanish
        fast = bootstrap_maps(rec, w)
        ref = np.array([map_from_records(rec, wi)[:2] for wi in w])
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)


def test_vectorised_map_edge_cases():
    rec = simulate_records(40, 5, rng=4)
    no_tp = dataclasses.replace(rec, tp=np.zeros_like(rec.tp))  # nothing matched
    no_pred = MatchRecords(
        np.zeros((0, 10), bool), np.zeros(0), np.zeros(0), np.zeros(0), rec.target_cls, rec.target_img, 40, 5
    )
    one_class_unpredicted = dataclasses.replace(rec, tp=rec.tp & (rec.pred_cls != 0)[:, None])
    w = np.random.default_rng(1).multinomial(40, np.full(40, 1 / 40), size=6)
    for r in (no_tp, no_pred, one_class_unpredicted):
        ref = np.array([map_from_records(r, wi)[:2] for wi in w])
        np.testing.assert_allclose(bootstrap_maps(r, w), ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="integers"):
        bootstrap_maps(rec, np.full((1, 40), 0.5))


@pytest.mark.parametrize("n_seeds", [1, 2, 3])
def test_paired_bootstrap_matches_brute_force(n_seeds):
    base, variant = _study(n_seeds, 25, 4, [0.7, 0.75], seed=n_seeds)
    res = paired_bootstrap(base, variant, n_resamples=40, seed=3)
    obs, dist = _brute_force(base, variant, 40, seed=3)
    for j, d in enumerate((res.map50, res.map)):
        np.testing.assert_allclose(d.resamples, dist[:, j], rtol=0, atol=1e-12)
        assert d.estimate == pytest.approx(obs[j], abs=1e-12)
        lo, hi = np.percentile(dist[:, j], [2.5, 97.5])
        assert (d.ci_low, d.ci_high) == pytest.approx((lo, hi), abs=1e-12)
        assert d.se == pytest.approx(dist[:, j].std(ddof=1), abs=1e-12)
        assert d.p_value == pytest.approx(bootstrap_p_value(dist[:, j]))
    assert (res.n_seeds, res.n_images, res.n_resamples, res.seed) == (n_seeds, 25, 40, 3)


def test_bootstrap_study_equals_paired_bootstrap_and_is_deterministic():
    base, v1, v2 = _study(2, 30, 5, [0.7, 0.6, 0.8], seed=11)
    study = bootstrap_study(base, {"a": v1, "b": v2}, n_resamples=60, seed=5)
    again = bootstrap_study(base, {"a": v1, "b": v2}, n_resamples=60, seed=5, workers=2)
    for name, v in (("a", v1), ("b", v2)):
        single = paired_bootstrap(base, v, n_resamples=60, seed=5)
        assert np.array_equal(study[name].map.resamples, single.map.resamples)
        assert np.array_equal(again[name].map50.resamples, single.map50.resamples)
    other = bootstrap_study(base, {"a": v1}, n_resamples=60, seed=6)
    assert not np.array_equal(other["a"].map.resamples, study["a"].map.resamples)


def test_identical_runs_give_zero_delta_and_clear_effects_are_found():
    (base,) = _study(2, 60, 3, [0.6], seed=2)
    same = paired_bootstrap(base, base, n_resamples=50)
    assert same.map.estimate == 0.0 and (same.map.resamples == 0).all() and same.map.p_value == 1.0
    base, better = _study(2, 150, 3, [0.5, 0.95], seed=4)
    res = paired_bootstrap(base, better, n_resamples=200)
    assert res.map.estimate > 0 and res.map.ci_low > 0 and res.map50.ci_low > 0
    assert res.map.p_value == pytest.approx(1 / 201)
    assert decide({"better": res})["better"].verdict == "better"
    assert decide({"worse": paired_bootstrap(better, base, n_resamples=200)})["worse"].verdict == "worse"


def test_bootstrap_checks_its_inputs():
    base, variant = _study(2, 20, 3, [0.7, 0.7], seed=1)
    with pytest.raises(ValueError, match="paired by seed"):
        paired_bootstrap(base, variant[:1], n_resamples=5)
    (elsewhere,) = _study(2, 20, 3, [0.7], seed=9)  # other labels
    with pytest.raises(ValueError, match="same validation images"):
        paired_bootstrap(base, elsewhere, n_resamples=5)


def test_bootstrap_p_value():
    assert bootstrap_p_value(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(0.5)
    assert bootstrap_p_value(np.arange(1.0, 10.0)) == pytest.approx(0.1)  # floor 1/(R+1)
    assert bootstrap_p_value(np.zeros(5)) == 1.0


def test_holm_worked_example():
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]).tolist() == [1.0, 1.0]  # capped at 1, monotone
    assert holm([0.02]).tolist() == [0.02]
    out = holm([0.01, math.nan, 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def _fake(p, est):
    d = DeltaEstimate("mAP50-95", est, est - 0.01, est + 0.01, 0.005, p, np.zeros(3))
    return PairedBootstrap(3, 100, 3, 0, d, d)


def test_decide_uses_holm_adjusted_p_values():
    dec = decide({"a": _fake(0.01, 0.02), "b": _fake(0.04, -0.02), "c": _fake(0.03, 0.01)})
    assert dec["a"].verdict == "better" and dec["a"].p_holm == pytest.approx(0.03)
    # raw p < 0.05 but Holm-adjusted 0.06: not significant
    assert dec["b"].verdict == dec["c"].verdict == "no significant difference"
    assert dec["b"].p_holm == pytest.approx(0.06) and dec["b"].p_value == 0.04


def test_minimum_detectable_effect_worked_example():
    mde, sentence = minimum_detectable_effect(0.01)
    # (z_0.975 + z_0.8) * SE = (1.959964 + 0.841621) * 0.01
    assert mde == pytest.approx(0.02801585, abs=1e-7)
    assert "0.0280 mAP50-95" in sentence and "cannot be told from noise" in sentence
    mde2, s2 = minimum_detectable_effect([0.01, 0.02], n_seeds=3, n_images=500, metric="mAP50")
    assert mde2 == pytest.approx(2.801585 * math.sqrt((0.01**2 + 0.02**2) / 2), rel=1e-6)
    assert s2.startswith("With 3 seed(s) and 500 images") and "mAP50 " in s2
    assert minimum_detectable_effect(0.01, alpha=0.01, power=0.9)[0] == pytest.approx(
        (2.5758293 + 1.2815516) * 0.01, abs=1e-7
    )
    assert pooled_se([_fake(0.5, 0.0), _fake(0.5, 0.0)]) == pytest.approx(0.005)
    with pytest.raises(ValueError):
        minimum_detectable_effect([])
