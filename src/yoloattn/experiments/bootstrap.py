"""Paired hierarchical bootstrap of Δ mAP (variant − baseline) from the runs' match records.

Runs of a variant and the baseline are paired by seed index and, being evaluated on the same
validation images, by image. :func:`paired_bootstrap` / :func:`bootstrap_study` resample seeds
with replacement and then validation images with replacement, recomputing mAP exactly
(YOLO-style 101-point AP, :class:`yoloattn.engine.records.MatchRecords`) with the drawn image
multiplicities; this works with one seed (image noise only). :func:`bootstrap_p_value` turns
the resampled Δ into a two-sided p-value. The verdicts (Holm) and the minimum detectable effect
built on these results live in :mod:`yoloattn.experiments.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from yoloattn.engine.records import MatchRecords

__all__ = [
    "DeltaEstimate",
    "PairedBootstrap",
    "resample_plan",
    "bootstrap_maps",
    "paired_bootstrap",
    "bootstrap_study",
    "bootstrap_p_value",
]


# --------------------------------------------------------------------------------------------
# paired hierarchical bootstrap of Δ mAP from match records
# --------------------------------------------------------------------------------------------
_X = np.linspace(0.0, 1.0, 101)  # the recall sample points of engine.metrics.compute_ap


def _trapezoid_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prefix sums of the trapezoid weights over ``_X``, and where a recall ``k/100`` is above ``x_k``.

    ``om0[k] = sum_{j<k} w_j`` and ``lam[k] = sum_{j<k} w_j (1 - x_j)`` with ``w`` the trapezoid
    weights, so ``np.trapezoid(y, _X) == sum_j w_j y_j`` (up to rounding). ``bump[k]`` is True
    where ``x_k < fl(k / 100)``: a recall of exactly ``k / 100`` then has ``k + 1`` samples below it.
    """
    d = np.diff(_X)
    w = np.zeros(_X.size)
    w[:-1] += d / 2
    w[1:] += d / 2
    om0 = np.concatenate(([0.0], np.cumsum(w)))
    lam = np.concatenate(([0.0], np.cumsum(w * (1.0 - _X))))
    bump = _X < np.arange(_X.size) / 100.0
    return om0, lam, bump


_OM0, _LAM, _BUMP = _trapezoid_tables()
_TW = np.diff(_OM0)  # the trapezoid weights
_CHUNK = 1 << 16  # elements (resamples x curve points) per work array: small enough for the cache


def _samples_below(u: np.ndarray) -> np.ndarray:
    """``K = #{j : x_j < T / n}`` (as float) from ``u = 100 T / n``, exactly, for integers ``T``, ``n``.

    ``u`` is one correctly rounded division of integers, so it is an integer exactly when
    ``T / n = k / 100``; then ``fl(T / n) == fl(k / 100)`` and ``_BUMP`` settles the comparison
    with ``x_k``. Otherwise ``T / n`` is at least ``1 / (100 n)`` away from every sample.
    """
    k = np.ceil(u)
    if _BUMP.any():  # not with numpy's linspace today; kept for exactness
        k += _BUMP[k.astype(np.intp)] & (k == u)
    return k


def _counts(cls: np.ndarray, img: np.ndarray, nc: int, n_img: int) -> np.ndarray:
    """``[nc, n_img]`` float matrix: how many entries of class ``c`` image ``i`` has."""
    return np.bincount(cls * n_img + img, minlength=nc * n_img).reshape(nc, n_img).astype(np.float64)


