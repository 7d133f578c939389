"""Tests for yoloattn.engine.metrics and yoloattn.engine.plots on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yoloattn.engine.confusion import ConfusionMatrix
from yoloattn.engine.metrics import (
    IOUV,
    DetMetrics,
    ap_per_class,
    compute_ap,
    fitness,
    match_predictions,
    match_predictions_by_confidence,
    match_predictions_v7,
    smooth,
)
from yoloattn.engine.plots import plot_confusion_matrix, plot_metric_curves, plot_results_csv


def _det(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def _lab(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)


def test_iouv_values() -> None:
    torch.testing.assert_close(IOUV, torch.tensor([0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]))


def test_compute_ap_hand_values() -> None:
    # envelope [1, 1, .5, 0] on recall [0, .5, 1, 1]: 0.5 + int_.5^.99 (1.5 - x) + last trapezoid
    ap, mpre, mrec = compute_ap([0.5, 1.0], [1.0, 0.5])
    assert ap == pytest.approx(0.5 + (0.49 - 0.49**2 / 2) + 0.51 / 2 * 0.01, abs=1e-12)
    np.testing.assert_allclose(mrec, [0, 0.5, 1, 1])
    np.testing.assert_allclose(mpre, [1, 1, 0.5, 0])
    # YOLOv7 default end sentinel at last recall + 0.01: the linear piece reaches x = 1 exactly
    ap7, _, mrec7 = compute_ap([0.5, 1.0], [1.0, 0.5], end_recall_one=False)
    assert ap7 == pytest.approx(0.875, abs=1e-12)
    assert mrec7[-1] == pytest.approx(1.01)
    # a perfect class: the YOLOv5 end sentinel (recall 1, precision 0) sits on the last sample
    # point, so the official ceiling is 0.995 (the well-known "mAP@0.5 0.995"); YOLOv7 gives 1.0
    assert compute_ap([1.0], [1.0])[0] == pytest.approx(0.995, abs=1e-12)
    assert compute_ap([1.0], [1.0], end_recall_one=False)[0] == pytest.approx(1.0, abs=1e-12)


def test_smooth_box_filter() -> None:
    y = np.zeros(1000)
    y[500] = 1.0
    s = smooth(y, 0.1)  # window 101
    assert s.shape == y.shape
    assert s[500] == pytest.approx(1 / 101) and s[450] == pytest.approx(1 / 101) and s[449] == 0


def test_match_perfect_duplicate_and_wrong_class() -> None:
    labels = _lab([0, 0, 0, 100, 100], [1, 200, 200, 300, 300])
    dets = _det(
        [0, 0, 100, 100, 0.9, 0],  # TP
        [0, 0, 100, 100, 0.8, 0],  # duplicate: FP
        [200, 200, 300, 300, 0.7, 0],  # right box, wrong class: FP
        [200, 200, 300, 300, 0.6, 1],  # TP
    )
    tp = match_predictions(dets, labels)
    assert tp.dtype == torch.bool and tp.shape == (4, 10)
    assert tp[:, 0].tolist() == [True, False, False, True]
    assert tp.all(1).tolist() == [True, False, False, True]
    assert torch.equal(match_predictions_v7(dets, labels), tp)


def test_match_iou_thresholds_and_official_label_assignment() -> None:
    labels = _lab([0, 0, 0, 100, 100])
    dets = _det([0, 0, 100, 62, 0.9, 0], [0, 0, 100, 92, 0.8, 0])  # IoU 0.62 and 0.92
    tp = match_predictions(dets, labels)
    # the label goes to the first (most confident) detection wherever both qualify
    assert tp[0].tolist() == [True] * 3 + [False] * 7
    assert tp[1].tolist() == [False] * 3 + [True] * 6 + [False]
    # YOLOv7: the first prediction claims the label once and for all (IoU > t)
    tp7 = match_predictions_v7(dets, labels)
    assert tp7[0].tolist() == [True] * 3 + [False] * 7
    assert not tp7[1].any()
    # empty inputs
    assert match_predictions(_det(), labels).shape == (0, 10)
    assert not match_predictions(dets, _lab()).any()


def test_match_input_errors() -> None:
    with pytest.raises(ValueError, match=r"detections must be a tensor \[n, 6\]"):
        match_predictions(torch.zeros(3, 4), _lab())
    with pytest.raises(ValueError, match=r"labels must be a tensor \[m, 5\]"):
        match_predictions(_det(), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="iouv"):
        match_predictions(_det(), _lab(), iouv=[0.0, 0.5])


def test_ap_per_class_false_positive_first() -> None:
    # one label; an FP at conf .9 then the TP at conf .8: precision envelope 0.5 up to recall 1
    res = ap_per_class(np.array([[0], [1]]), np.array([0.9, 0.8]), np.array([0, 0]), np.array([0]))
    assert res.ap[0, 0] == pytest.approx(0.5 * 0.99 + 0.25 * 0.01, abs=1e-12)
    # duplicate detection after the TP: AP stays 1, precision at the lowest confidence halves
    res = ap_per_class(np.array([[1], [0]]), np.array([0.9, 0.8]), np.array([0, 0]), np.array([0]))
    assert res.ap[0, 0] == pytest.approx(0.995)
    assert res.p_curve[0, 1] == pytest.approx(0.5)  # px = 0.001 < 0.8: both detections count
    assert res.r_curve[0, -1] == 0.0  # confidence 1.0: nothing left
    # the smoothed mean-F1 peak lies between the two confidences, where P is interpolated
    assert 0.8 < res.conf < 0.9 and res.r.item() == pytest.approx(1.0) and 0.5 < res.p.item() < 1.0
    assert res.f1.item() == pytest.approx(2 * res.p.item() / (res.p.item() + 1.0))


def test_ap_per_class_shapes_and_errors() -> None:
    res = ap_per_class(np.ones((3, 10)), [0.9, 0.8, 0.7], [0, 1, 5], [0, 1, 1, 2])
    assert res.classes.tolist() == [0, 1, 2]  # class 5 has no labels: ignored
    assert res.ap.shape == (3, 10) and res.p_curve.shape == (3, 1000) and res.pr_curve.shape == (3, 1000)
    assert res.n_labels.tolist() == [1, 2, 1]
    # class 1: recall 0.5 at precision 1, then the envelope falls linearly to 0 at recall 1
    np.testing.assert_allclose(res.ap50, [0.995, 0.75, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="must agree in n"):
        ap_per_class(np.ones((3, 10)), [0.9, 0.8], [0, 1, 1], [0])


def _perfect_image(rng: np.random.Generator, nc: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = 4
    xy = rng.uniform(0, 400, (k, 2))
    boxes = np.concatenate((xy, xy + rng.uniform(20, 80, (k, 2))), 1)
    cls = rng.integers(0, nc, k)
    labels = torch.tensor(np.concatenate((cls[:, None], boxes), 1), dtype=torch.float32)
    conf = np.sort(rng.uniform(0.3, 1.0, k))[::-1]
    preds = torch.tensor(np.concatenate((boxes, conf[:, None], cls[:, None]), 1), dtype=torch.float32)
    return preds, labels


@pytest.mark.parametrize("style", ["v5", "v7"])
def test_perfect_predictions_score_one(style: str) -> None:
    rng = np.random.default_rng(0)
    m = DetMetrics(nc=3, style=style)
    for _ in range(5):
        m.update(*_perfect_image(rng, 3))
    r = m.compute()
    top = 0.995 if style == "v5" else 1.0  # YOLOv5's AP ceiling, see test_compute_ap_hand_values
    for key in ("mp", "mr"):
        assert r[key] == pytest.approx(1.0), key
    for key in ("map50", "map", "fitness"):
        assert r[key] == pytest.approx(top), key
    assert r["seen"] == 5 and r["nt"].sum() == 20


def test_class_without_predictions_scores_zero() -> None:
    m = DetMetrics(nc=3, names=["a", "b", "c"])
    m.update(_det([0, 0, 10, 10, 0.9, 0]), _lab([0, 0, 0, 10, 10], [1, 50, 50, 60, 60]))
    r = m.compute()
    assert r["classes"].tolist() == [0, 1]  # class 2 has no labels: not counted
    np.testing.assert_allclose(r["ap50"], [0.995, 0.0])
    np.testing.assert_allclose(r["p"], [1.0, 0.0])
    np.testing.assert_allclose(r["r"], [1.0, 0.0])
    assert r["map50"] == pytest.approx(0.4975) and r["map"] == pytest.approx(0.4975)
    np.testing.assert_allclose(r["maps"], [0.995, 0.0, 0.4975])  # absent class: the overall mean


def test_half_overlap_counts_at_passing_thresholds_only() -> None:
    m = DetMetrics(nc=1)
    m.update(_det([0, 0, 10, 6.2, 0.9, 0]), _lab([0, 0, 0, 10, 10]))  # IoU 0.62
    r = m.compute()
    np.testing.assert_allclose(m.result.ap[0], [0.995] * 3 + [0] * 7)
    assert r["map50"] == pytest.approx(0.995)
    assert r["map"] == pytest.approx(0.3 * 0.995)
    assert r["fitness"] == pytest.approx(fitness(0.995, 0.2985)) == pytest.approx(0.0995 + 0.26865)
    m7 = DetMetrics(nc=1, style="v7")
    m7.update(_det([0, 0, 10, 6.2, 0.9, 0]), _lab([0, 0, 0, 10, 10]))
    assert m7.compute()["map"] == pytest.approx(0.3)


def test_no_true_positive_gives_zero_and_empty_images() -> None:
    m = DetMetrics(nc=2)
    m.update(None, _lab([1, 0, 0, 10, 10]))  # missed label
    m.update(_det([50, 50, 60, 60, 0.9, 0]), None)  # FP in an image without labels
    r = m.compute()
    assert r["mp"] == r["mr"] == r["map50"] == r["map"] == 0.0
    assert m.result is None and r["seen"] == 2
    assert DetMetrics(nc=2).compute()["map"] == 0.0


def test_detmetrics_false_positive_lowers_precision() -> None:
    m = DetMetrics(nc=1)
    m.update(_det([0, 0, 10, 10, 0.9, 0], [0, 0, 10, 10, 0.8, 0]), _lab([0, 0, 0, 10, 10]))  # duplicate
    r = m.compute()
    assert r["map50"] == pytest.approx(0.995)
    assert r["mr"] == pytest.approx(1.0)
    assert 0.5 <= r["mp"] <= 1.0
    row = m.results_row(r)
    assert list(row) == list(DetMetrics.CSV_KEYS) and row["metrics/mAP_0.5"] == pytest.approx(0.995)


def test_detmetrics_errors() -> None:
    with pytest.raises(ValueError, match=r"label classes must be integers in \[0, 1\]"):
        DetMetrics(nc=2).update(_det(), _lab([2, 0, 0, 1, 1]))
    with pytest.raises(ValueError, match="names has 1 entries"):
        DetMetrics(nc=2, names=["a"])
    with pytest.raises(ValueError, match="style"):
        DetMetrics(nc=2, style="v8")  # type: ignore[arg-type]


def test_confusion_matrix_counts() -> None:
    cm = ConfusionMatrix(nc=3, conf=0.25, iou_thres=0.45)
    labels = _lab([0, 0, 0, 10, 10], [1, 20, 20, 30, 30], [2, 40, 40, 50, 50])
    dets = _det(
        [0, 0, 10, 10, 0.9, 0],  # correct class 0
        [20, 20, 30, 30, 0.8, 2],  # true 1 predicted as 2
        [60, 60, 70, 70, 0.7, 1],  # background predicted as 1
        [40, 40, 50, 50, 0.1, 2],  # below conf: ignored, so label 2 is missed
    )
    cm.process_batch(dets, labels)
    cm.process_batch(_det([0, 0, 5, 5, 0.9, 0]), None)  # image without labels: one FP
    cm.update(None, _lab([1, 0, 0, 5, 5]))  # image without detections: one miss
    expected = np.zeros((4, 4), dtype=int)
    expected[0, 0] = 1
    expected[2, 1] = 1
    expected[1, 3] = 1
    expected[0, 3] = 1
    expected[3, 2] = 1
    expected[3, 1] = 1
    np.testing.assert_array_equal(cm.matrix, expected)
    tp, fp = cm.tp_fp()
    assert tp.tolist() == [1, 0, 0] and fp.tolist() == [1, 1, 1]


def test_confusion_matrix_one_match_per_label() -> None:
    cm = ConfusionMatrix(nc=1)
    cm.process_batch(_det([0, 0, 10, 10, 0.9, 0], [0, 0, 10, 9, 0.8, 0]), _lab([0, 0, 0, 10, 10]))
    assert cm.matrix.tolist() == [[1, 1], [0, 0]]  # best IoU matches, the other is background FP


def test_plots_are_written(tmp_path) -> None:
    rng = np.random.default_rng(1)
    m = DetMetrics(nc=2, names=["cat", "dog"])
    for _ in range(3):
        preds, labels = _perfect_image(rng, 2)
        preds[1:, :4] += 15.0  # degrade some predictions so curves are not trivial
        m.update(preds, labels)
    m.compute()
    paths = plot_metric_curves(m.result, tmp_path / "curves", m.names)
    assert [p.name for p in paths] == ["PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png"]
    cm = ConfusionMatrix(nc=2)
    cm.process_batch(*_perfect_image(rng, 2))
    paths.append(plot_confusion_matrix(cm.matrix, tmp_path / "confusion_matrix.png", names=["cat", "dog"]))
    paths.append(plot_confusion_matrix(cm.matrix, tmp_path / "cm_counts.png", normalize=False))
    csv = tmp_path / "results.csv"
    csv.write_text(
        "               epoch,      train/box_loss,   metrics/mAP_0.5,  note\n"
        "                   0,             0.1,              0.2,  a\n"
        "                   1,             0.08,             0.3,  b\n"
        "                   2,             0.07,             0.35, c\n"
    )
    paths.append(plot_results_csv(csv))
    assert paths[-1] == tmp_path / "results.png"
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000, p
        assert p.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileNotFoundError, match="results CSV not found"):
        plot_results_csv(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)), tmp_path / "x.png")


def test_read_results_keeps_numeric_columns_and_empty_cells_as_nan(tmp_path):
    from yoloattn.engine.runs import read_results

    csv = tmp_path / "results.csv"
    csv.write_text(" epoch, train/box_loss, metrics/mAP_0.5, note\n 0, 0.1, , a\n 1, 0.08, 0.3, b\n")
    cols = read_results(csv)
    assert list(cols) == ["epoch", "train/box_loss", "metrics/mAP_0.5"]  # "note" is not numeric
    assert cols["epoch"].tolist() == [0.0, 1.0] and np.isnan(cols["metrics/mAP_0.5"][0])
    assert cols["metrics/mAP_0.5"][1] == 0.3
    (tmp_path / "empty.csv").write_text("epoch,x\n")
    with pytest.raises(ValueError, match="no data rows"):
        read_results(tmp_path / "empty.csv")


def test_smooth_keeps_length_for_any_size():
    import numpy as np

    from yoloattn.engine.metrics import smooth

    for n in (1, 2, 3, 20, 59, 60, 61, 100, 1000):
        y = np.linspace(0, 1, n)
        assert smooth(y).shape == (n,), n
    assert np.allclose(smooth(np.ones(60)), 1.0)


def test_results_plot_skips_empty_cells_of_unvalidated_epochs(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    drawn: dict[str, tuple[list[float], list[float]]] = {}
    real_plot = Axes.plot

    def recording_plot(self, x, y, *a, **k):
        if k.get("label") == "results":
            drawn[self.get_title() or str(len(drawn))] = (list(x), list(y))
        return real_plot(self, x, y, *a, **k)

    monkeypatch.setattr(Axes, "plot", recording_plot)
    csv = tmp_path / "results.csv"
    csv.write_text("epoch,train/box_loss,metrics/mAP_0.5\n0,0.1,\n1,0.08,\n2,0.07,0.35\n")
    plot_results_csv(csv)
    # titles are set after plotting: the series come in column order
    (x_loss, y_loss), (x_map, y_map) = drawn.values()
    assert x_loss == [0.0, 1.0, 2.0] and y_loss == [0.1, 0.08, 0.07]
    assert x_map == [2.0] and y_map == [0.35]  # the empty cells are no points (neither 0 nor NaN)


# --------------------------------------------------------------------------- ultralytics 8.4


def test_match_by_confidence_falls_back_to_the_next_label() -> None:
    # det 0 is label 0 exactly; det 1 overlaps label 0 by 95/105 and label 1 by 85/115 = 0.739
    labels = _lab([0, 0, 0, 10, 10], [0, 2, 0, 12, 10])
    dets = _det([0, 0, 10, 10, 0.9, 0], [0.5, 0, 10.5, 10, 0.8, 0])
    v5 = match_predictions(dets, labels)
    v84 = match_predictions_by_confidence(dets, labels)
    assert v5[0].all() and v84[0].all()
    assert not v5[1].any()  # v5 / ultralytics 8.3: its best label is taken, so it is a false positive
    assert v84[1].tolist() == [True] * 5 + [False] * 5  # 8.4: it claims label 1 up to IoU 0.70


def test_match_by_confidence_visits_most_confident_first_same_class_only() -> None:
    labels = _lab([0, 0, 0, 10, 10])
    # listed least confident first; the wrong-class box never matches
    dets = _det([0, 0, 10, 10, 0.3, 0], [0, 0, 10, 10, 0.95, 1], [0.5, 0, 10.5, 10, 0.6, 0])
    tp = match_predictions_by_confidence(dets, labels)
    assert not tp[1].any()
    assert tp[2].tolist() == [True] * 9 + [False]  # IoU 95/105 = 0.905
    assert tp[0].tolist() == [False] * 9 + [True]  # the label is still free at 0.95 (per threshold)


def test_detmetrics_v84_style_fitness_is_map() -> None:
    dm = DetMetrics(1, style="v8.4")
    dm.update(
        _det([0, 0, 10, 10, 0.9, 0], [0.5, 0, 10.5, 10, 0.8, 0]), _lab([0, 0, 0, 10, 10], [0, 2, 0, 12, 10])
    )
    m = dm.compute()
    assert m["fitness"] == pytest.approx(m["map"])
    assert fitness(0.5, 0.3, "v8.4") == 0.3 and fitness(0.5, 0.3) == pytest.approx(0.32)
    with pytest.raises(ValueError, match="v8.4"):
        DetMetrics(1, style="v8")  # type: ignore[arg-type]
