"""AutoAnchor: metrics, k-means + genetic evolution, and the in-place anchor update of a model."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from yoloattn.data import YoloDataset
from yoloattn.engine import autoanchor as aa
from yoloattn.engine.autoanchor import (
    AnchorReport,
    anchor_fitness,
    anchor_metrics,
    check_anchor_order,
    check_anchors,
    kmean_anchors,
    label_wh,
)
from yoloattn.models import build_model, load_config
from yoloattn.nn import Detect

DEFAULT_PX = np.array(
    [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]],
    dtype=np.float64,
)


@dataclass
class FakeDataset:
    """The two attributes check_anchors reads (YoloDataset has both)."""

    labels: list[np.ndarray]
    shapes: np.ndarray


def _dataset(wh_px: np.ndarray, imgsz: int, per_image: int = 10) -> FakeDataset:
    """Square imgsz x imgsz images holding boxes of the given pixel sizes."""
    labels, n = [], len(wh_px)
    for s in range(0, n, per_image):
        chunk = wh_px[s : s + per_image] / imgsz
        lab = np.zeros((len(chunk), 5), np.float32)
        lab[:, 1:3] = 0.5
        lab[:, 3:5] = chunk
        labels.append(lab)
    return FakeDataset(labels, np.full((len(labels), 2), imgsz, np.int64))


def _tiny_boxes(n: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(3.0, 6.0, (n, 2))


def _px(detect: Detect) -> torch.Tensor:
    return detect.anchors.detach().double() * detect.stride.double().view(-1, 1, 1)


def _decoded_anchor_wh(model: torch.nn.Module, imgsz: int = 64) -> torch.Tensor:
    """Eval-mode decoded (w, h) of the first cell for every (level, anchor) with zeroed head convs.

    With zero logits ``wh = (2 * sigmoid(0))^2 * anchor = anchor``, so this reads back exactly the
    pixel anchors the decoder uses.
    """
    det = model.detect
    with torch.no_grad():
        for conv in det.m:
            conv.weight.zero_()
            conv.bias.zero_()
    model.eval()
    with torch.no_grad():
        y, _ = model(torch.zeros(1, 3, imgsz, imgsz))
    out, off = [], 0
    for s in det.stride.tolist():
        cells = int(imgsz // s) ** 2
        for a in range(det.na):
            out.append(y[0, off + a * cells, 2:4])
        off += det.na * cells
    assert off == y.shape[1]
    return torch.stack(out).view(det.nl, det.na, 2).double()


# ------------------------------------------------------------------------------- metrics


def test_metrics_exact_values_and_strict_threshold():
    wh = np.array([[10, 10], [20, 40], [100, 100], [15, 15], [200, 5]], dtype=np.float64)
    k = np.array([[10, 10], [40, 40]], dtype=np.float64)
    # x per box: [1, .25], [.25, .5], [.1, .4], [2/3, .375], [.05, .125]; 1/thr = 0.25 is NOT counted
    bpr, aat = anchor_metrics(wh, k, thr=4.0)
    assert bpr == pytest.approx(4 / 5)
    assert aat == pytest.approx((1 + 1 + 1 + 2 + 0) / 5)
    assert anchor_fitness(wh, k, thr=4.0) == pytest.approx((1 + 0.5 + 0.4 + 2 / 3) / 5)
    # 1/thr = 0.1: the 0.25 ties and the 0.125 box count, the 0.1 tie (box 3, anchor 1) does not
    bpr, aat = anchor_metrics(wh, k, thr=10.0)
    assert bpr == 1.0 and aat == pytest.approx((2 + 2 + 1 + 2 + 1) / 5)
    assert anchor_metrics(np.zeros((0, 2)), k) == (0.0, 0.0)
    # zero (placeholder) anchors fit nothing, without warnings or NaN
    assert anchor_metrics(wh, np.zeros((3, 2))) == (0.0, 0.0)


def test_metric_errors():
    with pytest.raises(ValueError, match="anchor_t"):
        anchor_metrics(np.ones((2, 2)), np.ones((1, 2)), thr=1.0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        anchor_metrics(np.ones((2, 3)), np.ones((1, 2)))


def test_label_wh_scales_to_imgsz_and_jitters_per_image():
    labels = [np.array([[0, 0.5, 0.5, 0.5, 0.25]]), np.zeros((0, 5)), np.array([[1, 0.5, 0.5, 0.1, 0.2]])]
    shapes = np.array([[200, 400], [50, 50], [640, 320]])  # (h, w)
    wh = label_wh(labels, shapes, imgsz=640, scale_range=(1.0, 1.0))
    np.testing.assert_allclose(wh, [[320.0, 80.0], [32.0, 128.0]])
    jit = label_wh(labels, shapes, imgsz=640, seed=3)
    r = jit / wh
    assert np.allclose(r[:, 0], r[:, 1])  # one scale per image, both sides
    assert ((r[:, 0] >= 0.9) & (r[:, 0] <= 1.1)).all() and not np.allclose(r, 1.0)
    np.testing.assert_array_equal(jit, label_wh(labels, shapes, imgsz=640, seed=3))
    with pytest.raises(ValueError, match="2 image shapes"):
        label_wh(labels, shapes[:2])
    with pytest.raises(ValueError, match="image 0"):
        label_wh([np.ones((2, 3))], shapes[:1])


# ------------------------------------------------------------------------------- evolution


def _clustered_wh(n: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(7)
    centres = np.array([[12, 16], [40, 30], [25, 70], [120, 90], [200, 260], [400, 330]], np.float64)
    wh = centres[rng.integers(len(centres), size=n)] * np.exp(rng.normal(0, 0.25, (n, 2)))
    return wh


def test_kmean_anchors_deterministic_sorted_and_fitter():
    wh = _clustered_wh()
    t0 = time.perf_counter()
    k1 = kmean_anchors(wh, 9, thr=4.0, gen=1000, seed=0)
    elapsed = time.perf_counter() - t0
    k2 = kmean_anchors(wh, 9, thr=4.0, gen=1000, seed=0)
    assert k1.shape == (9, 2)
    np.testing.assert_array_equal(k1, k2)
    assert not np.array_equal(k1, kmean_anchors(wh, 9, gen=1000, seed=1))
    area = k1.prod(1)
    assert (np.diff(area) >= 0).all() and (k1 >= 2.0).all()
    bad = np.full((9, 2), 3000.0)
    f_km = anchor_fitness(wh, kmean_anchors(wh, 9, gen=0, seed=0))
    f_ga = anchor_fitness(wh, k1)
    assert anchor_fitness(wh, bad) < 0.1 < f_km <= f_ga
    assert f_ga > f_km + 1e-3  # the genetic stage improves on plain k-means
    assert anchor_metrics(wh, k1)[0] > 0.99
    assert elapsed < 5.0  # ~0.05 s unloaded; generous for a busy CI core


def test_kmean_anchors_few_unique_points_and_tiny_boxes(caplog):
    with caplog.at_level(logging.WARNING, logger="yoloattn.train"):
        k = kmean_anchors(np.full((20, 2), 10.0), 9, gen=50, seed=0)
    assert k.shape == (9, 2) and np.isfinite(k).all() and (k >= 2.0).all()
    assert "distinct label sizes" in caplog.text
    caplog.clear()
    wh = np.concatenate([np.full((5, 2), 1.0), np.full((3, 2), 2.5), _clustered_wh(100)])
    with caplog.at_level(logging.WARNING, logger="yoloattn.train"):
        kmean_anchors(wh, 3, gen=10, seed=0)
    assert "8 of 108 labels are smaller than 3 pixels" in caplog.text
    k = kmean_anchors(np.full((4, 2), 1.0), 2, gen=5)  # everything under 2 px: no crash
    assert (k >= 2.0).all()


def test_kmean_anchors_errors():
    with pytest.raises(ValueError, match="at least one label"):
        kmean_anchors(np.zeros((0, 2)), 9)
    with pytest.raises(ValueError, match="non-finite"):
        kmean_anchors(np.array([[3.0, np.inf]]), 1)
    with pytest.raises(ValueError, match="number of anchors"):
        kmean_anchors(np.ones((5, 2)), 0)


# ------------------------------------------------------------------------------- models


def test_check_anchors_keeps_fitting_anchors():
    model = build_model(load_config("yolov5n"), nc=1)
    before = model.detect.anchors.clone()
    ds = _dataset(np.tile(DEFAULT_PX, (4, 1)), imgsz=640, per_image=9)
    rep = check_anchors(ds, model, thr=4.0, imgsz=640)
    assert torch.equal(model.detect.anchors, before)
    assert rep.checked and not rep.replaced and rep.bpr_after is None
    assert rep.bpr_before == 1.0 and rep.aat_before > 1.0 and rep.n_labels == 36
    assert "current anchors fit the dataset" in rep.summary()
    np.testing.assert_allclose(np.array(rep.anchors_px).reshape(-1, 2), DEFAULT_PX)


@pytest.mark.parametrize("cfg", ["yolov5n", "yolov7-tiny"])
def test_check_anchors_replaces_anchors_for_tiny_boxes(cfg, caplog):
    model = build_model(load_config(cfg), nc=1)
    det = model.detect
    before = det.anchors.clone()
    ds = _dataset(_tiny_boxes(), imgsz=320)
    with caplog.at_level(logging.INFO, logger="yoloattn.train"):
        rep = check_anchors(ds, model, thr=4.0, imgsz=320, seed=0, gen=300)
    assert rep.replaced and rep.bpr_after is not None
    assert rep.bpr_before < 0.98 and rep.bpr_after > rep.bpr_before and rep.bpr_after > 0.99
    assert "(replaced)" in rep.summary() and "(replaced)" in caplog.text
    assert not torch.equal(det.anchors, before)
    assert det.anchors.dtype == before.dtype and det.anchors.device == before.device

    px = _px(det)
    np.testing.assert_allclose(px.numpy().reshape(det.nl, -1), np.array(rep.anchors_px), atol=1e-3)
    flat_area = px.prod(-1).reshape(-1)
    assert (flat_area.diff() >= 0).all()  # sorted by area across levels in stride order
    assert float(px.max()) < 10.0  # fitted to the 3-6 px boxes
    if hasattr(det, "anchor_grid"):
        torch.testing.assert_close(det.anchor_grid.double().view(det.nl, det.na, 2), px)

    model.train()
    out = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 3, 8, 8, 6), (1, 3, 4, 4, 6), (1, 3, 2, 2, 6)]
    # the eval decoder uses the NEW anchors (IDetect reads anchor_grid, Detect anchors * stride)
    dec = _decoded_anchor_wh(model)
    torch.testing.assert_close(dec, px, rtol=1e-5, atol=1e-4)


def test_check_anchors_is_deterministic():
    ds = _dataset(_tiny_boxes(seed=5), imgsz=320)
    heads = []
    for _ in range(2):
        model = build_model(load_config("yolov5n"), nc=1)
        check_anchors(ds, model, imgsz=320, seed=4, gen=100)
        heads.append(model.detect.anchors.clone())
    assert torch.equal(heads[0], heads[1])


def test_check_anchors_keeps_anchors_when_evolution_is_worse(monkeypatch):
    monkeypatch.setattr(aa, "kmean_anchors", lambda wh, n, **kw: np.full((n, 2), 1000.0))
    model = build_model(load_config("yolov5n"), nc=1)
    before = model.detect.anchors.clone()
    rep = check_anchors(_dataset(_tiny_boxes(), imgsz=320), model, imgsz=320)
    assert not rep.replaced and rep.bpr_after == 0.0
    assert torch.equal(model.detect.anchors, before)
    assert "original anchors kept" in rep.summary()


def test_check_anchors_empty_dataset_is_a_no_op():
    model = build_model(load_config("yolov5n"), nc=1)
    before = model.detect.anchors.clone()
    for ds in (
        FakeDataset([np.zeros((0, 5), np.float32)] * 3, np.full((3, 2), 64)),
        FakeDataset([], np.zeros((0, 2))),
    ):
        rep = check_anchors(ds, model)
        assert isinstance(rep, AnchorReport) and not rep.checked and not rep.replaced
        assert "not checked" in rep.summary()
    assert torch.equal(model.detect.anchors, before)


def test_check_anchors_bad_inputs():
    model = build_model(load_config("yolov5n"), nc=1)
    with pytest.raises(TypeError, match=r"'\.labels'"):
        check_anchors(object(), model)
    with pytest.raises(ValueError, match="same images"):
        check_anchors(FakeDataset([np.zeros((0, 5))] * 2, np.ones((3, 2))), model)
    with pytest.raises(ValueError, match="no Detect/IDetect head"):
        check_anchors(_dataset(_tiny_boxes(), 320), torch.nn.Conv2d(1, 1, 1))
    head = Detect(nc=1, anchors=[[10, 13, 16, 30]], ch=[4])  # strides never set
    with pytest.raises(ValueError, match="strides are not set"):
        check_anchors(_dataset(_tiny_boxes(), 320), head, imgsz=320)


def test_check_anchors_on_bare_float64_head():
    head = Detect(nc=1, anchors=[[10, 13, 16, 30], [30, 61, 62, 45]], ch=[4, 8]).double()
    head.stride = torch.tensor([8.0, 16.0], dtype=torch.float64)
    head.anchors /= head.stride.view(-1, 1, 1)
    rep = check_anchors(_dataset(_tiny_boxes(), 320), head, imgsz=320, gen=50)
    assert rep.replaced and head.anchors.dtype == torch.float64
    px = _px(head)
    assert (px.prod(-1).reshape(-1).diff() >= 0).all()


@pytest.mark.parametrize("cfg", ["yolov5n", "yolov7-tiny"])
def test_check_anchor_order_flips_in_pixel_space(cfg):
    model = build_model(load_config(cfg), nc=1)
    det = model.detect
    good = _px(det).clone()
    assert not check_anchor_order(model)
    with torch.no_grad():  # reversed levels, each stored for its own stride
        det.anchors.copy_((good.flip(0) / det.stride.double().view(-1, 1, 1)).float())
        if hasattr(det, "anchor_grid"):
            det.anchor_grid.copy_(good.flip(0).float().view_as(det.anchor_grid))
    assert check_anchor_order(det)
    torch.testing.assert_close(_px(det), good)
    if hasattr(det, "anchor_grid"):
        torch.testing.assert_close(det.anchor_grid.double().view_as(good), good)
    assert not check_anchor_order(det)


def test_check_anchors_reads_a_real_yolo_dataset(tiny_data, tmp_path):
    ds = YoloDataset(tiny_data.parent / "images" / "train", imgsz=64, nc=2, cache_dir=tmp_path / "c")
    model = build_model(load_config("yolov5n"), nc=2)
    rep = check_anchors(ds, model, imgsz=64, gen=50)
    assert rep.checked and rep.n_labels == sum(len(lab) for lab in ds.labels) > 0
    assert 0.0 <= rep.bpr_before <= 1.0
