"""Augmentation and box bookkeeping: exact geometry, pixel content, probabilities switching off."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from yoloattn.data.augment import (
    AugmentParams,
    augment_hsv,
    box_candidates,
    fliplr,
    flipud,
    letterbox,
    mixup,
    mosaic4,
    random_perspective,
)
from yoloattn.data.boxes import (
    letterbox_geometry,
    scale_boxes,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
    xyxy2xywhn,
)

COLOURS = [(230, 20, 20), (20, 200, 40), (30, 60, 220), (240, 220, 30)]


def scene(h: int, w: int, rects: list[tuple[int, int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Grey image with solid rectangles (cls, x1, y1, x2, y2) in COLOURS[cls]; labels in pixels."""
    img = np.full((h, w, 3), 60, np.uint8)
    for c, x1, y1, x2, y2 in rects:
        img[y1:y2, x1:x2] = COLOURS[c]
    return img, np.array(rects, dtype=np.float32).reshape(-1, 5)


def assert_boxes_on_objects(img: np.ndarray, labels: np.ndarray, tol: int = 40, min_side: float = 6.0) -> int:
    """Every box (cls, x1, y1, x2, y2) of at least min_side px has its class colour at its centre."""
    checked = 0
    for c, x1, y1, x2, y2 in labels:
        if x2 - x1 < min_side or y2 - y1 < min_side:
            continue
        px = img[int((y1 + y2) / 2), int((x1 + x2) / 2)].astype(int)
        assert np.abs(px - COLOURS[int(c)]).max() <= tol, (c, (x1, y1, x2, y2), px)
        checked += 1
    return checked


# ----------------------------------------------------------------------------- boxes / letterbox


