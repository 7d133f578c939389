"""What a scan found: one :class:`Problem` per defect, and the :class:`ScanReport` of a split.

Scanning never keeps or drops anything silently: each problem of an image file or a label line
becomes one :class:`Problem` (kind, file, line, message), and the report counts them per kind
(:data:`PROBLEM_KINDS`, in the order they are listed). The report only computes; its callers
(``YoloDataset``, ``yoloattn data check``) log, print or plot it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["IMG_FORMATS", "PROBLEM_KINDS", "Problem", "ScanReport", "class_counts"]

# Supported image suffixes: the scan's rule, also named in the report's messages.
IMG_FORMATS = ("bmp", "jpeg", "jpg", "png", "tif", "tiff", "webp")

PROBLEM_KINDS: dict[str, str] = {
    "missing_file": "listed in an image list but does not exist (skipped)",
    "broken_link": "symbolic link whose target does not exist (skipped)",
    "unsupported_file": "not a supported image file (skipped)",
    "corrupt_image": "unreadable or truncated image (skipped)",
    "unreadable_label": "label file cannot be read as text (image skipped)",
    "missing_label": "no label file (image used as background)",
    "field_count": "label line without exactly 5 values (line dropped)",
    "non_numeric": "label line with a non-numeric or non-finite value (line dropped)",
    "class_id": "class id not an integer in [0, nc) (line dropped)",
    "out_of_bounds": "box outside [0, 1] beyond the tolerance (line dropped)",
    "zero_size": "box with zero or negative width/height (line dropped)",
    "duplicate": "duplicate label line (removed)",
    "clipped": "box edges slightly outside [0, 1], clipped (line kept)",
}
_SKIPS_IMAGE = ("missing_file", "broken_link", "unsupported_file", "corrupt_image", "unreadable_label")
_DROPS_LINE = ("field_count", "non_numeric", "class_id", "out_of_bounds", "zero_size", "duplicate")


@dataclass(frozen=True)
class Problem:
    """One problem found while scanning: ``kind`` is a key of :data:`PROBLEM_KINDS`."""

    kind: str
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


@dataclass
class ScanReport:
    """Result of :func:`~yoloattn.data.scan.scan_split`: the usable images with their labels and
    every problem.

    ``labels[i]`` is a float32 ``[n, 5]`` array (class, x, y, w, h normalised) for
    ``im_files[i]``; ``shapes[i]`` is its ``(h, w)`` after EXIF rotation.
    """

    prefix: str
    nc: int | None
    im_files: list[str]
    label_files: list[str]
    shapes: np.ndarray
    labels: list[np.ndarray]
    n_found: int
    problems: list[Problem] = field(default_factory=list)
    hash: str = ""
    cache_file: str | None = None
    from_cache: bool = False

    @property
    def counts(self) -> dict[str, int]:
        """Problem count per kind (kinds with no problem are omitted), in :data:`PROBLEM_KINDS` order."""
        c = Counter(p.kind for p in self.problems)
        return {k: c[k] for k in PROBLEM_KINDS if c[k]}

    @property
    def n_images(self) -> int:
        return len(self.im_files)

    @property
    def n_backgrounds(self) -> int:
        return sum(1 for lab in self.labels if len(lab) == 0)

    @property
    def n_boxes(self) -> int:
        return sum(len(lab) for lab in self.labels)

    @property
    def n_skipped(self) -> int:
        return sum(1 for p in self.problems if p.kind in _SKIPS_IMAGE)

    @property
    def n_dropped_lines(self) -> int:
        return sum(1 for p in self.problems if p.kind in _DROPS_LINE)

    def per_class(self, nc: int | None = None) -> np.ndarray:
        """Number of boxes per class id (length ``nc``, or max id + 1 when nc is unknown)."""
        return class_counts(self.all_labels(), nc if nc is not None else self.nc)

    def all_labels(self) -> np.ndarray:
        """All boxes of the split as one ``[M, 5]`` array."""
        if not self.labels:
            return np.zeros((0, 5), np.float32)
        return np.concatenate(self.labels, 0)

    def summary(self) -> str:
        """One line: usable images, backgrounds, boxes, skipped files, dropped lines, clipped boxes."""
        parts = [
            f"{self.prefix}{self.n_images} images ({self.n_backgrounds} backgrounds), {self.n_boxes} boxes",
            f"{self.n_found} files found",
            f"{self.n_skipped} skipped",
            f"{self.n_dropped_lines} label lines dropped",
        ]
        counts = self.counts
        if counts.get("clipped"):
            parts.append(f"{counts['clipped']} boxes clipped")
        text = ", ".join(parts)
        if counts:
            text += "; problems: " + ", ".join(f"{k}={v}" for k, v in counts.items())
        return text + (" (cached)" if self.from_cache else "")

    def problem_lines(self, limit: int | None = None) -> list[str]:
        """``file:line: message`` for the first ``limit`` problems (all when None)."""
        probs = self.problems if limit is None or limit < 0 else self.problems[:limit]
        lines = [f"[{p.kind}] {p}" for p in probs]
        if limit is not None and 0 <= limit < len(self.problems):
            lines.append(f"... and {len(self.problems) - limit} more")
        return lines

    def raise_if_empty(self, sources: Sequence[Any] | None = None) -> None:
        """Raise ``ValueError`` explaining why when no usable image remains."""
        if self.n_images:
            return
        where = f" in {[str(s) for s in sources]}" if sources is not None else ""
        if self.n_found == 0:
            reason = "no files found"
        else:
            counts = self.counts
            reason = f"all {self.n_found} files were rejected: " + ", ".join(
                f"{v} {k} ({PROBLEM_KINDS[k].split(' (')[0]})" for k, v in counts.items() if k in _SKIPS_IMAGE
            )
            if self.problems:
                reason += f"; first problem: {self.problems[0]}"
        raise ValueError(
            f"{self.prefix}no usable images{where}: {reason}. Supported image formats: "
            f"{', '.join(IMG_FORMATS)}; labels are expected in .../labels/... beside .../images/..."
        )


def class_counts(labels: np.ndarray, nc: int | None = None) -> np.ndarray:
    """Boxes per class id of ``[M, 5]`` labels (length ``nc``, or max id + 1 when ``nc`` is None)."""
    cls = np.asarray(labels).reshape(-1, 5)[:, 0].astype(np.int64)
    return np.bincount(cls, minlength=nc if nc is not None else 0)
