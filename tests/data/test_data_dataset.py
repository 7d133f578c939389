"""The torch Dataset: image reading (EXIF, modes, resizing), validation items, rect batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import make_split
from PIL import Image

from yoloattn.data.boxes import scale_boxes, xywhn2xyxy
from yoloattn.data.dataset import YoloDataset, read_image
from yoloattn.data.scan import scan_split

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


def test_16_bit_greyscale_keeps_the_high_byte_and_32_bit_is_reported(tmp_path):
    from yoloattn.data.scan import UnsupportedPixels, to_rgb

    img_dir = tmp_path / "images"
    img_dir.mkdir()
    grey = np.array([[0, 25700, 65535, 1000]], np.uint16)
    Image.fromarray(grey).save(img_dir / "g16.png")  # opened as mode I;16, converted to white by PIL
    Image.frombytes("I;16B", (4, 1), grey.astype(">u2").tobytes()).save(img_dir / "g16.tif")
    Image.fromarray(grey.astype(np.int32) << 12).save(img_dir / "i32.tif")
    for name in ("g16.png", "g16.tif"):
        im, size0 = read_image(img_dir / name)
        assert size0 == (1, 4) and im[0, :, 0].tolist() == [0, 100, 255, 3] and (im == im[..., :1]).all()
    assert to_rgb(Image.fromarray(grey.astype(np.int32)), "PNG").getpixel((1, 0)) == (100, 100, 100)
    with pytest.raises(UnsupportedPixels, match="32-bit integer pixels"):
        read_image(img_dir / "i32.tif")
    r = scan_split(img_dir, cache_dir=tmp_path / "c")
    assert sorted(Path(f).name for f in r.im_files) == ["g16.png", "g16.tif"]
    assert [(p.kind, Path(p.file).name) for p in r.problems if p.kind != "missing_label"] == [
        ("unsupported_file", "i32.tif")
    ]
