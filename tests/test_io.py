"""The one atomic-write helper: content lands whole, failures leave the target untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from yoloattn._io import atomic_paths, write_bytes_atomic, write_text_atomic


def test_write_text_and_bytes(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "sub" / "a.txt", "x")
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "a.txt").read_text() == "x"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "sub"]


def test_failure_keeps_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_paths(target) as (tmp,):
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_two_paths_replaced_in_order_with_ordinary_mode(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with atomic_paths(a, b) as (ta, tb):
        ta.write_text("1")
        tb.write_text("2")
        assert not a.exists() and not b.exists()
    assert (a.read_text(), b.read_text()) == ("1", "2")
    mask = os.umask(0)
    os.umask(mask)
    assert a.stat().st_mode & 0o777 == 0o666 & ~mask
