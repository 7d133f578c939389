"""Dataset YAML, discovery, checking (with a corrupted raccoon copy), cache, reading, items."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yoloattn.data.boxes import scale_boxes, xywhn2xyxy
from yoloattn.data.dataset import (
    YoloDataset,
    find_images,
    img2label_path,
    load_dataset_config,
    read_image,
    scan_split,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
COLOURS = [(230, 20, 20), (20, 200, 40), (30, 60, 220), (240, 220, 30)]


def make_split(
    root: Path, split: str, items: list[tuple[int, int, list[tuple[int, int, int, int, int]]]]
) -> Path:
    """Write PNG images (grey with solid class-coloured rectangles) and YOLO labels."""
    img_dir, lbl_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for k, (h, w, rects) in enumerate(items):
        img = np.full((h, w, 3), 60, np.uint8)
        lines = []
        for c, x1, y1, x2, y2 in rects:
            img[y1:y2, x1:x2] = COLOURS[c]
            lines.append(
                f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            )
        Image.fromarray(img).save(img_dir / f"im{k:02d}.png")
        (lbl_dir / f"im{k:02d}.txt").write_text("\n".join(lines) + "\n")
    return img_dir


def tiny_items(n: int = 6) -> list[tuple[int, int, list[tuple[int, int, int, int, int]]]]:
    out = []
    for k in range(n):
        h, w = (48, 64) if k % 2 else (64, 40)
        out.append((h, w, [(k % 4, 4, 4, 24, 30), ((k + 1) % 4, w - 16, h - 20, w - 2, h - 2)]))
    return out


# ----------------------------------------------------------------------------- YAML


def test_load_dataset_config_resolves_paths_and_names(tmp_path):
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "a.yaml").write_text(
        "path: ../data\ntrain: images/train\nval: [images/val, lists/extra.txt]\nnames: [cat, dog]\n"
    )
    cfg = load_dataset_config(d / "a.yaml")
    root = (tmp_path / "data").resolve()
    assert cfg.root == root and cfg.nc == 2 and cfg.names == ["cat", "dog"]
    assert cfg.train == [root / "images" / "train"]
    assert cfg.val == [root / "images" / "val", root / "lists" / "extra.txt"] and cfg.test == []
    (d / "b.yaml").write_text("train: t\nval: v\ntest: /abs/test\nnc: 2\nnames: {1: dog, 0: cat}\n")
    cfg = load_dataset_config(d / "b.yaml")
    assert cfg.root == d.resolve() and cfg.names == ["cat", "dog"] and cfg.test == [Path("/abs/test")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("val: v\nnames: [a]\n", "missing required key 'train'"),
        ("train: t\nval: v\nnc: 3\nnames: [a, b]\n", "'nc' is 3 but 'names' has 2"),
        ("train: t\nval: v\nnames: {0: a, 2: b}\n", "without gaps"),
        ("train: t\nval: v\n", "needs 'names'"),
        ("- a\n- b\n", "expected a mapping"),
        ("train: [t\n", "not valid YAML"),
    ],
)
def test_load_dataset_config_errors(tmp_path, text, match):
    (tmp_path / "d.yaml").write_text(text)
    with pytest.raises(ValueError, match=match):
        load_dataset_config(tmp_path / "d.yaml")


def test_load_dataset_config_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset YAML not found"):
        load_dataset_config(tmp_path / "nope.yaml")


# ----------------------------------------------------------------------------- discovery


def test_img2label_path_replaces_last_images_component():
    assert img2label_path("/d/images/x/images/train/a.JPG") == Path("/d/images/x/labels/train/a.txt")
    assert img2label_path("/d/imgs/a.png") == Path("/d/imgs/a.txt")
    assert img2label_path("/d/images.png") == Path("/d/images.txt")


def test_sources_folder_txt_list_and_list_of_both(tmp_path):
    img_dir = make_split(tmp_path, "train", tiny_items(4))
    (tmp_path / "list.txt").write_text(
        "images/train/im00.png\n\n" + str(img_dir / "im02.png") + "\nimages/gone.png\n"
    )
    ims, probs, n = find_images([img_dir, tmp_path / "list.txt"])
    assert [p.name for p in ims] == ["im00.png", "im01.png", "im02.png", "im03.png", "im00.png", "im02.png"]
    assert [(p.kind, p.line) for p in probs] == [("missing_file", 4)]
    assert n == 7
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_images(tmp_path / "missing")


# ----------------------------------------------------------------------------- corrupted raccoon


RACCOON = [
    "raccoon-131",
    "raccoon-132",
    "raccoon-150",
    "raccoon-151",
    "raccoon-155",
    "raccoon-159",
    "raccoon-166",
]


@pytest.mark.skipif(
    not (SHARED / "raccoon").is_dir(), reason=f"shared dataset not found at {SHARED / 'raccoon'}"
)
def test_corrupted_raccoon_copy_reports_exactly(tmp_path):
    src = SHARED / "raccoon"
    img_dir, lbl_dir = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    img_dir.mkdir(parents=True)
    lbl_dir.mkdir(parents=True)
    for name in RACCOON:
        shutil.copy(src / "images" / "train" / f"{name}.jpg", img_dir)
        shutil.copy(src / "labels" / "train" / f"{name}.txt", lbl_dir)
    good = (lbl_dir / "raccoon-131.txt").read_text().strip()
    # 0 raccoon-131: untouched (1 box)
    # 1 raccoon-132: truncated JPEG -> skipped
    data = (img_dir / "raccoon-132.jpg").read_bytes()
    (img_dir / "raccoon-132.jpg").write_bytes(data[: len(data) // 2])
    # 2 raccoon-150 (greyscale): a 4-field line, plus its good line
    (lbl_dir / "raccoon-150.txt").write_text((lbl_dir / "raccoon-150.txt").read_text() + "0 0.5 0.5 0.2\n")
    # 3 raccoon-151: non-numeric, class out of range, non-integer class, plus the good line
    (lbl_dir / "raccoon-151.txt").write_text(
        "0 0.5 abc 0.2 0.2\n1 0.5 0.5 0.2 0.2\n0.5 0.5 0.5 0.2 0.2\n"
        + (lbl_dir / "raccoon-151.txt").read_text()
    )
    # 4 raccoon-155: out of bounds, slightly outside (clipped), zero size, duplicate
    l155 = (lbl_dir / "raccoon-155.txt").read_text().strip()
    (lbl_dir / "raccoon-155.txt").write_text(
        f"{l155}\n0 1.3 0.5 0.2 0.2\n0 0.1 0.5 0.204 0.2\n0 0.5 0.5 0 0.2\n{l155}\n"
    )
    # 5 raccoon-159: no label file -> background
    (lbl_dir / "raccoon-159.txt").unlink()
    # 6 raccoon-166: empty label file -> background, not a problem
    (lbl_dir / "raccoon-166.txt").write_text("")
    # not images: a text file posing as a JPEG, and a README
    (img_dir / "fake.jpg").write_text("this is not an image")
    (img_dir / "README.md").write_text("notes")

    r = scan_split(img_dir, nc=1, cache_dir=tmp_path / "cache")
    assert r.counts == {
        "unsupported_file": 1,
        "corrupt_image": 2,
        "missing_label": 1,
        "field_count": 1,
        "non_numeric": 1,
        "class_id": 2,
        "out_of_bounds": 1,
        "zero_size": 1,
        "duplicate": 1,
        "clipped": 1,
    }
    by_kind = {(p.kind, Path(p.file).name, p.line) for p in r.problems}
    assert by_kind == {
        ("unsupported_file", "README.md", None),
        ("corrupt_image", "fake.jpg", None),
        ("corrupt_image", "raccoon-132.jpg", None),
        ("missing_label", "raccoon-159.txt", None),
        ("field_count", "raccoon-150.txt", 2),
        ("non_numeric", "raccoon-151.txt", 1),
        ("class_id", "raccoon-151.txt", 2),
        ("class_id", "raccoon-151.txt", 3),
        ("out_of_bounds", "raccoon-155.txt", 2),
        ("clipped", "raccoon-155.txt", 3),
        ("zero_size", "raccoon-155.txt", 4),
        ("duplicate", "raccoon-155.txt", 5),
    }
    assert r.n_found == 9 and r.n_images == 6 and r.n_skipped == 3 and r.n_dropped_lines == 7
    assert r.n_backgrounds == 2
    assert r.n_boxes == 1 + 1 + 1 + 2  # 131, 150, 151, 155 (its own line + the clipped one)
    names = [Path(f).stem for f in r.im_files]
    assert names == ["raccoon-131", "raccoon-150", "raccoon-151", "raccoon-155", "raccoon-159", "raccoon-166"]
    np.testing.assert_allclose(r.labels[0], [[float(v) for v in good.split()]], atol=1e-6)
    clipped = r.labels[3][1]
    np.testing.assert_allclose(clipped, [0, 0.101, 0.5, 0.202, 0.2], atol=1e-6)  # x1 -0.002 -> 0
    assert "raccoon-155.txt:5: duplicate of line 1" in "\n".join(r.problem_lines())
    # the dataset reads greyscale as RGB and keeps exactly the usable images
    ds = YoloDataset(img_dir, imgsz=64, nc=1, cache_dir=tmp_path / "cache")
    assert ds.report.from_cache and len(ds) == 6
    img, targets, path, _ = ds[1]
    assert img.shape == (3, 64, 64) and Path(path).stem == "raccoon-150" and targets.shape == (1, 6)


def test_nothing_usable_is_an_error_that_says_why(tmp_path):
    img_dir = tmp_path / "images" / "train"
    img_dir.mkdir(parents=True)
    (img_dir / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (img_dir / "b.txt").write_text("x")
    with pytest.raises(
        ValueError, match=r"no usable images.*all 2 files were rejected: 1 unsupported_file.*1 corrupt"
    ):
        YoloDataset(img_dir, imgsz=32, cache_dir=tmp_path / "c")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no files found"):
        YoloDataset(empty, imgsz=32, cache_dir=tmp_path / "c")


# ----------------------------------------------------------------------------- reading


def test_exif_rotation_greyscale_and_rgba(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(arr).save(img_dir / "rot.jpg", exif=exif.tobytes(), quality=100)
    Image.fromarray(arr[..., 0]).save(img_dir / "grey.png")
    Image.fromarray(np.dstack([arr, np.full((20, 40), 128, np.uint8)])).save(img_dir / "rgba.png")
    rot, size0 = read_image(img_dir / "rot.jpg")
    assert rot.shape == (40, 20, 3) and size0 == (40, 20)
    assert rot[:20].mean() > 200 and rot[20:].mean() < 50  # white half now on top
    for name in ("grey.png", "rgba.png"):
        im, _ = read_image(img_dir / name)
        assert im.shape == (20, 40, 3) and im.dtype == np.uint8 and im[:, :20].min() == 255
    small, size0 = read_image(img_dir / "rot.jpg", long_side=10)  # resized after the rotation
    assert small.shape == (10, 5, 3) and size0 == (40, 20)
    big = np.zeros((200, 400, 3), np.uint8)
    big[:, 200:] = 255
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)  # decoded at 1/4 scale, then resized
    small, size0 = read_image(tmp_path / "big.jpg", long_side=64)
    assert small.shape == (32, 64, 3) and size0 == (200, 400)
    assert small[:, :30].max() < 30 and small[:, 34:].min() > 225
    r = scan_split(img_dir, cache_dir=tmp_path / "c")
    shapes = dict(zip((Path(f).name for f in r.im_files), map(tuple, r.shapes)))
    assert shapes == {"rot.jpg": (40, 20), "grey.png": (20, 40), "rgba.png": (20, 40)}


# ----------------------------------------------------------------------------- cache


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


# ----------------------------------------------------------------------------- items


def test_validation_items_map_back_to_original_boxes(tmp_path):
    items = [(30, 50, [(0, 5, 5, 20, 25)]), (50, 24, [(1, 2, 10, 20, 45)]), (40, 40, [(2, 0, 0, 40, 40)])]
    img_dir = make_split(tmp_path, "val", items)
    ds = YoloDataset(img_dir, imgsz=64, nc=4, cache_dir=tmp_path / "c")
    for i, (h0, w0, rects) in enumerate(items):
        img, targets, _, shapes = ds[i]
        assert img.shape == (3, 64, 64) and img.dtype.is_floating_point is False
        assert shapes[0] == (h0, w0)
        boxes = xywhn2xyxy(targets[:, 2:].numpy().astype(np.float64), 64, 64)
        back = scale_boxes((64, 64), boxes, (h0, w0), ratio_pad=shapes[1])
        np.testing.assert_allclose(back, np.array(rects, np.float64)[:, 1:], atol=1e-3)
        assert targets[:, 1].tolist() == [float(r[0]) for r in rects]


def test_rect_batch_shapes(tmp_path):
    items = [(32, 64, []), (40, 64, []), (64, 32, []), (64, 48, []), (64, 64, [])]
    img_dir = make_split(tmp_path, "val", items)
    ds = YoloDataset(img_dir, imgsz=64, rect=True, batch_size=2, stride=32, pad=0.5, cache_dir=tmp_path / "c")
    # sorted by h/w: 0.5, 0.625, 1.0, 1.333, 2.0 -> batches [0.5, 0.625], [1, 1.333], [2]
    np.testing.assert_array_equal(ds.batch_shapes, [[64, 96], [96, 96], [96, 64]])
    assert ds.batch_groups() == [[0, 1], [2, 3], [4]]
    shapes = [tuple(ds[i][0].shape[1:]) for i in range(5)]
    assert shapes == [(64, 96), (64, 96), (96, 96), (96, 96), (96, 64)]
