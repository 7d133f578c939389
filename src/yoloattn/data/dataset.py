"""YOLO-format datasets: the dataset YAML, image/label discovery, checking, caching, and the
torch ``Dataset`` that feeds training and validation.

Layout (the one users of YOLOv5/YOLOv7 know): a dataset YAML with ``path`` (the root, relative
to the YAML's folder when relative), ``train``, ``val`` and optional ``test`` (each a folder of
images, a ``.txt`` file listing image paths, or a list of these, relative to the root), and
``names`` (a list, or a dict ``{id: name}``) with optional ``nc``. The label of
``.../images/<rest>/x.jpg`` is ``.../labels/<rest>/x.txt`` (the last ``images`` path component
is replaced), one ``class x y w h`` line per box, normalised to [0, 1].

Scanning checks every image and label line and never keeps or drops anything silently: each
problem becomes one :class:`Problem` (kind, file, line, message) and the :class:`ScanReport`
counts them per kind. The result is cached as ``.npz`` (no pickled objects) next to the label
folder, or in the user cache dir (``$XDG_CACHE_HOME/yoloattn`` or ``~/.cache/yoloattn``) when
that folder is read-only; the cache is keyed by a hash of the paths, sizes and mtimes of all
images and labels, so any change to them triggers a rescan.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image, ImageOps

from yoloattn.data.augment import (
    AugmentParams,
    augment_hsv,
    fliplr,
    flipud,
    letterbox,
    mixup,
    mosaic4,
    random_perspective,
)
from yoloattn.data.boxes import xywhn2xyxy, xyxy2xywhn

__all__ = [
    "IMG_FORMATS",
    "PROBLEM_KINDS",
    "DatasetConfig",
    "Problem",
    "ScanReport",
    "YoloDataset",
    "find_images",
    "img2label_path",
    "load_dataset_config",
    "read_image",
    "scan_split",
    "user_cache_dir",
]

LOGGER = logging.getLogger(__name__)

IMG_FORMATS = ("bmp", "jpeg", "jpg", "png", "tif", "tiff", "webp")
_PIL_FORMATS = {"BMP", "JPEG", "MPO", "PNG", "TIFF", "WEBP"}
CACHE_VERSION = 1  # bump whenever the checking rules or the cache layout change
CACHE_SUFFIX = ".cache.npz"
COORD_TOL = 0.01
# Edges outside [0, 1] by less than this are rounding in 5-6 decimal label files: clipped, not reported.
_ROUNDING = 1e-5

PROBLEM_KINDS: dict[str, str] = {
    "missing_file": "listed in an image list but does not exist (skipped)",
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
_SKIPS_IMAGE = ("missing_file", "unsupported_file", "corrupt_image", "unreadable_label")
_DROPS_LINE = ("field_count", "non_numeric", "class_id", "out_of_bounds", "zero_size", "duplicate")

# Random streams of one sample: np.random.default_rng([seed, epoch, index, *stream]).
_S_MOSAIC, _S_AFFINE, _S_MIXUP, _S_HSV, _S_FLIPUD, _S_FLIPLR = 1, 2, 3, 4, 5, 6


# ============================================================================ dataset YAML


@dataclass(frozen=True)
class DatasetConfig:
    """A parsed dataset YAML; every source path is absolute."""

    yaml_path: Path
    root: Path
    train: list[Path]
    val: list[Path]
    test: list[Path]
    names: list[str]
    nc: int

    def as_single_class(self) -> DatasetConfig:
        """The same dataset scored as one class (``--single-cls``): ``item``, or the dataset's own
        name when it already has one class."""
        names = list(self.names) if self.nc == 1 else ["item"]
        return dataclasses.replace(self, nc=1, names=names)

    def split(self, name: str) -> list[Path]:
        """Sources of split ``name`` (``train``, ``val`` or ``test``)."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; expected 'train', 'val' or 'test'")
        return list(getattr(self, name))


def _as_sources(value: Any, key: str, root: Path, yaml_path: Path) -> list[Path]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        if not isinstance(item, str | os.PathLike) or str(item) == "":
            raise ValueError(
                f"{yaml_path}: '{key}' must be a path or a list of paths (folder of images or .txt list), "
                f"got {item!r}"
            )
        p = Path(item).expanduser()
        out.append(p if p.is_absolute() else root / p)
    return out


