"""The scan report: per-class counts, summary and problem lines of a hand-made report."""

from __future__ import annotations

import numpy as np
import pytest

from yoloattn.data.report import Problem, ScanReport, class_counts


def report(labels: list[np.ndarray], problems: list[Problem], n_found: int) -> ScanReport:
    n = len(labels)
    return ScanReport(
        prefix="val: ",
        nc=3,
        im_files=[f"/d/images/{i}.jpg" for i in range(n)],
        label_files=[f"/d/labels/{i}.txt" for i in range(n)],
        shapes=np.full((n, 2), 10, np.int64),
        labels=labels,
        n_found=n_found,
        problems=problems,
    )


def test_class_counts():
    labels = np.array([[2, 0.5, 0.5, 0.1, 0.1], [0, 0.5, 0.5, 0.1, 0.1], [2, 0.2, 0.2, 0.1, 0.1]], np.float32)
    assert class_counts(labels, 4).tolist() == [1, 0, 2, 0]
    assert class_counts(labels).tolist() == [1, 0, 2]
    assert class_counts(np.zeros((0, 5)), 2).tolist() == [0, 0]
    assert class_counts(np.zeros((0, 5))).tolist() == []


def test_report_counts_summary_and_problem_lines():
    labels = [np.array([[1, 0.5, 0.5, 0.2, 0.2]], np.float32), np.zeros((0, 5), np.float32)]
    probs = [
        Problem("corrupt_image", "/d/images/x.jpg", None, "unreadable; skipped"),
        Problem("clipped", "/d/labels/0.txt", 1, "clipped; line kept"),
        Problem("duplicate", "/d/labels/0.txt", 2, "duplicate of line 1; removed"),
    ]
    r = report(labels, probs, n_found=3)
    assert r.counts == {"corrupt_image": 1, "duplicate": 1, "clipped": 1}  # PROBLEM_KINDS order
    assert (r.n_images, r.n_backgrounds, r.n_boxes, r.n_skipped, r.n_dropped_lines) == (2, 1, 1, 1, 1)
    assert r.per_class().tolist() == [0, 1, 0] and r.per_class(2).tolist() == [0, 1]
    assert r.summary() == (
        "val: 2 images (1 backgrounds), 1 boxes, 3 files found, 1 skipped, 1 label lines dropped, "
        "1 boxes clipped; problems: corrupt_image=1, duplicate=1, clipped=1"
    )
    assert r.problem_lines(1) == ["[corrupt_image] /d/images/x.jpg: unreadable; skipped", "... and 2 more"]
    assert r.problem_lines()[2] == "[duplicate] /d/labels/0.txt:2: duplicate of line 1; removed"
    r.raise_if_empty()
    rejected = r"val: no usable images: all 3 files were rejected: 1 corrupt_image \(unreadable or truncated"
    with pytest.raises(ValueError, match=rejected + r" image\); first problem: /d/images/x.jpg"):
        report([], probs, n_found=3).raise_if_empty()
    with pytest.raises(ValueError, match=r"no usable images in \['/d'\]: no files found"):
        report([], [], n_found=0).raise_if_empty(["/d"])
