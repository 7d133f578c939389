"""The fast image path (#21): the one-step mosaic against the canvas path, HSV tables against
Pillow's HSV, the JPEG decoders, the worker defaults."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from yoloattn.data.augment import _affine_matrix, augment_hsv, mosaic4, random_perspective, warp
from yoloattn.data.boxes import xyxy2xywhn
from yoloattn.data.colour import hsv_jitter
from yoloattn.data.dataset import read_image
from yoloattn.data.loader import default_workers
from yoloattn.data.mosaic import mosaic4_warp, random_mosaic

COLOURS = [(230, 20, 20), (20, 200, 40), (30, 60, 220), (240, 220, 30)]


def tiles(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Four grey tiles of different sizes with two class-coloured rectangles each."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for k in range(4):
        h, w = 40 + 8 * k, 64 - 6 * k
        img = np.full((h, w, 3), 60, np.uint8)
        px = []
        for j in range(2):
            c = (k + j) % 4
            x1, y1 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x2, y2 = x1 + int(rng.integers(12, 20)), y1 + int(rng.integers(12, 20))
            img[y1:y2, x1:x2] = COLOURS[c]
            px.append((c, x1, y1, x2, y2))
        p = np.array(px, np.float32)
        imgs.append(img)
        labels.append(np.concatenate([p[:, :1], xyxy2xywhn(p[:, 1:], w, h)], 1))
    return imgs, labels


def colour_at_centres(chw: np.ndarray, labels: np.ndarray, min_side: float = 8.0) -> int:
    checked = 0
    for c, x1, y1, x2, y2 in labels:
        if min(x2 - x1, y2 - y1) < min_side:
            continue
        px = chw[:, int((y1 + y2) / 2), int((x1 + x2) / 2)].astype(int)
        assert np.abs(px - COLOURS[int(c)]).max() <= 40, (c, px)
        checked += 1
    return checked


@pytest.mark.parametrize("seed", range(6))
def test_one_step_mosaic_matches_the_canvas_path(seed):
    size = 64
    imgs, labels = tiles(seed)
    rng = np.random.default_rng(seed)
    centre = (int(rng.integers(32, 97)), int(rng.integers(32, 97)))
    m, s = _affine_matrix(rng, (128, 128), (64, 64), 0.0, 0.1, 0.5, 0.0, 0.0)
    fast, fast_lab = mosaic4_warp(imgs, labels, size, centre, m)
    canvas, lab = mosaic4(imgs, labels, size, centre)
    ref = warp(canvas, m, (64, 64)).transpose(2, 0, 1).astype(int)
    assert fast.shape == (3, 64, 64) and fast.dtype == np.uint8
    # the same picture up to interpolation at the tile edges (each tile moves < 1 px)
    assert np.abs(fast.astype(int) - ref).mean() < 8.0
    # the same boxes, each within a pixel, and every box on its object
    _, ref_lab = random_perspective(canvas, lab, np.random.default_rng(seed), border=(-32, -32))  # shape only
    assert fast_lab.shape[1] == 5 and ref_lab.shape[1] == 5
    from yoloattn.data.augment import _map_labels

    expected = _map_labels(lab, m, s, (64, 64))
    assert len(fast_lab) == len(expected)
    order_f, order_e = np.lexsort(fast_lab.T[::-1]), np.lexsort(expected.T[::-1])
    np.testing.assert_array_equal(fast_lab[order_f, 0], expected[order_e, 0])
    np.testing.assert_allclose(fast_lab[order_f, 1:], expected[order_e, 1:], atol=0.8)
    colour_at_centres(fast, fast_lab)


def test_random_mosaic_draws_as_the_canvas_path_and_falls_back_exactly():
    imgs, labels = tiles(3)
    # rotation: the canvas path, pixel for pixel
    img, lab = random_mosaic(imgs, labels, 64, (60, 70), np.random.default_rng(1), degrees=5, scale=0.3)
    canvas, clab = mosaic4(imgs, labels, 64, (60, 70))
    ref, ref_lab = random_perspective(
        canvas, clab, np.random.default_rng(1), degrees=5, scale=0.3, border=(-32, -32)
    )
    np.testing.assert_array_equal(img, ref.transpose(2, 0, 1))
    np.testing.assert_array_equal(lab, ref_lab)
    # scale + translate: the same draws (the generators end in the same state)
    r1, r2 = np.random.default_rng(2), np.random.default_rng(2)
    random_mosaic(imgs, labels, 64, (60, 70), r1, translate=0.1, scale=0.5)
    random_perspective(canvas, clab, r2, translate=0.1, scale=0.5, border=(-32, -32))
    assert r1.random() == r2.random()


def pillow_hsv(img: np.ndarray, dh: float, gs: float, gv: float) -> np.ndarray:
    """The Pillow HSV round trip used before #21 (reference)."""
    x = np.arange(256, dtype=np.float64)
    lut = np.concatenate(
        [
            np.mod(np.round(x + dh * 256.0), 256),
            np.clip(np.round(x * (1 + gs)), 0, 255),
            np.clip(np.round(x * (1 + gv)), 0, 255),
        ]
    )
    hsv = Image.fromarray(img, "RGB").convert("HSV")
    return np.asarray(hsv.point(lut.astype(np.int64).tolist()).convert("RGB"))


