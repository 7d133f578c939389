"""Scanning a split: find its images, check every image and label line, remember the result.

:func:`find_images` resolves the sources (image folders searched recursively, ``.txt`` lists of
image paths, image files). The label of ``.../images/<rest>/x.jpg`` is
``.../labels/<rest>/x.txt`` (:func:`img2label_path`: the last ``images`` path component is
replaced), one ``class x y w h`` line per box, normalised to [0, 1]. :func:`scan_split` fully
decodes every image and checks every label line; each defect becomes a
:class:`~yoloattn.data.report.Problem` of the returned
:class:`~yoloattn.data.report.ScanReport` (nothing is kept or dropped silently), and the result
is saved in / reused from the scan cache (:mod:`yoloattn.data.cache`).

Hostile or odd files are reported, never silently kept or lost: symbolic links whose target is
missing (``broken_link``) or that point to folders (not followed), 16-bit greyscale images
(read by keeping the high byte, as libpng and OpenCV do, never clipped to white), 32-bit or
float pixels (``unsupported_file``), label files with a UTF-8 byte-order mark (read), label
files over :data:`MAX_LABEL_BYTES` (``unreadable_label``), and numbers Python's ``float``
accepts but a label file cannot mean (``0_3``, ``nan``, ``inf``, non-ASCII digits:
``non_numeric``).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from yoloattn.data.cache import CACHE_SUFFIX, cache_candidates, load_cache, save_cache, scan_hash
from yoloattn.data.report import IMG_FORMATS, Problem, ScanReport

__all__ = [
    "COORD_TOL",
    "MAX_LABEL_BYTES",
    "UnsupportedPixels",
    "exif_size",
    "find_images",
    "img2label_path",
    "scan_split",
    "to_rgb",
]

LOGGER = logging.getLogger(__name__)

_PIL_FORMATS = {"BMP", "JPEG", "MPO", "PNG", "TIFF", "WEBP"}
COORD_TOL = 0.01
# Edges outside [0, 1] by less than this are rounding in 5-6 decimal label files: clipped, not reported.
_ROUNDING = 1e-5
#: larger label files are not read (a label line is ~40 bytes: this is ~400k boxes).
MAX_LABEL_BYTES = 16 * 2**20
# A label value: plain ASCII decimal, optional exponent (float() also takes "0_3", "nan", "١").
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


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
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    (images if _is_image_name(f) else others).append(f)
                elif f.is_symlink() or not f.is_dir():
                    problems.append(_not_a_file(f))
        elif p.is_file() and p.suffix.lower() == ".txt":
            try:
                lines = p.read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"{prefix}cannot read image list {p}: {e}") from e
            for ln, line in enumerate(lines, 1):
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                f = Path(entry).expanduser()
                f = f if f.is_absolute() else p.parent / f
                if f.is_symlink() and not f.exists():
                    n_found += 1
                    problems.append(
                        Problem("broken_link", str(p), ln, f"listed image {f} {_link_text(f)}; skipped")
                    )
                elif not f.is_file():
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
    n_found += len(images) + sum(
        1 for p in problems if p.kind == "unsupported_file" or (p.kind == "broken_link" and p.line is None)
    )
    return images, problems, n_found


def _link_text(f: Path) -> str:
    try:
        target = os.readlink(f)
    except OSError:
        target = "?"
    return f"is a symbolic link to {target}, which does not exist"


def _not_a_file(f: Path) -> Problem:
    """The problem of a folder entry that is neither a file nor a folder to search."""
    if f.is_symlink() and not f.exists():
        return Problem("broken_link", str(f), None, f"{_link_text(f)}; skipped")
    if f.is_dir():
        return Problem(
            "unsupported_file",
            str(f),
            None,
            "symbolic link to a folder: not followed (list the folder as a source instead); skipped",
        )
    return Problem("unsupported_file", str(f), None, "not a regular file (a device, pipe or socket); skipped")


def exif_size(im: Image.Image) -> tuple[int, int]:
    """``(w, h)`` after applying the EXIF orientation."""
    w, h = im.size
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not reject a decodable image
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


class UnsupportedPixels(ValueError):
    """An image whose pixels cannot be read as 8-bit RGB without losing them."""


def to_rgb(im: Image.Image, fmt: str | None) -> Image.Image:
    """A decoded image of format ``fmt`` as 8-bit RGB.

    16-bit greyscale (modes ``I;16*``, and ``I`` from a PNG, whose samples are at most 16 bits)
    keeps the high byte of each sample (``v >> 8``, as libpng and OpenCV read 16-bit files); PIL's
    own conversion would clip every value above 255 to white. Other modes go through
    ``Image.convert``. Raises :class:`UnsupportedPixels` for 32-bit integer or float pixels
    (their range is unknown) and for modes PIL cannot convert to RGB.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or (mode == "I" and fmt == "PNG"):
        grey = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise UnsupportedPixels(f"{kind} pixels (mode {mode}) cannot be read as 8-bit RGB; convert the image")
    try:
        return im.convert("RGB")
    except ValueError as e:  # e.g. "conversion from LAB to RGB not supported"
        raise UnsupportedPixels(f"mode {mode} cannot be converted to RGB ({e})") from e


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
            w, h = exif_size(im)
            if fmt in ("JPEG", "MPO"):
                im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
            to_rgb(im, fmt)
    except UnsupportedPixels as e:
        return None, Problem("unsupported_file", str(path), None, f"{e}; skipped")
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
    if label_file.is_symlink() and not label_file.exists():
        return None, [Problem("unreadable_label", lf, None, f"{_link_text(label_file)}; image skipped")]
    if not label_file.is_file():
        if label_file.exists():  # a folder, pipe or device named like a label file
            return None, [Problem("unreadable_label", lf, None, "not a regular file; image skipped")]
        return np.zeros((0, 5), np.float32), [
            Problem("missing_label", lf, None, "no label file; image used as background")
        ]
    try:
        size = label_file.stat().st_size
        if size > MAX_LABEL_BYTES:
            msg = f"label file of {size / 2**20:,.0f} MB (limit {MAX_LABEL_BYTES >> 20} MB); image skipped"
            return None, [Problem("unreadable_label", lf, None, msg)]
        text = label_file.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of line 1
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
        bad = next((v for v in parts if not _NUMBER.fullmatch(v)), None)
        if bad is not None:
            problems.append(Problem("non_numeric", lf, ln, f"non-numeric value {bad[:40]!r}; line dropped"))
            continue
        vals = [float(v) for v in parts]
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
        key: tuple[float, ...] = tuple(np.array(row, dtype=np.float32).tolist())
        if key in first_line:
            problems.append(Problem("duplicate", lf, ln, f"duplicate of line {first_line[key]}; removed"))
            continue
        first_line[key] = ln
        rows.append(row)
    labels = np.array(rows, dtype=np.float32).reshape(-1, 5)
    return labels, problems


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
    digest = scan_hash(images, label_files, list_problems, nc, tol)
    candidates = cache_candidates(label_files, cache_dir) if images else []
    if use_cache:
        for path in candidates:
            cached = load_cache(path, digest, prefix)
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
        saved = save_cache(report, candidates, explicit=cache_dir is not None)
        report.cache_file = str(saved) if saved else None
    return report
