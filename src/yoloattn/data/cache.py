"""The scan cache: a scan's result saved as ``.npz`` and reused while nothing changed.

The cache is a plain NumPy ``.npz`` (no pickled objects; read with ``allow_pickle=False``) saved
as ``<label folder>.cache.npz`` next to the label folder, or in the user cache dir
(``$XDG_CACHE_HOME/yoloattn`` or ``~/.cache/yoloattn``) when that folder is read-only or lies
inside the installed ``yoloattn`` package (its demo data: a package folder is never written
to), or in an explicit ``cache_dir``. It is keyed by :func:`scan_hash`, a hash of the paths, sizes and mtimes
of all images and labels, the class count and the tolerance, so any change to them triggers a
rescan. It is written atomically (:func:`yoloattn._io.atomic_paths`): a kill leaves the old cache
or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from yoloattn._io import atomic_paths
from yoloattn.data.report import Problem, ScanReport

__all__ = [
    "CACHE_SUFFIX",
    "CACHE_VERSION",
    "cache_candidates",
    "load_cache",
    "save_cache",
    "scan_hash",
    "user_cache_dir",
]

LOGGER = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump whenever the checking rules or the cache layout change (2: hostile files)
CACHE_SUFFIX = ".cache.npz"


def _stat_key(p: Path) -> str:
    try:
        st = p.stat()
    except OSError:
        return f"{p}|-"
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def scan_hash(
    images: Sequence[Path],
    label_files: Sequence[Path],
    problems: Sequence[Problem],
    nc: int | None,
    tol: float,
) -> str:
    """The cache key of a scan: SHA-256 of the rules' version, ``nc``, ``tol``, every image's and
    label's path, size and mtime, and the image-list problems (missing listed files)."""
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


#: the installed package's folder (``Path(yoloattn.__file__).parent``); caches never go inside it
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _inside_package(d: Path) -> bool:
    try:
        return d.resolve().is_relative_to(PACKAGE_DIR)
    except OSError:
        return False


def _dir_writable(d: Path) -> bool:
    """Writable by us AND not marked read-only by its mode bits (respected even when running as root)."""
    try:
        return d.is_dir() and os.access(d, os.W_OK) and bool(d.stat().st_mode & 0o222)
    except OSError:
        return False


def cache_candidates(label_files: Sequence[Path], cache_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Where the cache of a split whose first label file is ``label_files[0]`` goes, in order of
    preference: ``cache_dir`` alone when given, else next to the label folder, then the user
    cache dir (named by the label folder and a hash of its path). Data inside the installed
    package (the demo data) is cached in the user cache dir only."""
    label_dir = Path(label_files[0]).parent.absolute()
    key = f"{label_dir.name}-{hashlib.sha1(str(label_dir).encode()).hexdigest()[:12]}{CACHE_SUFFIX}"
    if cache_dir is not None:
        return [Path(cache_dir).expanduser() / key]
    if _inside_package(label_dir):
        return [user_cache_dir() / key]
    return [label_dir.parent / f"{label_dir.name}{CACHE_SUFFIX}", user_cache_dir() / key]


def save_cache(report: ScanReport, candidates: Sequence[Path], explicit: bool) -> Path | None:
    """Save ``report`` at the first of ``candidates`` that can be written; returns that path or
    None (with a warning). The first candidate is skipped when its folder is read-only, unless
    ``explicit`` (a ``cache_dir`` given by the user, created when missing)."""
    labels = report.all_labels()
    offsets = np.cumsum([0] + [len(lab) for lab in report.labels]).astype(np.int64)
    problems = json.dumps([[p.kind, p.file, p.line, p.message] for p in report.problems])
    arrays: dict[str, Any] = {
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
        is_user_dir = explicit or i > 0 or path.parent == user_cache_dir()
        try:
            if is_user_dir:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not _dir_writable(path.parent):
                LOGGER.debug("label folder %s is read-only; caching in the user cache dir", path.parent)
                continue
            with atomic_paths(path) as (tmp,), open(tmp, "wb") as f:
                np.savez(f, **arrays)  # a file object: np.savez would append ".npz" to a path
            return path
        except OSError as e:
            LOGGER.debug("cannot write scan cache %s: %s", path, e)
    LOGGER.warning(
        "%scould not save the scan cache in any of %s", report.prefix, [str(c) for c in candidates]
    )
    return None


def load_cache(path: Path, expected_hash: str, prefix: str) -> ScanReport | None:
    """The report cached at ``path``, or None when it is missing, unreadable, of another cache
    version or of another :func:`scan_hash` than ``expected_hash``."""
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