def test_hsv_tables_agree_with_pillows_hsv():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 80, 3)).astype(np.uint8)
    chw = np.ascontiguousarray(img.transpose(2, 0, 1))
    # zero gains: a round trip within 3 levels (Pillow's: 7)
    assert np.abs(hsv_jitter(chw, 0.0, 0.0, 0.0).astype(int) - chw).max() <= 3
    for dh, gs, gv in [(0.01, 0.3, -0.2), (0.2, -0.5, 0.4), (-0.4, 0.7, 0.1), (0.5, 0.0, -0.6)]:
        ours = hsv_jitter(chw, dh, gs, gv).transpose(1, 2, 0).astype(int)
        ref = pillow_hsv(img, dh, gs, gv).astype(int)
        d = np.abs(ours - ref)
        assert d.mean() < 1.5 and np.percentile(d, 99) <= (6 if abs(dh) < 0.1 else 10), (
            dh,
            gs,
            gv,
            d.mean(),
            d.max(),
        )
        np.testing.assert_allclose(ours.mean((0, 1)), ref.mean((0, 1)), atol=1.0)
    grey = hsv_jitter(chw, 0.3, -1.0, 0.0)  # no saturation left: grey at the pixel's value
    assert (grey == grey[:1]).all() and (np.abs(grey[0].astype(int) - img.max(-1)) <= 1).all()
    np.testing.assert_array_equal(hsv_jitter(chw, 1.0, 0.0, 0.0), hsv_jitter(chw, 0.0, 0.0, 0.0))
    # the HWC wrapper draws as before and returns the same pixels
    a = augment_hsv(img, np.random.default_rng(5), 0.015, 0.7, 0.4)
    b = augment_hsv(chw, np.random.default_rng(5), 0.015, 0.7, 0.4, channels_first=True)
    np.testing.assert_array_equal(a, b.transpose(1, 2, 0))
    with pytest.raises(ValueError, match=r"uint8 \[3, H, W\]"):
        hsv_jitter(img, 0.1, 0.1, 0.1)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_jpeg_decoders_give_pillows_pixels(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    arr = (rng.integers(0, 256, (24, 40, 3)) // 32 * 32).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "im.jpg"
    Image.fromarray(arr).save(path, exif=exif.tobytes(), quality=90)
    ours, size0 = read_image(path)
    from PIL import ImageOps

    with Image.open(path) as im:
        ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert ours.shape == ref.shape and size0 == ref.shape[:2] and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, ref)


def test_default_workers_leave_a_cpu_to_the_process(monkeypatch):
    for cpus, world, expected in [(1, 1, 0), (2, 1, 1), (4, 1, 3), (32, 1, 8), (16, 2, 7), (4, 4, 0)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)), raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda n=cpus: n)
        assert default_workers(world) == expected, (cpus, world)


def test_one_step_mosaic_items_through_the_loader(tmp_path):
    from yoloattn.data.boxes import xywhn2xyxy
    from yoloattn.data.dataset import YoloDataset
    from yoloattn.data.loader import build_dataloader

    idir, ldir = tmp_path / "images", tmp_path / "labels"
    idir.mkdir()
    ldir.mkdir()
    for k, (img, lab) in enumerate(zip(*tiles(7))):
        Image.fromarray(img).save(idir / f"im{k}.png")
        (ldir / f"im{k}.txt").write_text("".join(f"{int(r[0])} {r[1]} {r[2]} {r[3]} {r[4]}\n" for r in lab))
    hyp = {
        "mosaic": 1.0,
        "scale": 0.5,
        "translate": 0.1,
        "fliplr": 0.5,
        "hsv_h": 0.0,
        "hsv_s": 0.0,
        "hsv_v": 0.0,
    }
    ds = YoloDataset(idir, imgsz=64, augment=True, hyp=hyp, nc=4, cache_dir=tmp_path / "c")
    checked = 0
    for epoch in range(3):
        loader = build_dataloader(ds, 2, True, 0, seed=epoch)
        for batch in loader:
            assert batch.images.shape[1:] == (3, 64, 64) and batch.images.dtype.is_floating_point is False
            for t in batch.targets:
                box = xywhn2xyxy(t[2:].numpy().astype(np.float64), 64, 64)
                lab = np.array([[float(t[1]), *box]])
                checked += colour_at_centres(batch.images[int(t[0])].numpy(), lab)
    assert checked >= 8
