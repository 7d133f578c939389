"""``cache_images`` (the official ``--cache ram``): identical items, read-only cached arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yoloattn.data import YoloDataset, load_dataset_config

HYP = dict(mosaic=1.0, mixup=0.5, degrees=5.0, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, fliplr=0.5, flipud=0.2)


@pytest.mark.parametrize("mode", ["train", "val"])
def test_cached_items_equal_uncached_items(tiny_data, tmp_path, mode):
    d = load_dataset_config(tiny_data)
    kw = dict(imgsz=64, cache_dir=str(tmp_path), nc=d.nc)
    if mode == "train":
        kw.update(augment=True, hyp=HYP)
    else:
        kw.update(rect=True, batch_size=2, pad=0.5)
    plain = YoloDataset(d.train, **kw)
    cached = YoloDataset(d.train, cache_images=True, **kw)
    assert cached._ims is not None and len(cached._ims) == len(plain)
    assert all(not im.flags.writeable for im in cached._ims)
    for key in [(i, epoch, 7) for i in range(len(plain)) for epoch in (0, 3)]:
        a, b = plain[key], cached[key]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[3] == b[3], key
    before = [im.copy() for im in cached._ims]
    for i in range(len(cached)):
        cached[(i, 5, 1)]
    assert all(np.array_equal(x, y) for x, y in zip(before, cached._ims))  # never mutated


def test_cache_is_skipped_when_memory_is_short(tiny_data, tmp_path, monkeypatch, caplog):
    import os

    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda k: 1 if k == "SC_AVPHYS_PAGES" else real(k))
    d = load_dataset_config(tiny_data)
    ds = YoloDataset(d.train, imgsz=64, cache_dir=str(tmp_path), cache_images=True)
    assert ds._ims is None and "not caching images" in caplog.text
    assert ds[0][0].shape[0] == 3
