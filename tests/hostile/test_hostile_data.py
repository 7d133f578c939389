"""``yoloattn data check`` on hostile dataset files: odd files are reported (kind and file) and
skipped, never silently dropped or misread, within 60 s and 2 GB; a hostile dataset YAML is
refused with one line naming it.

Each case builds a two-image split (``good.png`` with one box, plus the case's files), runs
``data check`` in its own process for the bar, and a short ``scan_split`` snippet for what the
scan kept and reported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hostile_harness import CaseResult, check_refused, check_reported
from PIL import Image

GOOD_LINE = "0 0.5 0.5 0.25 0.25\n"
GREY16 = np.array([[0, 25700, 65535, 1000], [256, 511, 65280, 32768]], np.uint16)  # >> 8: 0 100 255 3 ...


def _split(root: Path) -> tuple[Path, Path]:
    img, lbl = root / "images" / "train", root / "labels" / "train"
    img.mkdir(parents=True)
    lbl.mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(img / "good.png")
    (lbl / "good.txt").write_text(GOOD_LINE)
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [a, b]\n")
    return img, lbl


def _scan(runner, root: Path) -> dict:
    code = (
        "import json; from yoloattn.data import scan_split\n"
        f"r = scan_split({str(root / 'images' / 'train')!r}, nc=2, use_cache=False)\n"
        "print(json.dumps({'images': [f.rsplit('/', 1)[1] for f in r.im_files], 'boxes': r.n_boxes,"
        " 'problems': [[p.kind, p.file.rsplit('/', 1)[1], p.line] for p in r.problems]}))"
    )
    r = runner.run(code, cwd=root)
    assert r.rc == 0 and not r.stderr, r
    return json.loads(r.stdout)


def _check(runner, root: Path) -> CaseResult:
    return runner.run(["data", "check", "data.yaml", "--no-plots", "--out", "out"], cwd=root)


# ----------------------------------------------------------------------------- reported and skipped

# name: (build(img_dir, lbl_dir) -> the file that must be named, expected scan result)
Builder = Callable[[Path, Path], Path]


def bom_label(img: Path, lbl: Path) -> Path:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img / "bom.png")
    (lbl / "bom.txt").write_bytes(b"\xef\xbb\xbf" + (GOOD_LINE + "1 0.25 0.25 0.1 0.1\n").encode())
    return lbl / "bom.txt"


def odd_numbers(img: Path, lbl: Path) -> Path:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img / "odd.png")
    lines = ["0_1 0.5 0.5 0.2 0.2", "0 nan 0.5 0.2 0.2", "0 0.5 inf 0.2 0.2", "0 0.5 0.5 1e400 0.2"]
    lines += ["\u0661 0.5 0.5 0.2 0.2", "0 0.5 0.5 0.2 0x1", "1 0.25 0.25 0.1 0.1"]  # Arabic-Indic 1, hex
    (lbl / "odd.txt").write_text("\n".join(lines) + "\n")
    return lbl / "odd.txt"


def grey16_png(img: Path, lbl: Path) -> Path:
    Image.fromarray(GREY16).save(img / "g16.png")
    (lbl / "g16.txt").write_text(GOOD_LINE)
    return img / "g16.png"


def grey16_tiff(img: Path, lbl: Path) -> Path:
    Image.frombytes("I;16B", (4, 2), GREY16.astype(">u2").tobytes()).save(img / "g16.tif")
    (lbl / "g16.txt").write_text(GOOD_LINE)
    return img / "g16.tif"


def int32_tiff(img: Path, lbl: Path) -> Path:
    Image.fromarray(GREY16.astype(np.int32) * 1000).save(img / "i32.tif")
    (lbl / "i32.txt").write_text(GOOD_LINE)
    return img / "i32.tif"


def float_tiff(img: Path, lbl: Path) -> Path:
    Image.fromarray(GREY16.astype(np.float32) / 65535).save(img / "f32.tif")
    (lbl / "f32.txt").write_text(GOOD_LINE)
    return img / "f32.tif"


def dangling_image_link(img: Path, lbl: Path) -> Path:
    (img / "gone.png").symlink_to(img / "never-there.png")
    (lbl / "gone.txt").write_text(GOOD_LINE)
    return img / "gone.png"


def dangling_label_link(img: Path, lbl: Path) -> Path:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img / "nolabel.png")
    (lbl / "nolabel.txt").symlink_to(lbl / "never-there.txt")
    return lbl / "nolabel.txt"


def linked_folder(img: Path, lbl: Path) -> Path:
    other = img.parents[1] / "elsewhere"
    other.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(other / "x.png")
    (img / "more").symlink_to(other, target_is_directory=True)
    return img / "more"


def fifo_image(img: Path, lbl: Path) -> Path:
    os.mkfifo(img / "pipe.png")  # opening it would block forever
    return img / "pipe.png"


def fifo_label(img: Path, lbl: Path) -> Path:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img / "piped.png")
    os.mkfifo(lbl / "piped.txt")
    return lbl / "piped.txt"


def huge_label(img: Path, lbl: Path) -> Path:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img / "huge.png")
    with open(lbl / "huge.txt", "wb") as f:  # sparse: 3 GB long, nothing on disk
        f.truncate(3 * 2**30)
    return lbl / "huge.txt"


REPORTED: dict[str, tuple[Builder, dict]] = {
    "label-with-BOM": (bom_label, {"images": ["bom.png", "good.png"], "boxes": 3, "problems": []}),
    "non-plain-numbers": (
        odd_numbers,
        {
            "images": ["good.png", "odd.png"],
            "boxes": 2,
            "problems": [["non_numeric", "odd.txt", n] for n in range(1, 7)],
        },
    ),
    "16-bit-png": (grey16_png, {"images": ["g16.png", "good.png"], "boxes": 2, "problems": []}),
    "16-bit-big-endian-tiff": (grey16_tiff, {"images": ["g16.tif", "good.png"], "boxes": 2, "problems": []}),
    "32-bit-int-tiff": (
        int32_tiff,
        {"images": ["good.png"], "boxes": 1, "problems": [["unsupported_file", "i32.tif", None]]},
    ),
    "float-tiff": (
        float_tiff,
        {"images": ["good.png"], "boxes": 1, "problems": [["unsupported_file", "f32.tif", None]]},
    ),
    "dangling-image-link": (
        dangling_image_link,
        {"images": ["good.png"], "boxes": 1, "problems": [["broken_link", "gone.png", None]]},
    ),
    "dangling-label-link": (
        dangling_label_link,
        {"images": ["good.png"], "boxes": 1, "problems": [["unreadable_label", "nolabel.txt", None]]},
    ),
    "linked-folder": (
        linked_folder,
        {"images": ["good.png"], "boxes": 1, "problems": [["unsupported_file", "more", None]]},
    ),
    "fifo-image": (
        fifo_image,
        {"images": ["good.png"], "boxes": 1, "problems": [["unsupported_file", "pipe.png", None]]},
    ),
    "fifo-label": (
        fifo_label,
        {"images": ["good.png"], "boxes": 1, "problems": [["unreadable_label", "piped.txt", None]]},
    ),
    "3-GB-sparse-label": (
        huge_label,
        {"images": ["good.png"], "boxes": 1, "problems": [["unreadable_label", "huge.txt", None]]},
    ),
}


@pytest.mark.parametrize("name", list(REPORTED))
def test_data_check_reports_and_skips(runner, tmp_path, name):
    build, expected = REPORTED[name]
    img, lbl = _split(tmp_path)
    named = build(img, lbl)
    r = _check(runner, tmp_path)
    if expected["problems"]:
        assert check_reported(r, named) == [], r
        assert f"[{expected['problems'][0][0]}] {named}" in r.stdout, r
    else:
        assert check_reported(r, "no problems found") == [], r
    assert _scan(runner, tmp_path) == expected


def test_16_bit_pixels_keep_their_high_byte(runner, tmp_path):
    img, lbl = _split(tmp_path)
    files = [grey16_png(img, lbl), grey16_tiff(img, lbl)]
    code = (
        "import json; from yoloattn.data import read_image\n"
        f"print(json.dumps([read_image(f)[0].tolist() for f in {[str(f) for f in files]!r}]))"
    )
    r = runner.run(code, cwd=tmp_path)
    assert r.rc == 0 and not r.stderr, r
    want = np.repeat((GREY16 >> 8).astype(np.uint8)[..., None], 3, axis=2).tolist()  # grey as RGB
    assert json.loads(r.stdout) == [want, want]


# ----------------------------------------------------------------------------- refused YAML


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


YAMLS: dict[str, tuple[str, str]] = {
    "alias-bomb-in-names": (_alias_bomb() + "train: t\nval: v\nnames: *l9\n", "'names' entry 0 is a list"),
    "alias-bomb-in-train": (_alias_bomb() + "train: [*l9]\nval: v\nnames: [a]\n", "got a list"),
    "alias-bomb-in-path": (_alias_bomb() + "path: *l9\ntrain: t\nval: v\nnames: [a]\n", "'path' must be"),
    "deeply-nested": ("train: " + "[" * 2000 + "]" * 2000 + "\n", "nested too deep"),
}


@pytest.mark.parametrize("name", list(YAMLS))
def test_data_check_refuses_hostile_yaml(runner, tmp_path, name):
    text, words = YAMLS[name]
    (tmp_path / "data.yaml").write_text(text)
    r = _check(runner, tmp_path)
    assert check_refused(r, "data.yaml") == [], r
    assert words in r.stderr, r
