"""The scan cache: reuse, invalidation, read-only label folders, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from data_helpers import make_split, tiny_items

from yoloattn.data.scan import scan_split


def test_cache_reuse_and_invalidation(tmp_path):
    img_dir = make_split(tmp_path, "train", tiny_items(3))
    r1 = scan_split(img_dir, nc=4)
    cache = tmp_path / "labels" / "train.cache.npz"
    assert not r1.from_cache and r1.cache_file == str(cache) and cache.is_file()
    with np.load(cache, allow_pickle=False) as z:  # no pickled objects inside
        assert {a.dtype.kind for a in z.values()} <= {"i", "f", "U"}
    r2 = scan_split(img_dir, nc=4)
    assert r2.from_cache and r2.im_files == r1.im_files
    for a, b in zip(r1.labels, r2.labels):
        np.testing.assert_array_equal(a, b)
    # changing one label file (content, size and mtime) invalidates the cache
    lf = tmp_path / "labels" / "train" / "im01.txt"
    lf.write_text("3 0.5 0.5 0.25 0.25\n")
    r3 = scan_split(img_dir, nc=4)
    assert not r3.from_cache
    np.testing.assert_allclose(r3.labels[1], [[3, 0.5, 0.5, 0.25, 0.25]])
    # same size, new mtime only: still a rescan
    st = lf.stat()
    os.utime(lf, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not scan_split(img_dir, nc=4).from_cache
    # a different nc changes the checks, hence the key
    assert not scan_split(img_dir, nc=3).from_cache


def test_cache_falls_back_to_user_dir_when_labels_are_read_only(tmp_path, monkeypatch):
    img_dir = make_split(tmp_path / "ds", "train", tiny_items(2))
    user = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(user))
    labels_root = tmp_path / "ds" / "labels"
    labels_root.chmod(0o555)
    try:
        r = scan_split(img_dir, nc=4)
        assert r.cache_file is not None and Path(r.cache_file).parent == user / "yoloattn"
        assert not (labels_root / "train.cache.npz").exists()
        assert scan_split(img_dir, nc=4).from_cache
    finally:
        labels_root.chmod(0o755)


def test_scanning_the_packaged_demo_data_writes_nothing_into_the_package(tmp_path, monkeypatch):
    import yoloattn

    package = Path(yoloattn.__file__).parent
    demo = package / "demo" / "raccoon" / "images" / "train"
    before = sorted(p for p in package.rglob("*") if "__pycache__" not in p.parts)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    r = scan_split(demo, nc=1)
    after = sorted(p for p in package.rglob("*") if "__pycache__" not in p.parts)
    assert after == before, sorted(set(after) - set(before))
    assert r.cache_file is not None and Path(r.cache_file).parent == tmp_path / "xdg" / "yoloattn"
    assert scan_split(demo, nc=1).from_cache


def test_cache_write_is_atomic_a_failed_write_keeps_the_old_cache(tmp_path, monkeypatch, caplog):
    img_dir = make_split(tmp_path, "train", tiny_items(2))
    cache_dir = tmp_path / "c"
    r1 = scan_split(img_dir, nc=4, cache_dir=cache_dir)
    cache = Path(r1.cache_file)
    old = cache.read_bytes()
    assert sorted(p.name for p in cache_dir.iterdir()) == [cache.name]  # no temporary file left

    def torn_savez(f, **arrays):  # writes half a file, then the disk is full
        f.write(old[: len(old) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", torn_savez)
    (tmp_path / "labels" / "train" / "im00.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    r2 = scan_split(img_dir, nc=4, cache_dir=cache_dir)
    assert not r2.from_cache and r2.cache_file is None and "could not save the scan cache" in caplog.text
    assert cache.read_bytes() == old  # the old cache, whole
    assert sorted(p.name for p in cache_dir.iterdir()) == [cache.name]
