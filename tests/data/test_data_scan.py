"""Discovery and checking: sources, label paths, a corrupted raccoon copy, nothing usable."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from data_helpers import SHARED, make_split, tiny_items

from yoloattn.data.dataset import YoloDataset
from yoloattn.data.scan import find_images, img2label_path, scan_split

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


# ----------------------------------------------------------------------------- hostile files


def test_label_bom_and_numbers_float_accepts_but_labels_cannot_mean(tmp_path):
    img_dir = make_split(tmp_path, "train", tiny_items(2))
    lbl = tmp_path / "labels" / "train"
    (lbl / "im00.txt").write_bytes(b"\xef\xbb\xbf" + (lbl / "im00.txt").read_bytes())  # UTF-8 BOM
    bad = ["0_1 0.5 0.5 0.2 0.2", "0 NaN 0.5 0.2 0.2", "0 0.5 -inf 0.2 0.2", "\u0661 0.5 0.5 0.2 0.2"]
    (lbl / "im01.txt").write_text("\n".join([*bad, "0 0.5 0.5 1e400 0.2", "2 0.5 0.5 .2 2e-1"]) + "\n")
    r = scan_split(img_dir, nc=4, use_cache=False)
    assert r.labels[0][:, 0].tolist() == [0.0, 1.0]  # the first box survives the byte-order mark
    assert [(p.kind, p.line) for p in r.problems] == [("non_numeric", n) for n in range(1, 6)]
    assert [p.message for p in r.problems][:2] == [
        "non-numeric value '0_1'; line dropped",
        "non-numeric value 'NaN'; line dropped",
    ]
    assert "non-finite value" in r.problems[4].message
    assert r.labels[1].tolist() == [[2.0, 0.5, 0.5, pytest.approx(0.2), pytest.approx(0.2)]]


def test_links_pipes_and_huge_labels_are_reported(tmp_path, monkeypatch):
    import os

    import yoloattn.data.scan as scan

    img_dir = make_split(tmp_path, "train", tiny_items(4))
    lbl = tmp_path / "labels" / "train"
    (img_dir / "gone.png").symlink_to(img_dir / "nowhere.png")  # dangling image link
    (lbl / "im01.txt").unlink()
    (lbl / "im01.txt").symlink_to(lbl / "nowhere.txt")  # dangling label link: not a background
    other = tmp_path / "other"
    other.mkdir()
    (img_dir / "more").symlink_to(other, target_is_directory=True)  # not followed: said so
    os.mkfifo(img_dir / "pipe.jpg")
    (lbl / "im02.txt").write_text("0 0.5 0.5 0.2 0.2\n" * 10)
    monkeypatch.setattr(scan, "MAX_LABEL_BYTES", 100)  # im02's 180 bytes are too many
    r = scan_split(img_dir, nc=4, use_cache=False)
    got = sorted((p.kind, Path(p.file).name) for p in r.problems)
    assert got == [
        ("broken_link", "gone.png"),
        ("unreadable_label", "im01.txt"),
        ("unreadable_label", "im02.txt"),
        ("unsupported_file", "more"),
        ("unsupported_file", "pipe.jpg"),
    ]
    assert [Path(f).name for f in r.im_files] == ["im00.png", "im03.png"]
    assert (r.n_found, r.n_skipped) == (7, 5)
    msgs = {Path(p.file).name: p.message for p in r.problems}
    assert "symbolic link to" in msgs["gone.png"] and "(limit 0 MB)" in msgs["im02.txt"]
    (tmp_path / "list.txt").write_text("\ufeffimages/train/gone.png\nimages/train/im00.png\n")  # with a BOM
    _, probs, n = find_images(tmp_path / "list.txt")
    assert [(p.kind, p.line) for p in probs] == [("broken_link", 1)] and n == 2