def test_box_format_round_trips_numpy_and_torch():
    rng = np.random.default_rng(0)
    xyxy = np.sort(rng.uniform(0, 100, (20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(20, 4)
    xyxy = xyxy[:, [0, 1, 2, 3]]
    for arr in (xyxy, torch.from_numpy(xyxy)):
        back = xywh2xyxy(xyxy2xywh(arr))
        assert type(back) is type(arr)
        np.testing.assert_allclose(np.asarray(back), xyxy, atol=1e-9)
        n = xyxy2xywhn(arr, 100, 50)
        np.testing.assert_allclose(np.asarray(xywhn2xyxy(n, 100, 50)), xyxy, atol=1e-9)
    ints = np.array([[0, 0, 4, 2]])
    np.testing.assert_array_equal(xyxy2xywh(ints), [[2.0, 1.0, 4.0, 2.0]])
    assert ints.dtype.kind == "i"  # input untouched
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        xywh2xyxy(np.zeros((3, 5)))


def test_letterbox_geometry_padding_and_fill():
    img = np.zeros((97, 200, 3), np.uint8)
    out, (rw, rh), (padw, padh) = letterbox(img, 64)
    # r = 0.32: 200 -> 64, 97 -> round(31.04) = 31; 33 px of padding: 16 top, 17 bottom
    assert out.shape == (64, 64, 3)
    assert (rw, rh) == (64 / 200, 31 / 97)
    assert (padw, padh) == (0.0, 16.0)
    assert (out[:16] == 114).all() and (out[47:] == 114).all() and (out[16:47] == 0).all()
    # auto: only pad to the stride
    out, _, pad = letterbox(np.zeros((100, 200, 3), np.uint8), 640, auto=True, stride=32)
    assert out.shape == (320, 640, 3) and pad == (0.0, 0.0)
    # scaleup=False never enlarges
    out, ratio, pad = letterbox(np.zeros((100, 200, 3), np.uint8), (256, 256), scaleup=False)
    assert ratio == (1.0, 1.0) and pad == (28.0, 78.0) and out.shape == (256, 256, 3)
    geo = letterbox_geometry((100, 200), (50, 300), scale_fill=True)
    assert geo.new_unpad == (300, 50) and geo.pad == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("src", "dst", "scaleup"), [((97, 200), 64, True), ((480, 333), (320, 416), True), ((50, 70), 128, False)]
)
def test_letterbox_then_scale_boxes_is_identity(src, dst, scaleup):
    rng = np.random.default_rng(1)
    h0, w0 = src
    pts = rng.uniform(0, 1, (30, 4)) * [w0, h0, w0, h0]
    boxes = np.concatenate([np.minimum(pts[:, :2], pts[:, 2:]), np.maximum(pts[:, :2], pts[:, 2:])], 1)
    out, (rw, rh), (padw, padh) = letterbox(np.zeros((h0, w0, 3), np.uint8), dst, scaleup=scaleup)
    fwd = boxes * [rw, rh, rw, rh] + [padw, padh, padw, padh]
    back = scale_boxes(out.shape[:2], fwd, (h0, w0), ratio_pad=((rh, rw), (padw, padh)))
    np.testing.assert_allclose(back, boxes, atol=1e-9)
    if scaleup:  # recomputed geometry agrees with the letterbox
        np.testing.assert_allclose(scale_boxes(out.shape[:2], fwd, (h0, w0)), boxes, atol=1e-9)
    tback = scale_boxes(out.shape[:2], torch.from_numpy(fwd), (h0, w0), ratio_pad=((rh, rw), (padw, padh)))
    np.testing.assert_allclose(tback.numpy(), boxes, atol=1e-9)


# ----------------------------------------------------------------------------- flips / affine


def test_flip_twice_is_identity_and_flip_moves_content():
    img, px = scene(40, 60, [(0, 5, 10, 20, 30), (2, 40, 2, 58, 12)])
    labels = np.concatenate([px[:, :1], xyxy2xywhn(px[:, 1:], 60, 40)], 1)
    for flip in (fliplr, flipud):
        a, la = flip(img, labels)
        b, lb = flip(a, la)
        np.testing.assert_array_equal(b, img)
        np.testing.assert_allclose(lb, labels, rtol=0, atol=1e-7)  # 1 - (1 - x) in float32
        pix = np.concatenate([la[:, :1], xywhn2xyxy(la[:, 1:], 60, 40)], 1)
        assert assert_boxes_on_objects(a, pix) == 2


def test_affine_identity_parameters_keep_image_and_boxes_exactly():
    img, labels = scene(48, 64, [(0, 3, 4, 30, 20), (1, 35, 25, 63, 47)])
    rng = np.random.default_rng(0)
    out, lab = random_perspective(img, labels, rng)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(lab, labels)
    assert rng.random() == np.random.default_rng(0).random()  # nothing was drawn


def test_affine_boxes_follow_pixels():
    img, labels = scene(
        120, 160, [(0, 10, 10, 60, 50), (1, 90, 20, 150, 70), (2, 30, 70, 80, 115), (3, 100, 80, 140, 110)]
    )
    for seed in range(6):
        out, lab = random_perspective(
            img, labels, np.random.default_rng(seed), degrees=10, translate=0.1, scale=0.5, shear=2
        )
        assert out.shape == img.shape
        assert len(lab) >= 1
        assert assert_boxes_on_objects(out, lab) >= 1
    # a pure scale about the centre maps box corners exactly
    out, lab = random_perspective(img, labels, np.random.default_rng(3), scale=0.5)
    s = (lab[0, 3] - lab[0, 1]) / 50
    centre = np.array([80, 60])
    expected = (labels[0, 1:].reshape(2, 2) - centre) * s + centre
    np.testing.assert_allclose(lab[0, 1:].reshape(2, 2), expected, atol=1e-3)
    # the rectangle's interior has its colour, the ring just outside has not
    x1, y1, x2, y2 = np.round(lab[0, 1:]).astype(int)
    assert (np.abs(out[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].astype(int) - COLOURS[0]).max(-1) <= 2).all()
    assert (out[y2 + 1, x1:x2] == 60).all() and (out[y1:y2, x2 + 1] == 60).all()


def test_box_candidates_rule():
    before = np.array([[0, 0, 100, 100]] * 4, np.float32)
    after = np.array(
        [
            [0, 0, 50, 50],  # 25% area kept
            [0, 0, 2, 50],  # 2 px wide: too thin
            [0, 0, 30, 30],  # 9% of area: too small
            [0, 0, 100, 4.9],  # aspect > 20
        ],
        np.float32,
    )
    np.testing.assert_array_equal(box_candidates(before, after), [True, False, False, False])


def test_perspective_with_border_crops_and_filters():
    img, labels = scene(200, 200, [(0, 0, 0, 40, 40), (1, 80, 80, 120, 120)])
    out, lab = random_perspective(img, labels, np.random.default_rng(0), border=(-50, -50))
    assert out.shape == (100, 100, 3)
    # identity transform except the crop: box 0 lies outside, box 1 moves by -50
    np.testing.assert_allclose(lab, [[1, 30, 30, 70, 70]])


# ----------------------------------------------------------------------------- mosaic / mixup / hsv


def test_mosaic_boxes_land_on_the_right_objects():
    s = 64
    tiles = []
    for k in range(4):
        img, px = scene(48 + 4 * k, 64 - 8 * k, [(k, 4, 6, 30, 40), ((k + 1) % 4, 34, 8, 50 - 8 * k, 28)])
        h, w = img.shape[:2]
        tiles.append((img, np.concatenate([px[:, :1], xyxy2xywhn(px[:, 1:], w, h)], 1)))
    for centre in [(64, 64), (40, 90), (95, 33)]:
        canvas, lab = mosaic4([t[0] for t in tiles], [t[1] for t in tiles], s, centre)
        assert canvas.shape == (128, 128, 3)
        assert len(lab) == 8
        assert assert_boxes_on_objects(canvas, lab, tol=0, min_side=1.0) >= 4


def test_mosaic_tile_placement_exact():
    s = 32
    imgs = [np.full((32, 32, 3), 10 * (k + 1), np.uint8) for k in range(4)]
    empty = [np.zeros((0, 5), np.float32)] * 4
    canvas, lab = mosaic4(imgs, empty, s, (40, 20))
    assert lab.shape == (0, 5)
    assert (canvas[0:20, 8:40] == 10).all() and (canvas[0:20, 40:64] == 20).all()
    assert (canvas[20:52, 8:40] == 30).all() and (canvas[20:52, 40:64] == 40).all()
    assert (canvas[:, :8] == 114).all() and (canvas[52:] == 114).all()


def test_mixup_blend_and_labels():
    a, b = np.full((4, 4, 3), 200, np.uint8), np.full((4, 4, 3), 100, np.uint8)
    la, lb = np.ones((2, 5), np.float32), np.zeros((1, 5), np.float32)
    out, lab = mixup(a, la, b, lb, 0.25)
    assert (out == 125).all() and lab.shape == (3, 5)
    out, _ = mixup(a, la, b, lb, 1.0)
    np.testing.assert_array_equal(out, a)


def test_hsv_zero_gains_is_exact_noop_and_gains_are_seeded():
    img, _ = scene(16, 16, [(0, 2, 2, 10, 10)])
    rng = np.random.default_rng(0)
    assert augment_hsv(img, rng, 0.0, 0.0, 0.0) is img
    assert rng.random() == np.random.default_rng(0).random()
    a = augment_hsv(img, np.random.default_rng(5), 0.015, 0.7, 0.4)
    b = augment_hsv(img, np.random.default_rng(5), 0.015, 0.7, 0.4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, img)


def test_augment_params_validation(caplog):
    assert AugmentParams.from_hyp(None) == AugmentParams()
    p = AugmentParams.from_hyp({"mosaic": 0, "lr0": 0.01, "mixup": 0.15})
    assert p.mosaic == 0.0 and p.mixup == 0.15 and p.fliplr == 0.5
    with pytest.raises(ValueError, match=r"'mosaic'\] is a probability"):
        AugmentParams.from_hyp({"mosaic": 1.5})
    with pytest.raises(ValueError, match=r"'scale'\] must be in"):
        AugmentParams.from_hyp({"scale": 1.0})
    with pytest.raises(TypeError, match="hsv_h"):
        AugmentParams.from_hyp({"hsv_h": "0.1"})
    with caplog.at_level(logging.WARNING):
        AugmentParams.from_hyp({"copy_paste": 0.1})
    assert "copy_paste" in caplog.text and "not supported" in caplog.text
