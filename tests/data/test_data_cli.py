"""``yoloattn data check``: counts, problems, labels.png, exit status; real shared datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yoloattn.cli import main

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def write_dataset(root: Path) -> Path:
    for split, n in (("train", 3), ("val", 2)):
        idir, ldir = root / "images" / split, root / "labels" / split
        idir.mkdir(parents=True)
        ldir.mkdir(parents=True)
        for k in range(n):
            Image.fromarray(np.full((20, 30, 3), 50 * k, np.uint8)).save(idir / f"{k}.jpg")
            (ldir / f"{k}.txt").write_text(f"{k % 2} 0.5 0.5 0.4 0.4\n")
    (root / "labels" / "train" / "2.txt").write_text("0 0.5 0.5 0.4 0.4\n5 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "val" / "1.txt").unlink()
    yaml_path = root / "tiny.yaml"
    yaml_path.write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n")
    return yaml_path


def test_data_check_prints_counts_problems_and_writes_plots(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    yaml_path = write_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    assert main(["data", "check", str(yaml_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith(("train ", "val "))}
    # split files images backgrounds boxes skipped dropped clipped problems
    assert lines["train"][1:] == ["3", "3", "0", "3", "0", "1", "0", "1"]
    assert lines["val"][1:] == ["2", "2", "1", "1", "0", "0", "0", "1"]
    assert "2.txt:2: class id 5 is not an integer in [0, 1]; line dropped" in text
    assert "[missing_label]" in text and "1.txt: no label file" in text
    assert "cat" in text and "dog" in text
    assert (out / "labels.png").is_file() and (out / "labels_val.png").is_file()
    with Image.open(out / "labels.png") as im:
        assert im.size[0] > 300


def test_data_check_fails_when_a_split_has_no_usable_image(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    yaml_path = write_dataset(tmp_path / "ds")
    for f in (tmp_path / "ds" / "images" / "val").iterdir():
        f.write_bytes(b"garbage")
    assert main(["data", "check", str(yaml_path), "--out", str(tmp_path / "o"), "--no-plots"]) == 1
    captured = capsys.readouterr()
    assert "val: no usable images" in captured.err and "corrupt_image" in captured.err


def test_data_without_subcommand_prints_help(capsys):
    assert main(["data"]) == 2
    assert "check" in capsys.readouterr().out


@pytest.mark.skipif(
    not (SHARED / "coco128").is_dir(), reason=f"shared dataset not found at {SHARED / 'coco128'}"
)
def test_data_check_on_shared_coco128(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    yaml_path = SHARED / "coco128" / "coco128.yaml"
    assert main(["data", "check", str(yaml_path), "--out", str(tmp_path / "o"), "--no-plots"]) == 0
    text = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith(("train ", "val "))}
    assert lines["train"][1:] == ["96", "96", "2", "704", "0", "0", "0", "0"]  # SOURCE.md: 704 boxes, 2 empty
    assert lines["val"][1:] == ["32", "32", "0", "225", "0", "0", "0", "0"]
    assert "train: 69/80 classes present" in text and "val: 45/80 classes present" in text
    # the shared folder is read-only: the cache went to the user cache dir
    assert str(tmp_path / "xdg" / "yoloattn") in text
