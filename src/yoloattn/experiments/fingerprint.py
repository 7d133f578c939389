"""The fingerprint of a study: every option that changes its results, stored in ``study.json``.

A study folder holds runs that are only comparable if they were trained and evaluated the same
way. :func:`study_fingerprint` records the model, the data (the dataset YAML, and a hash of the
sorted image and label file lists with the image sizes and the labels' contents), the starting
weights (SHA-256 of the file), every training option that changes a result (epochs, imgsz, batch,
the insertion mode, the recipe and its overrides, ...; see :data:`NOT_RESULT_OPTIONS` for the
ones left out) and the package version. The seeds and variants are not part of it: they name the
runs, so adding seeds or variants under identical options reuses the finished runs.

:func:`check_study` compares a rerun's fingerprint with the stored one and raises
:class:`StudyMismatch` (one line naming the differing keys) when they differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "NOT_RESULT_OPTIONS",
    "StudyMismatch",
    "check_study",
    "data_fingerprint",
    "diff_fingerprints",
    "discard_study",
    "file_sha256",
    "flatten",
    "result_option_defaults",
    "study_fingerprint",
]

#: TrainConfig options that do not change a run's result (where and how verbosely it runs, how
#: often it is validated along the way, what extra files it keeps), or that compare sets itself.
NOT_RESULT_OPTIONS = frozenset(
    {
        "attention",  # the variant: part of the run's identity
        "seed",  # the seed: part of the run's identity
        "data",
        "model",
        "weights",  # recorded separately, with a hash
        "project",
        "name",
        "exist_ok",
        "resume",
        "device",
        "workers",
        "quiet",
        "tensorboard",
        "cache_dir",
        "cache",
        "plots",
        "save_period",
        "noval",
        "val_interval",
        "eval_start",
        "stop_after_epochs",
    }
)


class StudyMismatch(ValueError):
    """A rerun of a study with options that change its results."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's contents."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _split_hash(sources: list[Path], root: Path) -> tuple[str, int]:
    """Hash of one split: sorted image names (relative to the dataset root) and sizes, and the
    contents of their label files. Returns ``(sha256, number of images)``."""
    from yoloattn.data.scan import find_images, img2label_path

    images, _, _ = find_images(sources)
    h = hashlib.sha256()

    def rel(p: Path) -> str:
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return p.resolve().as_posix()

    for im in sorted(images, key=rel):
        lb = img2label_path(im)
        label = lb.read_bytes() if lb.is_file() else b"<no labels>"
        h.update(f"{rel(im)}|{im.stat().st_size}|".encode())
        h.update(hashlib.sha256(label).digest())
    return h.hexdigest(), len(images)


def data_fingerprint(data: str | Path) -> dict[str, Any]:
    """``{"yaml", "classes", "train_images", "val_images", "hash"}`` of a dataset YAML.

    The hash covers the class names, and per split the sorted image list (names relative to the
    dataset root, file sizes) and the label files' contents: cheap (one read of every label file),
    and independent of where the dataset lies or when it was copied.
    """
    from yoloattn.data import load_dataset_config

    dcfg = load_dataset_config(data)
    h = hashlib.sha256(json.dumps(list(dcfg.names)).encode())
    out: dict[str, Any] = {"yaml": str(data), "classes": dcfg.nc}
    for split in ("train", "val"):
        sources = dcfg.split(split)
        if not sources:
            out[f"{split}_images"] = 0
            continue
        digest, n = _split_hash(sources, dcfg.root)
        h.update(f"{split}:{digest}".encode())
        out[f"{split}_images"] = n
    out["hash"] = h.hexdigest()[:16]
    return out


def result_option_defaults() -> dict[str, Any]:
    """The :class:`~yoloattn.engine.train_config.TrainConfig` options in a fingerprint, at their
    defaults (JSON-normalised, as stored)."""
    from yoloattn.engine.train_config import TrainConfig

    out: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in NOT_RESULT_OPTIONS:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:  # pragma: no cover - every TrainConfig field has a default
            out[f.name] = None
    return json.loads(json.dumps(out, default=str))


def study_fingerprint(cfg: Any) -> dict[str, Any]:
    """The fingerprint of a :class:`~yoloattn.experiments.compare.CompareConfig` (see module doc).

    Training options not given take the :class:`~yoloattn.engine.train_config.TrainConfig`
    default, so passing an option at its default value does not change the fingerprint.
    """
    import yoloattn

    train: Mapping[str, Any] = cfg.train
    options = {k: train.get(k, v) for k, v in result_option_defaults().items()}
    weights = None
    if cfg.weights:
        wp = Path(cfg.weights)
        weights = {"file": wp.name, "sha256": file_sha256(wp)[:16] if wp.is_file() else "missing"}
    fp: dict[str, Any] = {
        "model": cfg.model,
        "data": data_fingerprint(cfg.data),
        "weights": weights,
        **json.loads(json.dumps(options, default=str)),  # JSON-normalised (tuples -> lists)
        "version": yoloattn.__version__,
    }
    return fp


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"hash": h}}`` -> ``{"data.hash": h}`` (the keys a mismatch names)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def diff_fingerprints(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The flattened keys whose values differ (``data.yaml`` is only a path: left out when the
    data hash agrees, so a moved dataset is the same data)."""
    a, b = flatten(old), flatten(new)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if "data.hash" not in keys:
        keys = [k for k in keys if k != "data.yaml"]
    return keys


def _short(v: Any, n: int = 24) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= n else s[: n - 3] + "..."


def check_study(root: Path, fingerprint: Mapping[str, Any]) -> None:
    """Raise :class:`StudyMismatch` if ``root/study.json`` was written with other options.

    A study folder without ``study.json`` (new) passes; one whose ``study.json`` has no
    fingerprint (an older version) passes only if it holds no runs yet.
    """
    study = root / "study.json"
    if not study.is_file():
        return
    old = json.loads(study.read_text()).get("fingerprint")
    how = f"use --name NEW for a new study, or --fresh to discard {root}"
    if old is None:
        if any(p.is_dir() for p in root.iterdir()):
            raise StudyMismatch(
                f"study {root} was written by an older yoloattn without a record of its options; {how}"
            )
        return
    keys = diff_fingerprints(old, fingerprint)
    if keys:
        a, b = flatten(old), flatten(fingerprint)
        what = ", ".join(f"{k} ({_short(a.get(k))} -> {_short(b.get(k))})" for k in keys)
        raise StudyMismatch(f"study {root} was run with other options: {what}; {how}")


def discard_study(root: Path) -> None:
    """Delete a study folder (``--fresh``); refuses a non-empty folder that is not a study."""
    if not root.exists():
        return
    if not (root / "study.json").is_file() and any(root.iterdir()):
        raise ValueError(f"--fresh: {root} is not a study folder (no study.json); not deleting it")
    shutil.rmtree(root)
