"""Match records: mAP recomputed from records equals the evaluator's, weights equal duplication."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from yoloattn.engine.metrics import DetMetrics, ap_per_class
from yoloattn.engine.records import (
    MatchRecords,
    image_record,
    map_from_records,
    records_from_stats,
    simulate_records,
)


def _hand_made() -> MatchRecords:
    """One class, two images with one label each.

    Sorted by confidence: 0.9 (image 0, TP at every threshold), 0.6 (image 1, IoU 0.7: TP at
    0.50..0.70 only), 0.3 (image 0, FP). Columns 0-4: recall 0.5, 1, 1 at precision 1, 1, 2/3:
    the envelope is 1 up to recall 1, AP = 0.99 + 0.005 = 0.995 (the official ceiling). Columns
    5-9: recall 0.5 throughout at precision 1, 1/2, 1/3: envelope 1 on [0, 0.5), 1/3 at 0.5, then
    linear to 0 at 1: AP = 0.005 + 0.49 + 0.01/3 + 0.01 * (2/3) * 12.25 = 0.58.
    """
    tp = np.zeros((3, 10), bool)
    tp[0] = True
    tp[2, :5] = True
    return MatchRecords(
        tp=tp,
        conf=np.array([0.9, 0.3, 0.6]),
        pred_cls=np.zeros(3, np.int64),
        pred_img=np.array([0, 0, 1]),
        target_cls=np.zeros(2, np.int64),
        target_img=np.array([0, 1]),
        n_images=2,
        nc=1,
    )


def test_hand_made_case():
    rec = _hand_made()
    map50, map5095, per_class = map_from_records(rec)
    assert map50 == pytest.approx(0.995, abs=1e-12)
    assert map5095 == pytest.approx((5 * 0.995 + 5 * 0.58) / 10, abs=1e-12)
    assert per_class.tolist() == pytest.approx([0.7875], abs=1e-12)
    # image 1 dropped: one label, TP then FP at every threshold -> 0.995 everywhere
    assert map_from_records(rec, [1, 0])[:2] == pytest.approx((0.995, 0.995), abs=1e-12)
    # image 0 dropped: one label found at IoU 0.7 only
    m50, m = map_from_records(rec, [0, 1])[:2]
    assert m50 == pytest.approx(0.995, abs=1e-12) and m == pytest.approx(0.995 / 2, abs=1e-12)
    # every image dropped: nothing is scored
    m50, m, pc = map_from_records(rec, [0, 0])
    assert (m50, m) == (0.0, 0.0) and np.isnan(pc).all()


@pytest.mark.parametrize("seed,n_images,nc", [(0, 40, 5), (1, 120, 20), (2, 300, 80)])
def test_equals_ap_per_class_exactly(seed, n_images, nc):
    rec = simulate_records(n_images, nc, rng=seed)
    map50, map5095, per_class = map_from_records(rec)
    res = ap_per_class(rec.tp, rec.conf, rec.pred_cls, rec.target_cls)
    assert map50 == float(res.ap50.mean())
    assert map5095 == float(res.ap5095.mean())
    assert np.array_equal(per_class[res.classes], res.ap5095)
    assert np.isnan(np.delete(per_class, res.classes)).all()
    # all-ones weights are the same computation
    assert map_from_records(rec, np.ones(n_images))[:2] == (map50, map5095)


def _random_boxes(rng: np.random.Generator, n_images: int, nc: int):
    """Labels and jittered / spurious predictions with real boxes, per image."""
    out = []
    for _ in range(n_images):
        m = int(rng.integers(0, 5))
        xy = rng.uniform(0, 400, (m, 2))
        wh = rng.uniform(20, 200, (m, 2))
        lab = np.concatenate((rng.integers(0, nc, (m, 1)), xy, xy + wh), 1)
        k = int(rng.integers(0, 4))
        jit = lab[:, 1:] + rng.normal(0, 12, (m, 4))
        cls = np.where(rng.uniform(size=m) < 0.85, lab[:, 0], rng.integers(0, nc, m))
        fxy = rng.uniform(0, 400, (k, 2))
        fp = np.concatenate((fxy, fxy + rng.uniform(10, 150, (k, 2))), 1)
        boxes = np.concatenate((jit, fp), 0)
        conf = rng.uniform(0.001, 1.0, m + k)
        pcls = np.concatenate((cls, rng.integers(0, nc, k)))
        pred = np.concatenate((boxes, conf[:, None], pcls[:, None]), 1)
        pred = pred[np.argsort(-pred[:, 4], kind="stable")]
        out.append((torch.tensor(pred, dtype=torch.float32), torch.tensor(lab, dtype=torch.float32)))
    return out


@pytest.mark.parametrize("style", ["v5", "v7"])
def test_records_from_the_evaluator_stats_equal_detmetrics(style):
    rng = np.random.default_rng(3)
    nc = 4
    dm = DetMetrics(nc, style=style, v5_metric=False)
    stats = []
    for pred, lab in _random_boxes(rng, 60, nc):
        dm.update(pred, lab)
        stats.append(image_record(pred, lab, style=style))
    m = dm.compute()
    end_one = style == "v5"
    for rec in (
        records_from_stats(stats, nc, end_recall_one=end_one),
        records_from_stats(dm._stats, nc, end_recall_one=end_one),  # what the evaluator holds
    ):
        assert rec.n_images == 60
        map50, map5095, per_class = map_from_records(rec)
        assert map50 == m["map50"] and map5095 == m["map"]
        assert np.array_equal(per_class[m["classes"]], m["ap"])


def test_integer_weights_equal_duplicating_images():
    rng = np.random.default_rng(5)
    for seed in range(4):
        rec = simulate_records(80, 10, rng=seed)
        w = rng.integers(0, 4, rec.n_images)
        dup = rec.select(np.repeat(np.arange(rec.n_images), w))
        assert dup.n_pred == int(w[rec.pred_img].sum()) and dup.n_targets == int(w[rec.target_img].sum())
        weighted = map_from_records(rec, w)
        physical = map_from_records(dup)
        assert weighted[:2] == pytest.approx(physical[:2], abs=1e-12)
        assert np.allclose(weighted[2], physical[2], atol=1e-12, equal_nan=True)


def test_save_load_round_trip(tmp_path):
    rec = dataclasses.replace(simulate_records(50, 7, rng=1), end_recall_one=False)
    path = rec.save(tmp_path / "sub" / "records.npz")
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == ["records.npz"]
    with np.load(path, allow_pickle=False) as z:  # a plain npz, no pickled objects
        assert "tp" in z.files and z["tp"].dtype == bool
    back = MatchRecords.load(path)
    for f in dataclasses.fields(MatchRecords):
        a, b = getattr(rec, f.name), getattr(back, f.name)
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, f.name
    assert back.same_images(rec)
    assert map_from_records(back)[:2] == map_from_records(rec)[:2]


def test_load_rejects_other_files(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a match-records file"):
        MatchRecords.load(p)


def test_validation():
    rec = _hand_made()
    with pytest.raises(ValueError, match="one entry per image"):
        map_from_records(rec, [1, 1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        map_from_records(rec, [1, -1])
    tp = rec.tp.copy()
    tp[1] = True  # a second TP for image 0's single label
    with pytest.raises(ValueError, match="more true positives than labels"):
        dataclasses.replace(rec, tp=tp)
    with pytest.raises(ValueError, match="pred_img"):
        dataclasses.replace(rec, pred_img=np.array([0, 0, 2]))
    with pytest.raises(ValueError, match="agree in length"):
        dataclasses.replace(rec, conf=np.ones(2))


def test_empty_records():
    rec = records_from_stats([], nc=3)
    assert rec.n_images == 0 and rec.n_pred == 0
    assert map_from_records(rec)[:2] == (0.0, 0.0)
    # images without predictions or labels still count as images
    empty = (np.zeros((0, 10), bool), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert records_from_stats([empty, empty], nc=3).n_images == 2
