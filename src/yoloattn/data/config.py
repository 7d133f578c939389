"""The dataset YAML: :func:`load_dataset_config` reads it into a :class:`DatasetConfig`.

Layout (the one users of YOLOv5/YOLOv7 know): ``path`` (the root, relative to the YAML's folder
when relative), ``train``, ``val`` and optional ``test`` (each a folder of images, a ``.txt``
file listing image paths, or a list of these, relative to the root), and ``names`` (a list, or a
dict ``{id: name}``) with optional ``nc``. Keys not used here (e.g. ``download``) are ignored;
nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_YAML_BYTES", "DatasetConfig", "load_dataset_config"]

#: larger dataset YAML files are refused (COCO's with its 80 names is ~2 KB).
MAX_YAML_BYTES = 16 * 2**20


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
            shown = (
                repr(item) if isinstance(item, str | int | float | type(None)) else f"a {type(item).__name__}"
            )
            raise ValueError(
                f"{yaml_path}: '{key}' must be a path or a list of paths (folder of images or .txt list), "
                f"got {shown[:200]}"
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
        values = [names[i] for i in range(len(keys))]
    elif isinstance(names, list):
        values = list(names)
    else:
        raise ValueError(
            f"{yaml_path}: 'names' must be a list or a {{id: name}} dict, got {type(names).__name__}"
        )
    for i, v in enumerate(values):  # never str() a container: YAML aliases can nest them exponentially
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ValueError(f"{yaml_path}: 'names' entry {i} is a {type(v).__name__}, not a name")
    out = [str(v) for v in values]
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
    size = yaml_path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ValueError(f"{yaml_path}: {size / 2**20:,.0f} MB is too large for a dataset YAML")
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{yaml_path}: not valid YAML: {' '.join(str(e).split())}") from e
    except RecursionError as e:
        raise ValueError(f"{yaml_path}: not valid YAML: nested too deep") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"{yaml_path}: expected a mapping with keys path/train/val/names, got {type(data).__name__}"
        )
    yaml_path = yaml_path.resolve()
    root_value = data.get("path")
    if root_value in (None, ""):
        root = yaml_path.parent
    elif not isinstance(root_value, str | int | float):
        raise ValueError(f"{yaml_path}: 'path' must be a folder, got a {type(root_value).__name__}")
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