def _as_names(data: Mapping[str, Any], yaml_path: Path) -> list[str]:
    names = data.get("names")
    nc = data.get("nc")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc <= 0):
        raise ValueError(f"{yaml_path}: 'nc' must be a positive integer, got {nc!r}")
    if names is None:
        if nc is None:
            raise ValueError(f"{yaml_path}: needs 'names' (list or {{id: name}} dict) or at least 'nc'")
        return [str(i) for i in range(nc)]
    if isinstance(names, dict):
        keys = list(names)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            raise ValueError(f"{yaml_path}: 'names' dict keys must be integer class ids, got {keys[:5]!r}")
        if sorted(keys) != list(range(len(keys))):
            raise ValueError(
                f"{yaml_path}: 'names' dict keys must be 0..{len(keys) - 1} without gaps, "
                f"got {sorted(keys)[:10]!r}"
            )
        out = [str(names[i]) for i in range(len(keys))]
    elif isinstance(names, list):
        out = [str(n) for n in names]
    else:
        raise ValueError(
            f"{yaml_path}: 'names' must be a list or a {{id: name}} dict, got {type(names).__name__}"
        )
    if not out:
        raise ValueError(f"{yaml_path}: 'names' is empty")
    if nc is not None and nc != len(out):
        raise ValueError(f"{yaml_path}: 'nc' is {nc} but 'names' has {len(out)} entries; make them agree")
    return out


def load_dataset_config(path: str | os.PathLike[str]) -> DatasetConfig:
    """Read a dataset YAML (``path``, ``train``, ``val``, optional ``test``, ``names``, ``nc``).

    A relative ``path`` is resolved against the YAML's folder; a missing one means that folder.
    Keys not used here (e.g. ``download``) are ignored; nothing is ever downloaded.
    """
    yaml_path = Path(path).expanduser()
    if not yaml_path.is_file():
        raise FileNotFoundError(f"dataset YAML not found: {yaml_path}")
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{yaml_path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"{yaml_path}: expected a mapping with keys path/train/val/names, got {type(data).__name__}"
        )
    yaml_path = yaml_path.resolve()
    root_value = data.get("path")
    if root_value in (None, ""):
        root = yaml_path.parent
    else:
        root = Path(str(root_value)).expanduser()
        root = root if root.is_absolute() else yaml_path.parent / root
    root = root.resolve()
    for key in ("train", "val"):
        if data.get(key) in (None, "", []):
            raise ValueError(
                f"{yaml_path}: missing required key {key!r} (a folder of images, a .txt list of image "
                "paths, or a list of these, relative to 'path')"
            )
    names = _as_names(data, yaml_path)
    return DatasetConfig(
        yaml_path=yaml_path,
        root=root,
        train=_as_sources(data["train"], "train", root, yaml_path),
        val=_as_sources(data["val"], "val", root, yaml_path),
        test=_as_sources(data.get("test"), "test", root, yaml_path),
        names=names,
        nc=len(names),
    )


