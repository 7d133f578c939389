"""Batches: collate format, determinism across seeds/epochs/workers, probabilities of 0, DDP split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yoloattn.data.boxes import xywhn2xyxy
from yoloattn.data.dataset import YoloDataset
from yoloattn.data.loader import Batch, YoloBatchSampler, build_dataloader, collate_fn

COLOURS = [(230, 20, 20), (20, 200, 40), (30, 60, 220), (240, 220, 30)]
OFF = {
    "hsv_h": 0.0,
    "hsv_s": 0.0,
    "hsv_v": 0.0,
    "degrees": 0.0,
    "translate": 0.0,
    "scale": 0.0,
    "shear": 0.0,
    "perspective": 0.0,
    "flipud": 0.0,
    "fliplr": 0.0,
    "mosaic": 0.0,
    "mixup": 0.0,
}


@pytest.fixture(scope="module")
def img_dir(tmp_path_factory) -> Path:
    """Eight small PNGs with class-coloured rectangles and their YOLO labels."""
    root = tmp_path_factory.mktemp("ds")
    idir, ldir = root / "images" / "train", root / "labels" / "train"
    idir.mkdir(parents=True)
    ldir.mkdir(parents=True)
    for k in range(8):
        h, w = (48, 64) if k % 2 else (64, 48)
        img = np.full((h, w, 3), 60, np.uint8)
        lines = []
        for j, (x1, y1, x2, y2) in enumerate([(3, 3, 25, 27), (w - 20, h - 22, w - 2, h - 3)]):
            c = (k + j) % 4
            img[y1:y2, x1:x2] = COLOURS[c]
            lines.append(f"{c} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}")
        Image.fromarray(img).save(idir / f"im{k}.png")
        (ldir / f"im{k}.txt").write_text("\n".join(lines) + "\n")
    return idir


def dataset(img_dir: Path, tmp_path: Path, **kw) -> YoloDataset:
    kw.setdefault("imgsz", 64)
    return YoloDataset(img_dir, nc=4, cache_dir=tmp_path / "cache", **kw)


def batches(loader) -> list[Batch]:
    return list(loader)


def assert_same(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.images, y.images) and torch.equal(x.targets, y.targets) and x.paths == y.paths


def test_collate_format(img_dir, tmp_path):
    ds = dataset(img_dir, tmp_path)
    b = collate_fn([ds[0], ds[1], ds[2]])
    assert b.images.dtype == torch.uint8 and b.images.shape == (3, 3, 64, 64)
    assert b.targets.dtype == torch.float32 and b.targets.shape == (6, 6)
    assert b.targets[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert ((b.targets[:, 2:] >= 0) & (b.targets[:, 2:] <= 1)).all()
    assert len(b.paths) == 3 and b.shapes[0][0] == (64, 48)
    images, targets, paths, shapes = b  # unpacks like the official 4-tuple
    assert images is b.images
    with pytest.raises(ValueError, match="share a size"):
        collate_fn([ds[0], (torch.zeros(3, 32, 32, dtype=torch.uint8), torch.zeros(0, 6), "x", None)])


def test_same_seed_same_batches_any_worker_count(img_dir, tmp_path):
    ds = dataset(img_dir, tmp_path, augment=True, hyp={"mixup": 0.5})
    a = batches(build_dataloader(ds, 4, True, 0, seed=3))
    b = batches(build_dataloader(ds, 4, True, 0, seed=3))
    assert_same(a, b)
    c = batches(build_dataloader(ds, 4, True, 2, seed=3))
    assert_same(a, c)
    d = batches(build_dataloader(ds, 4, True, 0, seed=4))
    assert not torch.equal(a[0].images, d[0].images)
    # a new epoch reshuffles and re-augments; going back reproduces epoch 0
    loader = build_dataloader(ds, 4, True, 0, seed=3)
    loader.set_epoch(1)
    e1 = batches(loader)
    assert e1[0].paths != a[0].paths or not torch.equal(e1[0].images, a[0].images)
    loader.set_epoch(0)
    assert_same(a, batches(loader))


def test_probability_zero_switches_steps_off_exactly(img_dir, tmp_path):
    plain = [dataset(img_dir, tmp_path, augment=True, hyp=OFF, seed=s)[1] for s in (0, 1, 2)]
    for other in plain[1:]:
        assert torch.equal(other[0], plain[0][0]) and torch.equal(other[1], plain[0][1])
    # with everything off the augmented item is the letterboxed image (bilinear resize)
    ref = dataset(img_dir, tmp_path)[1]
    assert ref[0].shape == plain[0][0].shape and torch.equal(ref[1], plain[0][1])
    # fliplr 1 vs 0 with HSV and affine on: exactly a mirror, other steps unchanged
    on = {**OFF, "hsv_s": 0.5, "hsv_v": 0.3, "scale": 0.3, "translate": 0.1}
    a = dataset(img_dir, tmp_path, augment=True, hyp={**on, "fliplr": 0.0}, seed=7)[3]
    b = dataset(img_dir, tmp_path, augment=True, hyp={**on, "fliplr": 1.0}, seed=7)[3]
    assert torch.equal(b[0], a[0].flip(-1))
    torch.testing.assert_close(b[1][:, 2], 1 - a[1][:, 2])
    assert not torch.equal(a[0], ref[0])


def test_mosaic_batches_boxes_on_objects(img_dir, tmp_path):
    hyp = {**OFF, "mosaic": 1.0, "scale": 0.5, "translate": 0.1, "degrees": 3.0, "fliplr": 0.5, "flipud": 0.5}
    ds = dataset(img_dir, tmp_path, augment=True, hyp=hyp)
    checked = 0
    for batch in build_dataloader(ds, 4, True, 0, seed=0):
        assert batch.images.shape[1:] == (3, 64, 64) and all(s is None for s in batch.shapes)
        for t in batch.targets:
            i, c = int(t[0]), int(t[1])
            x1, y1, x2, y2 = xywhn2xyxy(t[2:].numpy().astype(np.float64), 64, 64)
            if min(x2 - x1, y2 - y1) < 6:
                continue
            px = batch.images[i, :, int((y1 + y2) / 2), int((x1 + x2) / 2)].numpy().astype(int)
            assert np.abs(px - COLOURS[c]).max() <= 40, (c, px)
            checked += 1
    assert checked >= 4


def test_distributed_split_is_disjoint_and_even():
    shares = [list(YoloBatchSampler(10, 2, shuffle=True, seed=1, rank=r, world_size=3)) for r in range(3)]
    idx = [[k[0] for b in s for k in b] for s in shares]
    assert [len(i) for i in idx] == [4, 4, 4]  # 10 padded to 12
    assert set().union(*map(set, idx)) == set(range(10))
    assert len(YoloBatchSampler(10, 2, rank=0, world_size=3)) == 2
    groups = [[0, 1], [2, 3], [4]]
    g0 = list(YoloBatchSampler(5, 2, rank=0, world_size=2, groups=groups))
    g1 = list(YoloBatchSampler(5, 2, rank=1, world_size=2, groups=groups))
    assert [[k[0] for k in b] for b in g0] == [[0, 1], [4]] and [[k[0] for k in b] for b in g1] == [
        [2, 3],
        [0, 1],
    ]
    with pytest.raises(ValueError, match="rank 3 is not valid"):
        YoloBatchSampler(10, 2, rank=3, world_size=2)


def test_rect_loader_keeps_groups_and_checks_batch_size(img_dir, tmp_path):
    ds = dataset(img_dir, tmp_path, rect=True, batch_size=4, pad=0.5)
    shapes = [tuple(b.images.shape[2:]) for b in build_dataloader(ds, 4, True, 0, seed=0)]
    assert sorted(shapes) == [(64, 96), (96, 64)]
    with pytest.raises(ValueError, match="batch_size=4 but the loader asks for 2"):
        build_dataloader(ds, 2, False, 0)