class _Curves:
    """The fixed structure of one run's precision-recall curves; resamples only change weights.

    YOLO AP (:func:`yoloattn.engine.metrics.compute_ap`) of one class at one IoU threshold is the
    trapezoid rule, over 101 recall samples ``x_j``, of the interpolated precision envelope. With
    predictions in confidence order and weighted cumulative counts, the envelope is constant,
    ``E_q = max_{q' >= q} precision(q')``, on the recall interval ``[T_before(q) / n,
    T_after(q) / n)`` that true positive ``q`` adds (a false positive never lifts the envelope
    where it is sampled), and falls linearly from the last precision to 0 beyond the last recall:

        AP = sum_q E_q (G(K(T_after(q))) - G(K(T_before(q)))) + tail

    with ``K(T) = #{j : x_j < T / n}`` and ``G(K) = sum_{j<K} w_j`` (trapezoid weights
    ``0.005, 0.01, ..., 0.01, 0.005``: ``G(K) = 0.01 K - 0.005 [K >= 1]``). So only true
    positives are points, no recall grid is searched, and predictions after a class's last true
    positive matter only through their total weight. Counts are integers (weights x 100, so that
    ``100 T / n`` is a single exact division); the running maximum runs on the bit patterns of the
    precisions (non-negative floats order like their bits), offset per curve so one pass serves
    all curves; dropping ``shift`` low mantissa bits for the offsets costs a relative 2**(shift-52).
    """

    def __init__(self, rec: MatchRecords) -> None:
        self.n_images = n_img = rec.n_images
        self.nt = nt = rec.tp.shape[1]
        self.end_recall_one = rec.end_recall_one
        classes = np.unique(rec.target_cls)
        self.nclass = nc = classes.size
        cmap = np.full(rec.nc, -1, np.int64)
        cmap[classes] = np.arange(nc)
        # labels and predictions per class and image (small dense matrices: products stay in BLAS)
        self.labels = _counts(cmap[rec.target_cls], rec.target_img, nc, n_img)
        pc = cmap[rec.pred_cls]
        keep = pc >= 0  # predictions of classes without labels are never scored
        conf, pc, img, tp = rec.conf[keep], pc[keep], rec.pred_img[keep], rec.tp[keep]
        self.preds100 = _counts(pc, img, nc, n_img) * 100.0
        order = np.argsort(-conf, kind="stable")  # ap_per_class's order ...
        order = order[np.argsort(pc[order], kind="stable")]  # ... grouped by class
        pc, img, tp = pc[order], img[order], tp[order]
        # head of each class: its predictions up to the last one that is a TP at any threshold
        cstart = np.searchsorted(pc, np.arange(nc))
        last = np.full(nc, -1, np.int64)
        tp_rows = np.flatnonzero(tp.any(1))
        np.maximum.at(last, pc[tp_rows], tp_rows)
        self.head_len = np.where(last >= 0, last - cstart + 1, 0)
        self.hstart = np.concatenate(([0], np.cumsum(self.head_len)[:-1])).astype(np.int64)
        head = np.arange(int(self.head_len.sum())) + np.repeat(cstart - self.hstart, self.head_len)
        self.head_img = img[head]
        tp_h, cls_h = tp[head], pc[head]
        # one point per TP; curves (class-major, then threshold) are contiguous runs of points
        h_idx, t_idx = np.nonzero(tp_h)
        seg = cls_h[h_idx] * nt + t_idx
        order = np.argsort(seg, kind="stable")  # within a curve: head order = confidence order
        h_idx, seg = h_idx[order], seg[order]
        self.n_points = n_pt = int(seg.size)
        self.pt_pos1 = h_idx + 1  # index into the head's cumulative sums (0 = before the head)
        self.pt_img = self.head_img[h_idx]
        self.pts_per_class = np.bincount(cls_h[h_idx], minlength=nc)
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]]) if n_pt else np.zeros(0, np.int64)
        self.seg_start = starts
        self.seg_len = np.diff(np.r_[starts, n_pt])
        self.seg_end = starts + self.seg_len - 1
        self.seg_cls = seg[starts] // nt
        self.seg_flat = (seg[starts] % nt) * nc + self.seg_cls  # index into [threshold, class]
        n_seg = int(starts.size)
        self.shift = max(0, int(np.ceil(np.log2(n_seg + 1))) - 1)
        seg_of_pt = np.repeat(np.arange(n_seg), self.seg_len)
        self.pt_off = (n_seg - seg_of_pt).astype(np.int64) << (62 - self.shift)

    def maps(self, w: np.ndarray) -> np.ndarray:
        """``[r, 2]`` (mAP@0.5, mAP@0.5:0.95) for integer image multiplicities ``w`` ``[r, n_images]``."""
        r = w.shape[0]
        out = np.zeros((r, 2))
        if self.nclass == 0 or r == 0:
            return out
        wi = np.ascontiguousarray(w, dtype=np.int64)
        rows = max(1, _CHUNK // max(self.n_points, self.head_img.size, self.nt * self.nclass))
        for lo in range(0, r, rows):
            out[lo : lo + rows] = self._maps(wi[lo : lo + rows])
        return out

    def _maps(self, w: np.ndarray) -> np.ndarray:
        r = w.shape[0]
        wf = w.astype(np.float64)
        n_lab = wf @ self.labels.T  # [r, C] weighted labels per class (exact integers)
        ap = np.zeros((r, self.nt * self.nclass))
        n_pos = np.maximum(n_lab, 1.0)  # a class without labels has no TP (and is not scored)
        if self.n_points:
            w100 = w * 100  # counts x 100: then 100 T / n is one exact division
            step, t_tot = self._steps(w100, n_pos)
            ap[:, self.seg_flat] = step + self._tail(t_tot, n_pos, wf @ self.preds100.T)
        ap3 = ap.reshape(r, self.nt, self.nclass)
        valid = n_lab > 0
        k = valid.sum(1)
        kk = np.maximum(k, 1)
        out = np.empty((r, 2))
        out[:, 0] = np.where(k > 0, (ap3[:, 0] * valid).sum(1) / kk, 0.0)
        out[:, 1] = np.where(k > 0, (ap3.mean(1) * valid).sum(1) / kk, 0.0)
        return out

    def _steps(self, w100: np.ndarray, n_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The envelope part of every curve's AP and its weighted TP total (x 100), ``[r, n_curves]``."""
        r = w100.shape[0]
        # weighted predictions of the class up to and including each TP (>= 1: a == 0 only where t == 0)
        ch = np.zeros((r, self.head_img.size + 1), np.int64)
        np.cumsum(np.take(w100, self.head_img, axis=1), axis=1, out=ch[:, 1:])
        ch[:, 1:] -= np.repeat(np.take(ch, self.hstart, axis=1), self.head_len, axis=1)
        chf = np.maximum(ch, 1).astype(np.float64)
        a = np.take(chf, self.pt_pos1, axis=1)
        # weighted TPs of the curve up to and including each TP
        t0 = np.zeros((r, self.n_points + 1), np.int64)
        np.cumsum(np.take(w100, self.pt_img, axis=1), axis=1, out=t0[:, 1:])
        t0[:, 1:] -= np.repeat(np.take(t0, self.seg_start, axis=1), self.seg_len, axis=1)
        t = t0[:, 1:].astype(np.float64)
        key = (t / a).view(np.int64)  # precision, as ordered bits
        key >>= self.shift
        key += self.pt_off
        env = np.maximum.accumulate(key[:, ::-1], axis=1)[:, ::-1]
        env -= self.pt_off
        env <<= self.shift
        e = env.view(np.float64)  # the precision envelope at each TP
        k = np.zeros((r, self.n_points + 1))
        k[:, 1:] = _samples_below(t / np.repeat(n_pos, self.pts_per_class, axis=1))
        dk = np.diff(k, axis=1)  # crosses curve boundaries: corrected below
        dk *= e
        e0 = np.take(e, self.seg_start, axis=1)
        step = np.add.reduceat(dk, self.seg_start, axis=1)
        step += e0 * np.take(k, self.seg_start, axis=1)  # a curve starts from K = 0
        step *= 0.01
        step -= 0.005 * e0
        return step, t[:, self.seg_end]

    def _tail(self, t_tot: np.ndarray, n_pos: np.ndarray, a_tot: np.ndarray) -> np.ndarray:
        """AP beyond the last recall: linear from the final precision down to the end sentinel."""
        p_f = t_tot / np.maximum(np.take(a_tot, self.seg_cls, axis=1), 1.0)
        n_seg = np.take(n_pos, self.seg_cls, axis=1)
        r_tot = (t_tot / 100) / n_seg
        k0 = _samples_below(t_tot / n_seg).astype(np.intp)
        if self.end_recall_one:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(r_tot < 1.0, p_f / (1.0 - r_tot) * (_LAM[-1] - _LAM[k0]), 0.0)
        # YOLOv7: the sentinel sits at last recall + 0.01, so at most two samples fall before it
        end = r_tot + 0.01
        k1 = np.searchsorted(_X, end, side="left")
        slope = (0.0 - p_f) / (end - r_tot)
        tail = np.zeros_like(p_f)
        for o in range(3):
            kk = np.minimum(k0 + o, _X.size - 1)
            tail += np.where(k0 + o < k1, _TW[kk] * (slope * (_X[kk] - r_tot) + p_f), 0.0)
        return tail


def _check_weights(w: np.ndarray, n_images: int) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != n_images:
        raise ValueError(f"weights must be [resamples, {n_images}], got {tuple(w.shape)}")
    if not np.isfinite(w).all() or (w < 0).any() or (w != np.round(w)).any():
        raise ValueError("bootstrap weights must be non-negative integers (image multiplicities)")
    return w


def bootstrap_maps(records: MatchRecords, weights: np.ndarray) -> np.ndarray:
    """``[R, 2]`` (mAP@0.5, mAP@0.5:0.95) of ``records`` under each row of ``weights`` ``[R, n_images]``.

    Row ``i`` equals ``map_from_records(records, weights[i])[:2]`` (to float rounding, ~1e-13), but
    all rows are computed at once, vectorised over resamples, classes and IoU thresholds
    (see ``_Curves``). Weights must be non-negative integers (image multiplicities).
    """
    w = _check_weights(weights, records.n_images)
    return _Curves(records).maps(w)


def resample_plan(
    n_seeds: int, n_images: int, n_resamples: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The draws of the hierarchical bootstrap: ``(seed_counts [R, n_seeds], image_weights [R, n_images])``.

    Resample ``i`` draws ``n_seeds`` seed indices with replacement (``seed_counts[i, k]``: how
    often seed ``k`` was drawn), then ``n_images`` validation images with replacement
    (``image_weights[i, j]``: how often image ``j`` was drawn). Deterministic for a given ``seed``.
    """
    if n_seeds < 1 or n_images < 1 or n_resamples < 1:
        raise ValueError(
            f"need n_seeds, n_images, n_resamples >= 1, got {n_seeds}, {n_images}, {n_resamples}"
        )
    rng = np.random.default_rng(seed)
    seed_draw = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    image_draw = rng.integers(0, n_images, size=(n_resamples, n_images))

    def counts(draw: np.ndarray, n: int) -> np.ndarray:
        rows = np.arange(draw.shape[0])[:, None] * n
        return np.bincount((rows + draw).ravel(), minlength=draw.shape[0] * n).reshape(draw.shape[0], n)

    return counts(seed_draw, n_seeds), counts(image_draw, n_images)


def bootstrap_p_value(resamples: np.ndarray) -> float:
    """Two-sided bootstrap p-value for Δ ≠ 0: ``2 min(P(Δ* <= 0), P(Δ* >= 0))`` in ``[1/(R+1), 1]``.

    This inverts the percentile interval: the ``1 - a`` percentile interval excludes 0 about
    when ``p < a``. The floor ``1 / (R + 1)`` says that ``R`` resamples cannot show a smaller p.
    """
    d = np.asarray(resamples, dtype=np.float64).ravel()
    if d.size == 0 or np.isnan(d).any():
        return math.nan
    p = 2.0 * min(float((d <= 0).mean()), float((d >= 0).mean()))
    return float(min(1.0, max(p, 1.0 / (d.size + 1))))


@dataclass(frozen=True, eq=False)
class DeltaEstimate:
    """Δ of one metric (variant − baseline, mean over seeds) with its bootstrap distribution."""

    metric: str  #: "mAP50" or "mAP50-95"
    estimate: float  #: observed Δ: mean over seeds of (variant − baseline) on all images
    ci_low: float  #: percentile interval at ``level``
    ci_high: float
    se: float  #: bootstrap standard error (std of ``resamples``, ddof=1)
    p_value: float  #: two-sided bootstrap p-value (:func:`bootstrap_p_value`), not adjusted
    resamples: np.ndarray  #: [R] the resample distribution Δ*
    level: float = 0.95

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of the resample distribution at ``level``."""
        if not 0.0 < level < 1.0:
            raise ValueError("level must be in (0, 1)")
        lo, hi = np.percentile(self.resamples, [50 * (1 - level), 50 * (1 + level)])
        return float(lo), float(hi)


@dataclass(frozen=True, eq=False)
class PairedBootstrap:
    """Result of :func:`paired_bootstrap`: Δ mAP@0.5 and Δ mAP@0.5:0.95 of one variant."""

    n_seeds: int
    n_images: int
    n_resamples: int
    seed: int
    map50: DeltaEstimate
    map: DeltaEstimate  #: mAP@0.5:0.95

    def get(self, metric: str) -> DeltaEstimate:
        """``"map50"``/``"mAP50"`` or ``"map"``/``"mAP50-95"``."""
        if metric in ("map50", "mAP50"):
            return self.map50
        if metric in ("map", "mAP50-95", "map5095"):
            return self.map
        raise ValueError(f"unknown metric {metric!r}; use 'map50' or 'map'")


def _delta(metric: str, estimate: float, resamples: np.ndarray, level: float) -> DeltaEstimate:
    lo, hi = np.percentile(resamples, [50 * (1 - level), 50 * (1 + level)])
    se = float(resamples.std(ddof=1)) if resamples.size > 1 else math.nan
    return DeltaEstimate(
        metric, float(estimate), float(lo), float(hi), se, bootstrap_p_value(resamples), resamples, level
    )


def bootstrap_study(
    base: Sequence[MatchRecords],
    variants: Mapping[str, Sequence[MatchRecords]],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    workers: int = 1,
) -> dict[str, PairedBootstrap]:
    """:func:`paired_bootstrap` of several variants against one baseline, on the same resamples.

    ``base[k]`` and ``variants[name][k]`` are the runs of seed index ``k``. The baseline's mAPs
    are computed once per resample, and every variant sees the same draws, so the result for a
    variant equals ``paired_bootstrap(base, variants[name], n_resamples, seed)``. Each run's mAP is
    computed only on the resamples that drew its seed. ``workers > 1`` evaluates runs in threads
    (numpy releases the GIL): faster on idle cores, no help on busy ones.

    Speed (``benchmarks/bootstrap_speed.py``): baseline + 10 variants x 3 seeds x 500 images,
    1000 resamples, about 5 s of CPU time on one core; the naive way, ``map_from_records`` per run
    and resample, would take about half an hour.
    """
    n_seeds = len(base)
    if n_seeds == 0:
        raise ValueError("bootstrap_study: no baseline runs")
    ref = base[0]
    for name, runs in variants.items():
        if len(runs) != n_seeds:
            raise ValueError(
                f"bootstrap_study: variant {name!r} has {len(runs)} runs but the baseline has {n_seeds}; "
                "runs are paired by seed index"
            )
    for name, runs in [("baseline", base), *variants.items()]:
        for k, rec in enumerate(runs):
            if not ref.same_images(rec):
                raise ValueError(
                    f"bootstrap_study: {name} seed {k} was not evaluated on the same validation images "
                    "(labels, image count or IoU thresholds differ)"
                )
    seed_counts, weights = resample_plan(n_seeds, ref.n_images, n_resamples, seed)
    ones = np.ones((1, ref.n_images), np.int64)
    groups = [("\0baseline", base), *variants.items()]

    def one_run(job: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        g, k = job
        curves = _Curves(groups[g][1][k])
        rows = np.flatnonzero(seed_counts[:, k] > 0)  # a seed not drawn needs no mAP
        b = np.zeros((n_resamples, 2))
        b[rows] = curves.maps(weights[rows])
        return curves.maps(ones)[0], b  # the first equals map_from_records(rec)[:2] to ~1e-15

    jobs = [(g, k) for g in range(len(groups)) for k in range(n_seeds)]
    n_workers = max(1, min(int(workers), len(jobs)))
    if n_workers > 1:  # numpy releases the GIL in its loops: threads help on idle cores only
        with ThreadPoolExecutor(n_workers) as ex:
            done = list(ex.map(one_run, jobs))
    else:
        done = [one_run(j) for j in jobs]
    obs: dict[str, np.ndarray] = {}
    boot: dict[str, np.ndarray] = {}
    for g, (name, _) in enumerate(groups):
        parts = done[g * n_seeds : (g + 1) * n_seeds]
        obs[name] = np.stack([o for o, _ in parts])  # [S, 2]
        boot[name] = np.stack([b for _, b in parts], 1)  # [R, S, 2]
    out = {}
    c = seed_counts[:, :, None] / n_seeds
    for name in variants:
        est = (obs[name] - obs["\0baseline"]).mean(0)
        dist = ((boot[name] - boot["\0baseline"]) * c).sum(1)  # [R, 2] mean over drawn seeds
        out[name] = PairedBootstrap(
            n_seeds,
            ref.n_images,
            n_resamples,
            seed,
            _delta("mAP50", est[0], dist[:, 0], level),
            _delta("mAP50-95", est[1], dist[:, 1], level),
        )
    return out


def paired_bootstrap(
    base: Sequence[MatchRecords],
    variant: Sequence[MatchRecords],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedBootstrap:
    """Paired hierarchical bootstrap of Δ mAP = variant − baseline (mAP@0.5 and mAP@0.5:0.95).

    ``base[k]`` and ``variant[k]`` are the match records of the runs with seed index ``k``, all
    evaluated on the same validation images. Every resample (see :func:`resample_plan`)

    1. draws ``S`` seed indices with replacement (baseline seed ``k`` stays paired with variant
       seed ``k``);
    2. draws the validation images with replacement: one multiplicity vector, the *same* for the
       baseline and the variant and for every drawn seed (the validation set is one sample shared
       by all runs, a crossed design, not images nested in seeds);
    3. recomputes both runs' mAP exactly with those multiplicities (:func:`bootstrap_maps`) and
       takes the mean over the drawn seeds of Δ.

    Returns the observed Δ (mean over seeds on all images), the percentile interval at ``level``,
    the bootstrap standard error, the bootstrap p-value and the ``[R]`` resample distribution, for
    both metrics. One seed works: then only image noise is resampled. Deterministic for ``seed``.
    """
    return bootstrap_study(base, {"variant": variant}, n_resamples, seed, level)["variant"]