# ============================================================================ scanning


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
    """Result of :func:`scan_split`: the usable images with their labels, and every problem.

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
        nc = nc if nc is not None else self.nc
        cls = np.concatenate([lab[:, 0] for lab in self.labels]) if self.labels else np.zeros(0)
        cls = cls.astype(np.int64)
        minlength = nc if nc is not None else 0
        return np.bincount(cls, minlength=minlength)

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


def img2label_path(im_file: str | os.PathLike[str]) -> Path:
    """Label path of an image: last ``images`` path component -> ``labels``, suffix -> ``.txt``."""
    p = Path(im_file)
    parts = list(p.parts)
    for i in range(len(parts) - 2, -1, -1):  # directories only, never the file name
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _is_image_name(p: Path) -> bool:
    return p.suffix[1:].lower() in IMG_FORMATS


def find_images(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], prefix: str = ""
) -> tuple[list[Path], list[Problem], int]:
    """Resolve sources (image folders, searched recursively; ``.txt`` lists; image files).

    Returns ``(images, problems, n_found)``: problems are files that are not supported images
    (other than label and cache files) and list entries that do not exist.
    """
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise ValueError(f"{prefix}no image sources given")
    images: list[Path] = []
    others: list[Path] = []
    problems: list[Problem] = []
    n_found = 0
    for src in sources:
        p = Path(src).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
            for f in files:
                (images if _is_image_name(f) else others).append(f)
        elif p.is_file() and p.suffix.lower() == ".txt":
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"{prefix}cannot read image list {p}: {e}") from e
            for ln, line in enumerate(lines, 1):
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                f = Path(entry).expanduser()
                f = f if f.is_absolute() else p.parent / f
                if not f.is_file():
                    n_found += 1
                    problems.append(
                        Problem("missing_file", str(p), ln, f"listed image {f} does not exist (skipped)")
                    )
                elif _is_image_name(f):
                    images.append(f)
                else:
                    others.append(f)
        elif p.is_file() and _is_image_name(p):
            images.append(p)
        elif not p.exists():
            raise FileNotFoundError(
                f"{prefix}image source {p} does not exist (expected a folder of images, a .txt list of "
                "image paths, or an image file)"
            )
        else:
            raise ValueError(
                f"{prefix}image source {p} is neither a folder, a .txt list nor an image "
                f"({', '.join(IMG_FORMATS)})"
            )
    label_set = {img2label_path(f) for f in images}
    for f in others:
        if f in label_set or f.name.endswith(CACHE_SUFFIX):
            continue
        problems.append(
            Problem(
                "unsupported_file",
                str(f),
                None,
                f"not a supported image (suffix {f.suffix or '(none)'!r}; "
                f"expected {', '.join(IMG_FORMATS)}); skipped",
            )
        )
    n_found += len(images) + sum(1 for p in problems if p.kind == "unsupported_file")
    return images, problems, n_found


def _exif_size(im: Image.Image) -> tuple[int, int]:
    """``(w, h)`` after applying the EXIF orientation."""
    w, h = im.size
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not reject a decodable image
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _check_image(path: Path) -> tuple[tuple[int, int] | None, Problem | None]:
    """Open and fully decode (JPEG at 1/8 scale) to catch truncated files; returns ``(h, w)``."""
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
        if fmt not in _PIL_FORMATS:
            return None, Problem(
                "unsupported_file",
                str(path),
                None,
                f"content is {fmt}, not one of {', '.join(IMG_FORMATS)}; skipped",
            )
        with Image.open(path) as im:
            w, h = _exif_size(im)
            if fmt in ("JPEG", "MPO"):
                im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except Exception as e:  # any decoder error means the image is unusable
        msg = str(e) or type(e).__name__
        return None, Problem(
            "corrupt_image", str(path), None, f"unreadable or truncated image ({msg}); skipped"
        )
    if w < 1 or h < 1:
        return None, Problem("corrupt_image", str(path), None, f"image has an empty size {w}x{h}; skipped")
    return (h, w), None


def _parse_label_file(
    label_file: Path, nc: int | None, tol: float
) -> tuple[np.ndarray | None, list[Problem]]:
    """Parse and check one label file. Returns ``(labels or None if the image must be skipped, problems)``."""
    lf = str(label_file)
    if not label_file.is_file():
        return np.zeros((0, 5), np.float32), [
            Problem("missing_label", lf, None, "no label file; image used as background")
        ]
    try:
        text = label_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, [Problem("unreadable_label", lf, None, f"cannot read label file ({e}); image skipped")]
    problems: list[Problem] = []
    rows: list[tuple[float, float, float, float, float]] = []
    first_line: dict[tuple[float, ...], int] = {}
    for ln, raw in enumerate(text.splitlines(), 1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) != 5:
            problems.append(
                Problem(
                    "field_count",
                    lf,
                    ln,
                    f"expected 5 values 'class x y w h', got {len(parts)}; line dropped",
                )
            )
            continue
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            bad = next(v for v in parts if not _is_float(v))
            problems.append(Problem("non_numeric", lf, ln, f"non-numeric value {bad!r}; line dropped"))
            continue
        if not all(math.isfinite(v) for v in vals):
            problems.append(
                Problem("non_numeric", lf, ln, f"non-finite value in {raw.strip()!r}; line dropped")
            )
            continue
        c, x, y, w, h = vals
        if c != int(c) or c < 0 or (nc is not None and c >= nc):
            rng = f"[0, {nc - 1}]" if nc is not None else ">= 0"
            problems.append(
                Problem("class_id", lf, ln, f"class id {parts[0]} is not an integer in {rng}; line dropped")
            )
            continue
        if w <= 0 or h <= 0:
            problems.append(
                Problem(
                    "zero_size", lf, ln, f"box has zero or negative size (w={w:g}, h={h:g}); line dropped"
                )
            )
            continue
        x1, y1, x2, y2 = x - w / 2, y - h / 2, x + w / 2, y + h / 2
        lo, hi = min(x1, y1), max(x2, y2)
        if lo < -tol or hi > 1 + tol:
            problems.append(
                Problem(
                    "out_of_bounds",
                    lf,
                    ln,
                    f"box edges ({x1:.4g}, {y1:.4g}, {x2:.4g}, {y2:.4g}) leave [0, 1] by more than {tol:g}; "
                    "line dropped",
                )
            )
            continue
        if lo < 0 or hi > 1:
            x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2))
            w, h = x2 - x1, y2 - y1
            if w <= 0 or h <= 0:
                problems.append(
                    Problem("zero_size", lf, ln, "box is empty after clipping to [0, 1]; line dropped")
                )
                continue
            x, y = (x1 + x2) / 2, (y1 + y2) / 2
            if lo < -_ROUNDING or hi > 1 + _ROUNDING:
                problems.append(
                    Problem(
                        "clipped",
                        lf,
                        ln,
                        f"box edges outside [0, 1] by {max(-lo, hi - 1):.3g}, clipped; line kept",
                    )
                )
        row = (float(c), x, y, w, h)
        key = tuple(np.float32(row).tolist())
        if key in first_line:
            problems.append(Problem("duplicate", lf, ln, f"duplicate of line {first_line[key]}; removed"))
            continue
        first_line[key] = ln
        rows.append(row)
    labels = np.array(rows, dtype=np.float32).reshape(-1, 5)
    return labels, problems


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _stat_key(p: Path) -> str:
    try:
        st = p.stat()
    except OSError:
        return f"{p}|-"
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def _scan_hash(
    images: Sequence[Path],
    label_files: Sequence[Path],
    problems: Sequence[Problem],
    nc: int | None,
    tol: float,
) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|nc={nc}|tol={tol!r}".encode())
    for im, lb in zip(images, label_files):
        h.update(f"\n{_stat_key(im)}\n{_stat_key(lb)}".encode())
    for p in problems:
        h.update(f"\n{p.kind}|{p.file}|{p.line}".encode())
    return h.hexdigest()


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/yoloattn`` (when absolute) or ``~/.cache/yoloattn``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "yoloattn"


def _dir_writable(d: Path) -> bool:
    """Writable by us AND not marked read-only by its mode bits (respected even when running as root)."""
    try:
        return d.is_dir() and os.access(d, os.W_OK) and bool(d.stat().st_mode & 0o222)
    except OSError:
        return False


def _cache_candidates(label_files: Sequence[Path], cache_dir: str | os.PathLike[str] | None) -> list[Path]:
    label_dir = Path(label_files[0]).parent.absolute()
    key = f"{label_dir.name}-{hashlib.sha1(str(label_dir).encode()).hexdigest()[:12]}{CACHE_SUFFIX}"
    if cache_dir is not None:
        return [Path(cache_dir).expanduser() / key]
    return [label_dir.parent / f"{label_dir.name}{CACHE_SUFFIX}", user_cache_dir() / key]


def _save_cache(report: ScanReport, candidates: Sequence[Path], explicit: bool) -> Path | None:
    labels = report.all_labels()
    offsets = np.cumsum([0] + [len(lab) for lab in report.labels]).astype(np.int64)
    problems = json.dumps([[p.kind, p.file, p.line, p.message] for p in report.problems])
    arrays = {
        "version": np.int64(CACHE_VERSION),
        "hash": np.str_(report.hash),
        "nc": np.int64(-1 if report.nc is None else report.nc),
        "n_found": np.int64(report.n_found),
        "im_files": np.array(report.im_files, dtype=np.str_),
        "label_files": np.array(report.label_files, dtype=np.str_),
        "shapes": np.asarray(report.shapes, dtype=np.int64).reshape(-1, 2),
        "labels": labels.astype(np.float32),
        "offsets": offsets,
        "problems": np.str_(problems),
    }
    for i, path in enumerate(candidates):
        is_user_dir = explicit or i > 0
        try:
            if is_user_dir:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not _dir_writable(path.parent):
                LOGGER.debug("label folder %s is read-only; caching in the user cache dir", path.parent)
                continue
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
            return path
        except OSError as e:
            LOGGER.debug("cannot write scan cache %s: %s", path, e)
    LOGGER.warning(
        "%scould not save the scan cache in any of %s", report.prefix, [str(c) for c in candidates]
    )
    return None


def _load_cache(path: Path, expected_hash: str, prefix: str) -> ScanReport | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION or str(z["hash"]) != expected_hash:
                return None
            offsets = z["offsets"]
            labels_all = z["labels"]
            labels = [labels_all[offsets[i] : offsets[i + 1]].copy() for i in range(len(offsets) - 1)]
            nc = int(z["nc"])
            problems = [Problem(k, f, ln, m) for k, f, ln, m in json.loads(str(z["problems"]))]
            return ScanReport(
                prefix=prefix,
                nc=None if nc < 0 else nc,
                im_files=[str(s) for s in z["im_files"]],
                label_files=[str(s) for s in z["label_files"]],
                shapes=z["shapes"].reshape(-1, 2).copy(),
                labels=labels,
                n_found=int(z["n_found"]),
                problems=problems,
                hash=expected_hash,
                cache_file=str(path),
                from_cache=True,
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        LOGGER.debug("ignoring unreadable scan cache %s: %s", path, e)
        return None


def scan_split(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    nc: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    prefix: str = "",
    use_cache: bool = True,
    tol: float = COORD_TOL,
    workers: int | None = None,
) -> ScanReport:
    """Find, check and (via the cache) remember the images and labels of one split.

    Args:
        sources: folder(s) of images, ``.txt`` list(s) of image paths, or image files.
        nc: number of classes; class ids must be in ``[0, nc)`` (only ``>= 0`` when None).
        cache_dir: put the cache here instead of next to the labels / the user cache dir.
        prefix: prepended to log and error messages (e.g. ``"train: "``).
        use_cache: read a valid cache instead of rescanning (the cache is always written).
        tol: box edges outside [0, 1] by at most this are clipped (reported as ``clipped`` when
            beyond 1e-5, i.e. more than label-file rounding); beyond ``tol`` the line is dropped.
        workers: threads used to decode images (default: ``min(8, cpu count)``).

    Does not raise when nothing usable remains; call :meth:`ScanReport.raise_if_empty`.
    """
    images, list_problems, n_found = find_images(sources, prefix)
    label_files = [img2label_path(f) for f in images]
    digest = _scan_hash(images, label_files, list_problems, nc, tol)
    candidates = _cache_candidates(label_files, cache_dir) if images else []
    if use_cache:
        for path in candidates:
            cached = _load_cache(path, digest, prefix)
            if cached is not None:
                LOGGER.debug("%sscan cache hit: %s", prefix, path)
                return cached

    def check(i: int) -> tuple[tuple[int, int] | None, np.ndarray | None, list[Problem]]:
        shape, prob = _check_image(images[i])
        if prob is not None:
            return None, None, [prob]
        labels, probs = _parse_label_file(label_files[i], nc, tol)
        return shape, labels, probs

    n_threads = workers if workers is not None else min(8, os.cpu_count() or 1)
    if n_threads > 1 and len(images) > 1:
        with ThreadPoolExecutor(n_threads) as pool:
            results = list(pool.map(check, range(len(images))))
    else:
        results = [check(i) for i in range(len(images))]

    problems = list(list_problems)
    im_files, lbl_files, shapes, labels = [], [], [], []
    for i, (shape, lab, probs) in enumerate(results):
        problems.extend(probs)
        if shape is None or lab is None:
            continue
        im_files.append(str(images[i]))
        lbl_files.append(str(label_files[i]))
        shapes.append(shape)
        labels.append(lab)
    report = ScanReport(
        prefix=prefix,
        nc=nc,
        im_files=im_files,
        label_files=lbl_files,
        shapes=np.array(shapes, dtype=np.int64).reshape(-1, 2),
        labels=labels,
        n_found=n_found,
        problems=problems,
        hash=digest,
    )
    if candidates:
        saved = _save_cache(report, candidates, explicit=cache_dir is not None)
        report.cache_file = str(saved) if saved else None
    return report


def _log_report(report: ScanReport, max_problems: int = 10) -> None:
    LOGGER.info("%s", report.summary())
    lines = report.problem_lines(max_problems)
    for line in lines:
        LOGGER.warning("%s%s", report.prefix, line)
    if len(report.problems) > max_problems:
        LOGGER.warning("%srun `yoloattn data check DATA.yaml` to list every problem", report.prefix)


# ============================================================================ reading


def read_image(
    path: str | os.PathLike[str], long_side: int | None = None, shrink: int = Image.Resampling.BOX
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image as ``uint8 [H, W, 3]`` RGB with the EXIF orientation applied (greyscale,
    palette, RGBA and CMYK are converted to RGB). Returns ``(img, (h0, w0))``, the original size.

    With ``long_side`` the image is resized so that its long side is ``long_side`` (the other
    side ``ceil``-ed), bilinear when enlarging and with ``shrink`` when reducing; a JPEG more
    than twice too large is first decoded at a reduced DCT scale (1/2, 1/4 or 1/8).
    """
    with Image.open(path) as im:
        ws, hs = im.size
        w0, h0 = _exif_size(im)
        r = long_side / max(ws, hs) if long_side else 1.0
        if r < 0.5 and im.format in ("JPEG", "MPO"):
            im.draft(None, (math.ceil(ws * r), math.ceil(hs * r)))
        im = ImageOps.exif_transpose(im)
        if im.mode != "RGB":
            im = im.convert("RGB")
        if long_side and r != 1.0:
            w, h = (min(long_side, max(1, math.ceil(v * r - 1e-9))) for v in (w0, h0))
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR if r > 1 else shrink)
        return np.asarray(im), (h0, w0)


