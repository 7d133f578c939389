"""Tests for yoloattn.engine.coco: faster-coco-eval wrapper against pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch

from yoloattn.engine.coco import (
    COCO80_TO_91,
    COCO_KEYS,
    CocoEvaluator,
    coco_evaluate,
    to_coco_dets,
    to_coco_gt,
)


def _synthetic(seed: int = 0, n_images: int = 40, nc: int = 4):
    """Per-image gt (boxes, classes, crowd) and noisy predictions covering all area ranges."""
    rng = np.random.default_rng(seed)
    images, gt_boxes, gt_cls, crowd, preds = [], [], [], [], []
    for i in range(n_images):
        w, h = int(rng.integers(200, 640)), int(rng.integers(200, 640))
        k = int(rng.integers(0, 8))
        size = rng.choice([12.0, 50.0, 150.0], size=(k, 1)) * rng.uniform(0.7, 1.3, (k, 2))
        xy = rng.uniform(0, 1, (k, 2)) * np.maximum(np.array([w, h]) - size, 1)
        boxes = np.concatenate((xy, xy + size), 1)
        cls = rng.integers(0, nc, k)
        images.append((i + 7, w, h))  # non-contiguous ids
        gt_boxes.append(boxes)
        gt_cls.append(cls)
        crowd.append((rng.uniform(size=k) < 0.05).astype(int))
        # detections: jittered gt, some with the wrong class, plus random false positives
        jitter = rng.normal(0, 0.08, (k, 4)) * np.tile(size, 2)
        pcls = np.where(rng.uniform(size=k) < 0.15, rng.integers(0, nc, k), cls)
        fp = int(rng.integers(0, 6))
        fxy = rng.uniform(0, 1, (fp, 2)) * np.array([w, h]) * 0.8
        fbox = np.concatenate((fxy, fxy + rng.uniform(5, 120, (fp, 2))), 1)
        b = np.concatenate((boxes + jitter, fbox), 0)
        c = np.concatenate((pcls, rng.integers(0, nc, fp)))
        s = np.concatenate((rng.uniform(0.3, 1.0, k), rng.uniform(0.0, 0.7, fp)))
        preds.append(np.concatenate((b, s[:, None], c[:, None]), 1))
    return images, gt_boxes, gt_cls, crowd, preds


def _pycocotools(gt: dict, dets: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = copy.deepcopy(gt)
        cg.createIndex()
        cd = cg.loadRes(copy.deepcopy(dets))
        ev = COCOeval(cg, cd, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:12])


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_pycocotools(seed: int) -> None:
    images, boxes, cls, crowd, preds = _synthetic(seed)
    gt = to_coco_gt(images, boxes, cls, nc=4, iscrowd=crowd)
    dets = to_coco_dets([i for i, _, _ in images], preds)
    ours = coco_evaluate(gt, dets)
    ref = _pycocotools(gt, dets)
    assert list(ours) == list(COCO_KEYS)
    np.testing.assert_allclose([ours[k] for k in COCO_KEYS], ref, atol=1e-6, rtol=0)
    assert 0.1 < ours["AP"] < 0.95 and ours["APs"] >= 0 and ours["APl"] >= 0  # a non-trivial case
    via_backend = coco_evaluate(gt, dets, backend="pycocotools")
    np.testing.assert_allclose([via_backend[k] for k in COCO_KEYS], ref, atol=1e-12, rtol=0)


def test_perfect_empty_and_subset() -> None:
    images, boxes, cls, _, _ = _synthetic(2, n_images=10)
    gt = to_coco_gt(images, boxes, cls, nc=4)
    perfect = [np.concatenate((b, np.full((len(b), 1), 0.9), c[:, None]), 1) for b, c in zip(boxes, cls)]
    r = coco_evaluate(gt, to_coco_dets([i for i, _, _ in images], perfect))
    assert (
        r["AP"] == pytest.approx(1.0) and r["AP50"] == pytest.approx(1.0) and r["AR100"] == pytest.approx(1.0)
    )
    empty = coco_evaluate(gt, [])
    assert all(empty[k] in (0.0, -1.0) for k in COCO_KEYS)
    assert empty["AP"] == 0.0 and empty["AP50"] == 0.0 and empty["AR100"] == 0.0
    assert coco_evaluate(gt, [], backend="pycocotools")["AP"] == 0.0
    # img_ids restricts the evaluation: image 1 predicted perfectly, the others not at all
    second = images[1][0]
    assert len(boxes[1]) > 0
    sub = coco_evaluate(gt, to_coco_dets([second], perfect[1:2]), img_ids=[second])
    assert sub["AP"] == pytest.approx(1.0)
    assert coco_evaluate(gt, to_coco_dets([second], perfect[1:2]))["AR100"] < 0.5


def test_no_ground_truth_is_an_error() -> None:
    gt = to_coco_gt([(1, 100, 100)], [np.zeros((0, 4))], [np.zeros(0)], nc=2)
    assert gt["annotations"] == [] and len(gt["categories"]) == 2
    with pytest.raises(ValueError, match="no annotations, so COCO AP is undefined"):
        coco_evaluate(gt, [])


def test_bad_ids_are_reported() -> None:
    gt = to_coco_gt([(1, 100, 100)], [[[0, 0, 10, 10]]], [[0]], nc=2)
    det = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}
    with pytest.raises(ValueError, match=r"image ids not in gt: \[5\]"):
        coco_evaluate(gt, [{**det, "image_id": 5}])
    with pytest.raises(ValueError, match=r"category ids not in gt: \[0\].*mapping"):
        coco_evaluate(gt, [{**det, "category_id": 0}])  # a 0-based class passed as category id
    with pytest.raises(ValueError, match="lacks"):
        coco_evaluate({**gt, "annotations": [{"id": 1, "image_id": 1}]}, [])
    with pytest.raises(ValueError, match="backend"):
        coco_evaluate(gt, [det], backend="other")  # type: ignore[arg-type]


def test_inputs_are_not_modified() -> None:
    gt = to_coco_gt([(1, 100, 100)], [[[0, 0, 10, 10]]], [[0]], nc=1)
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]
    gt0, dets0 = copy.deepcopy(gt), copy.deepcopy(dets)
    assert coco_evaluate(gt, dets)["AP"] == pytest.approx(1.0)
    assert gt == gt0 and dets == dets0


def test_format_builders_and_category_mapping() -> None:
    gt = to_coco_gt(
        [(3, 640, 480)],
        [torch.tensor([[10.0, 20.0, 50.0, 100.0]])],
        [torch.tensor([79])],
        category_ids=COCO80_TO_91,
        names=[f"c{i}" for i in range(80)],
    )
    assert gt["images"] == [{"id": 3, "width": 640, "height": 480, "file_name": "3"}]
    ann = gt["annotations"][0]
    assert ann == {
        "id": 1,
        "image_id": 3,
        "category_id": 90,
        "bbox": [10.0, 20.0, 40.0, 80.0],
        "area": 3200.0,
        "iscrowd": 0,
    }
    assert [c["id"] for c in gt["categories"]] == list(COCO80_TO_91) and gt["categories"][0]["name"] == "c0"
    dets = to_coco_dets([3], [torch.tensor([[10.0, 20.0, 50.123456, 100.0, 0.87654321, 2.0]])], decimals=3)
    assert dets == [{"image_id": 3, "category_id": 3, "bbox": [10.0, 20.0, 40.123, 80.0], "score": 0.87654}]
    assert len(COCO80_TO_91) == 80 and len(set(COCO80_TO_91)) == 80 and COCO80_TO_91[-1] == 90
    with pytest.raises(ValueError, match="class 3 outside"):
        to_coco_gt([(1, 10, 10)], [[[0, 0, 1, 1]]], [[3]], nc=2)
    with pytest.raises(ValueError, match="one entry per image"):
        to_coco_gt([(1, 10, 10)], [], [])
    with pytest.raises(ValueError, match=r"shape \[n, 6\]"):
        to_coco_dets([1], [np.zeros((2, 4))])
    with pytest.raises(ValueError, match="class 5 has no entry"):
        to_coco_dets([1], [np.array([[0, 0, 1, 1, 0.5, 5]])], category_ids={0: 1})


def test_accumulator_matches_manual_pipeline() -> None:
    images, boxes, cls, _, preds = _synthetic(3, n_images=12)
    ev = CocoEvaluator(nc=4)
    for (image_id, w, h), b, c, p in zip(images, boxes, cls, preds):
        labels = torch.tensor(np.concatenate((c[:, None], b), 1), dtype=torch.float64).reshape(-1, 5)
        ev.update(image_id, w, h, torch.tensor(p), labels)
    gt = to_coco_gt(images, boxes, cls, nc=4)
    dets = to_coco_dets([i for i, _, _ in images], preds)
    expected = coco_evaluate(gt, dets)
    got = ev.compute()
    np.testing.assert_allclose([got[k] for k in COCO_KEYS], [expected[k] for k in COCO_KEYS], atol=1e-12)