# ============================================================================ Dataset


class YoloDataset(torch.utils.data.Dataset):
    """A checked YOLO-format split as a torch ``Dataset``.

    Items are ``(img, targets, path, shapes)``: ``img`` a ``uint8 [3, H, W]`` RGB tensor;
    ``targets`` float32 ``[n, 6]`` = (0, class, x, y, w, h) normalised to the returned image
    (column 0 is filled with the batch index by :func:`yoloattn.data.loader.collate_fn`);
    ``shapes`` = ``((h0, w0), ((h / h0, w / w0), (padw, padh)))`` to map boxes back to the
    original image, or None for a mosaic.

    Indexing with an int uses ``self.seed``/``self.epoch``; the loader's batch sampler passes
    ``(index, epoch, seed)`` keys so augmentation depends only on those three numbers (not on
    worker count or global RNG state).

    Args:
        sources: image folder(s) / ``.txt`` list(s) (e.g. ``DatasetConfig.train``).
        imgsz: training/validation size (a multiple of ``stride``).
        augment: enable the training augmentations driven by ``hyp``.
        hyp: hyper-parameters (see :class:`yoloattn.data.augment.AugmentParams`); None = defaults.
        rect: rectangular batches: ``im_files``/``labels``/``shapes`` are re-ordered by aspect
            ratio h/w and each run of ``batch_size`` images gets the shape
            ``ceil(ratio * imgsz / stride + pad) * stride`` (``batch_shapes``); disables mosaic.
        batch_size, stride, pad: rect batch-shape parameters.
        seed: augmentation seed for int indexing.
        cache_dir: scan-cache location override.
        prefix: log/error prefix.
        nc: number of classes for the class-id check (None: ids only need to be >= 0).
        use_cache: read the scan cache when valid.
        cache_images: decode and resize every image once and keep it in RAM (the official
            ``--cache ram``); skipped with a warning when it would take more than half of the
            available memory. Items are identical with and without it.
        single_cls: train/validate as one class: every label's class becomes 0 (after the
            class ids were checked against ``nc``).
    """

    def __init__(
        self,
        sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        imgsz: int = 640,
        augment: bool = False,
        hyp: Mapping[str, Any] | None = None,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = 32,
        pad: float = 0.0,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        prefix: str = "",
        *,
        nc: int | None = None,
        use_cache: bool = True,
        cache_images: bool = False,
        single_cls: bool = False,
    ) -> None:
        if stride <= 0 or imgsz <= 0 or imgsz % stride:
            raise ValueError(f"{prefix}imgsz={imgsz} must be a positive multiple of the stride {stride}")
        if batch_size <= 0:
            raise ValueError(f"{prefix}batch_size must be positive, got {batch_size}")
        if seed < 0:
            raise ValueError(f"{prefix}seed must be >= 0, got {seed}")
        self.sources = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
        self.imgsz = int(imgsz)
        self.augment = bool(augment)
        self.hyp = AugmentParams.from_hyp(hyp)
        self.rect = bool(rect)
        self.batch_size = int(batch_size)
        self.stride = int(stride)
        self.pad = float(pad)
        self.seed = int(seed)
        self.epoch = 0
        self.prefix = prefix
        self.report = scan_split(self.sources, nc=nc, cache_dir=cache_dir, prefix=prefix, use_cache=use_cache)
        _log_report(self.report)
        self.report.raise_if_empty(self.sources)
        self.im_files: list[str] = list(self.report.im_files)
        self.label_files: list[str] = list(self.report.label_files)
        self.labels: list[np.ndarray] = list(self.report.labels)
        if single_cls:
            self.labels = [np.concatenate((np.zeros_like(lab[:, :1]), lab[:, 1:]), 1) for lab in self.labels]
        self.shapes: np.ndarray = self.report.shapes.copy()  # (h, w) per image
        self.mosaic = self.augment and not self.rect and self.hyp.mosaic > 0
        self.batch_shapes: np.ndarray | None = None
        self.batch_index: np.ndarray | None = None
        if self.rect:
            self._init_rect()
        self._ims: list[np.ndarray] | None = None
        if cache_images:
            self._cache_images()

    # ------------------------------------------------------------------ structure
    def __len__(self) -> int:
        return len(self.im_files)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by int indexing (the loader passes it explicitly with each index)."""
        self.epoch = int(epoch)

    def _init_rect(self) -> None:
        h, w = self.shapes[:, 0].astype(np.float64), self.shapes[:, 1].astype(np.float64)
        order = np.argsort(h / w, kind="stable")
        self.im_files = [self.im_files[i] for i in order]
        self.label_files = [self.label_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes = self.shapes[order]
        ar = (self.shapes[:, 0] / self.shapes[:, 1]).astype(np.float64)
        bi = np.arange(len(ar)) // self.batch_size
        nb = int(bi[-1]) + 1
        rel = np.ones((nb, 2), dtype=np.float64)  # (h, w) relative to imgsz
        for b in range(nb):
            a = ar[bi == b]
            lo, hi = a.min(), a.max()
            if hi < 1:
                rel[b] = (hi, 1.0)
            elif lo > 1:
                rel[b] = (1.0, 1.0 / lo)
        self.batch_shapes = np.ceil(rel * self.imgsz / self.stride + self.pad).astype(np.int64) * self.stride
        self.batch_index = bi

    def batch_groups(self) -> list[list[int]] | None:
        """Index groups that must form one batch (rect mode), else None."""
        if self.batch_index is None:
            return None
        n = len(self)
        return [list(range(s, min(s + self.batch_size, n))) for s in range(0, n, self.batch_size)]

    # ------------------------------------------------------------------ loading
    def _cache_images(self) -> None:
        scale = self.imgsz / self.shapes.max(1)
        need = int(sum(round(h * r) * round(w * r) * 3 for (h, w), r in zip(self.shapes, scale)))
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not available on this platform
            avail = None
        procs = max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)  # every DDP process on this node caches
        if avail is not None and need * procs > avail / 2:
            LOGGER.warning(
                "%snot caching images: %d process(es) x %.1f GB is more than half of the %.1f GB available",
                self.prefix,
                procs,
                need / 1e9,
                avail / 1e9,
            )
            return
        ims = []
        for i in range(len(self)):
            img = self.load_image(i)[0]
            img.flags.writeable = False  # shared by every epoch (and forked workers): never mutated
            ims.append(img)
        self._ims = ims
        LOGGER.info("%scached %d images in RAM (%.2f GB)", self.prefix, len(ims), need / 1e9)

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image ``i`` resized so its long side is ``imgsz``: ``(img, (h0, w0), (h, w))``.

        Shrinking is bilinear when augmenting and area-like (box filter) otherwise, as in
        the official loaders (INTER_LINEAR / INTER_AREA). With ``cache_images`` the array is
        the cached, read-only one.
        """
        if self._ims is not None:
            img = self._ims[i]
            h0, w0 = (int(v) for v in self.shapes[i])
            return img, (h0, w0), img.shape[:2]
        shrink = Image.Resampling.BILINEAR if self.augment else Image.Resampling.BOX
        img, (h0, w0) = read_image(self.im_files[i], self.imgsz, shrink)
        return img, (h0, w0), img.shape[:2]

    @staticmethod
    def _rng(seed: int, epoch: int, index: int, *stream: int) -> np.random.Generator:
        return np.random.default_rng([seed, epoch, index, *stream])

    def _mosaic(
        self, index: int, layout_rng: np.random.Generator, affine_rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        s = self.imgsz
        centre = (
            int(layout_rng.integers(s // 2, s + s // 2 + 1)),
            int(layout_rng.integers(s // 2, s + s // 2 + 1)),
        )
        indices = [index, *(int(j) for j in layout_rng.integers(0, len(self), 3))]
        imgs = [self.load_image(j)[0] for j in indices]
        canvas, labels = mosaic4(imgs, [self.labels[j] for j in indices], s, centre)
        p = self.hyp
        return random_perspective(
            canvas,
            labels,
            affine_rng,
            degrees=p.degrees,
            translate=p.translate,
            scale=p.scale,
            shear=p.shear,
            perspective=p.perspective,
            border=(-(s // 2), -(s // 2)),
        )

    def _unpack(self, key: int | tuple[int, int, int] | Sequence[int]) -> tuple[int, int, int]:
        if isinstance(key, int | np.integer):
            index, epoch, seed = int(key), self.epoch, self.seed
        else:
            index, epoch, seed = (int(k) for k in key)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.prefix}index {index} out of range for {n} images")
        return index % n, epoch, seed

    def __getitem__(
        self, key: int | tuple[int, int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, str, tuple[Any, ...] | None]:
        index, epoch, seed = self._unpack(key)
        p = self.hyp
        shapes: tuple[Any, ...] | None = None
        if self.mosaic and self._rng(seed, epoch, index, _S_MOSAIC).random() < p.mosaic:
            img, labels = self._mosaic(
                index, self._rng(seed, epoch, index, _S_MOSAIC, 1), self._rng(seed, epoch, index, _S_AFFINE)
            )
            if p.mixup > 0:
                mrng = self._rng(seed, epoch, index, _S_MIXUP)
                if mrng.random() < p.mixup:
                    j = int(mrng.integers(0, len(self)))
                    img2, labels2 = self._mosaic(
                        j,
                        self._rng(seed, epoch, index, _S_MIXUP, 1),
                        self._rng(seed, epoch, index, _S_MIXUP, 2),
                    )
                    img, labels = mixup(
                        img, labels, img2, labels2, float(mrng.beta(p.mixup_alpha, p.mixup_alpha))
                    )
        else:
            img, (h0, w0), (h, w) = self.load_image(index)
            shape = (
                tuple(int(v) for v in self.batch_shapes[self.batch_index[index]])
                if self.batch_shapes is not None and self.batch_index is not None
                else (self.imgsz, self.imgsz)
            )
            img, (rw, rh), (padw, padh) = letterbox(img, shape, auto=False, scaleup=self.augment)
            uw, uh = int(round(w * rw)), int(round(h * rh))
            shapes = ((h0, w0), ((uh / h0, uw / w0), (padw, padh)))
            lab = self.labels[index]
            labels = np.concatenate([lab[:, :1], xywhn2xyxy(lab[:, 1:5], uw, uh, padw, padh)], 1)
            if self.augment:
                img, labels = random_perspective(
                    img,
                    labels,
                    self._rng(seed, epoch, index, _S_AFFINE),
                    degrees=p.degrees,
                    translate=p.translate,
                    scale=p.scale,
                    shear=p.shear,
                    perspective=p.perspective,
                )
        h, w = img.shape[:2]
        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
        labels = np.concatenate([labels[:, :1], xyxy2xywhn(labels[:, 1:5], w, h, clip=True)], 1)
        if self.augment:
            img = augment_hsv(img, self._rng(seed, epoch, index, _S_HSV), p.hsv_h, p.hsv_s, p.hsv_v)
            if p.flipud > 0 and self._rng(seed, epoch, index, _S_FLIPUD).random() < p.flipud:
                img, labels = flipud(img, labels)
            if p.fliplr > 0 and self._rng(seed, epoch, index, _S_FLIPLR).random() < p.fliplr:
                img, labels = fliplr(img, labels)
        targets = torch.zeros((len(labels), 6), dtype=torch.float32)
        targets[:, 1:] = torch.from_numpy(labels.astype(np.float32))
        chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return chw, targets, self.im_files[index], shapes
