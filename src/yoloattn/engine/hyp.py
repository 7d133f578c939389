"""Training hyperparameter recipes: loading, validation and per-model defaults.

Four recipes ship with the package (``engine/hyps/``); their values are the official defaults
(yolo-architectures spec, section 6.1):

========================  =============================================  ==================
name                      official counterpart                           default for
========================  =============================================  ==================
``hyp.scratch-low``       YOLOv5 ``hyp.scratch-low``                     yolov5n, yolov5s
``hyp.scratch-high``      YOLOv5 ``hyp.scratch-high``                    yolov5m, yolov5l, yolov5x
``hyp.tiny``              YOLOv7 ``hyp.scratch.tiny``                    yolov7-tiny
``hyp.p5``                YOLOv7 ``hyp.scratch.p5``                      yolov7, yolov7x
========================  =============================================  ==================

A recipe is a flat YAML mapping of numbers. :func:`load_hyp` accepts a shipped name (with or
without the ``hyp.`` prefix and ``.yaml`` suffix, official YOLOv7 spellings such as
``scratch.tiny`` too), a path to a YAML file of the same shape, or an already loaded mapping,
applies optional overrides and validates every key and value. The returned dict always holds
the optional keys ``paste_in`` (0.0), ``loss_ota`` (0) and ``label_smoothing`` (0.0) so that
callers never need ``.get`` with a default.

The loss gains in a recipe are nominal (3 levels, 80 classes, 640 px); the trainer rescales them
with :func:`scale_loss_gains` (spec section 6.2).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "HYP_DIR",
    "OPTIONAL_KEYS",
    "REQUIRED_KEYS",
    "default_hyp_for",
    "hyp_path",
    "list_hyps",
    "load_hyp",
    "scale_loss_gains",
]

HYP_DIR = Path(__file__).resolve().parent / "hyps"

#: Keys every recipe must define (spec section 6.1, common to YOLOv5 and YOLOv7).
REQUIRED_KEYS: tuple[str, ...] = (
    "lr0",
    "lrf",
    "momentum",
    "weight_decay",
    "warmup_epochs",
    "warmup_momentum",
    "warmup_bias_lr",
    "box",
    "cls",
    "cls_pw",
    "obj",
    "obj_pw",
    "iou_t",
    "anchor_t",
    "fl_gamma",
    "hsv_h",
    "hsv_s",
    "hsv_v",
    "degrees",
    "translate",
    "scale",
    "shear",
    "perspective",
    "flipud",
    "fliplr",
    "mosaic",
    "mixup",
    "copy_paste",
)

#: Keys a recipe may omit, with the value used when it does.
OPTIONAL_KEYS: dict[str, float | int] = {
    "paste_in": 0.0,  # YOLOv7 paste-in augmentation probability
    "loss_ota": 0,  # YOLOv7: 1 selects ComputeLossOTA
    "label_smoothing": 0.0,  # a CLI flag in the official repos, a recipe key here
    "mixup_alpha": 32.0,  # mixup blend ratio ~ Beta(a, a): 32 in YOLOv5, 8 in YOLOv7 (spec 6.2)
}

_ALL_KEYS: tuple[str, ...] = REQUIRED_KEYS + tuple(OPTIONAL_KEYS)

# Shipped recipe files, keyed by their short name.
_SHIPPED: dict[str, str] = {
    "scratch-low": "hyp.scratch-low.yaml",
    "scratch-high": "hyp.scratch-high.yaml",
    "tiny": "hyp.tiny.yaml",
    "p5": "hyp.p5.yaml",
}
# Other spellings of the same recipes (official YOLOv7 file names).
_ALIASES: dict[str, str] = {
    "scratch.tiny": "tiny",
    "scratch.p5": "p5",
    "scratch-tiny": "tiny",
    "scratch-p5": "p5",
}

_PROBABILITY_KEYS = frozenset({"flipud", "fliplr", "mosaic", "mixup", "copy_paste", "paste_in"})
_FRACTION_KEYS = frozenset({"momentum", "warmup_momentum"})  # in [0, 1)
_POSITIVE_KEYS = frozenset({"lr0", "lrf"})  # > 0


def list_hyps() -> list[str]:
    """Names of the shipped recipes, e.g. ``["hyp.p5", "hyp.scratch-high", ...]``."""
    return sorted(f"hyp.{name}" for name in _SHIPPED)


def _short_name(name: str) -> str | None:
    """Map a spelling of a shipped recipe name to its short key, or None."""
    key = name.strip().lower()
    if key.endswith(".yaml"):
        key = key[: -len(".yaml")]
    elif key.endswith(".yml"):
        key = key[: -len(".yml")]
    if key.startswith("hyp."):
        key = key[len("hyp.") :]
    key = _ALIASES.get(key, key)
    return key if key in _SHIPPED else None


def hyp_path(name: str) -> Path:
    """Path of a shipped recipe file, e.g. ``hyp_path("scratch-low")``.

    Raises:
        ValueError: ``name`` is not a shipped recipe.
    """
    short = _short_name(name)
    if short is None:
        raise ValueError(f"unknown shipped hyperparameter recipe {name!r}; shipped recipes: {list_hyps()}")
    return HYP_DIR / _SHIPPED[short]


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, _ALL_KEYS, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _unknown_keys_error(keys: list[str], where: str) -> ValueError:
    lines = [f"  {k!r}{_suggest(k)}" for k in keys]
    return ValueError(
        f"unknown hyperparameter key(s) in {where}:\n"
        + "\n".join(lines)
        + f"\nvalid keys: {', '.join(_ALL_KEYS)}"
    )


def _coerce(key: str, value: Any, where: str) -> float | int:
    """Check one value: a finite real number within the key's range."""
    if isinstance(value, str):
        # CLI overrides arrive as text ("0.02"); parse them as YAML scalars.
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        value = parsed
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"hyperparameter {key!r} in {where} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"hyperparameter {key!r} in {where} must be finite, got {value!r}")
    if value < 0:
        raise ValueError(f"hyperparameter {key!r} in {where} must be >= 0, got {value!r}")
    if key in _PROBABILITY_KEYS and value > 1:
        raise ValueError(
            f"hyperparameter {key!r} in {where} is a probability and must lie in [0, 1], got {value!r}"
        )
    if key in _FRACTION_KEYS and value >= 1:
        raise ValueError(f"hyperparameter {key!r} in {where} must lie in [0, 1), got {value!r}")
    if key in _POSITIVE_KEYS and value == 0:
        raise ValueError(f"hyperparameter {key!r} in {where} must be > 0, got {value!r}")
    if key == "anchor_t" and value <= 1:
        raise ValueError(
            f"hyperparameter 'anchor_t' in {where} must be > 1 (it bounds max(ratio, 1/ratio) of "
            f"target to anchor size), got {value!r}"
        )
    if key == "label_smoothing" and value >= 1:
        raise ValueError(f"hyperparameter 'label_smoothing' in {where} must lie in [0, 1), got {value!r}")
    if key == "loss_ota":
        if value not in (0, 1):
            raise ValueError(f"hyperparameter 'loss_ota' in {where} must be 0 or 1, got {value!r}")
        return int(value)
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read hyperparameter file {str(path)!r}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"hyperparameter file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(
            f"hyperparameter file {str(path)!r} must contain a mapping of key: number, "
            f"got {type(data).__name__}"
        )
    return data


def _resolve(name_or_path: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Return (raw mapping, description of its source)."""
    if isinstance(name_or_path, Mapping):
        return dict(name_or_path), "the given mapping"
    if isinstance(name_or_path, Path):
        if not name_or_path.is_file():
            raise ValueError(f"hyperparameter file {str(name_or_path)!r} does not exist")
        return _read_yaml(name_or_path), repr(str(name_or_path))
    if not isinstance(name_or_path, str):
        raise TypeError(
            f"load_hyp expects a recipe name, a path or a mapping, got {type(name_or_path).__name__}"
        )
    has_sep = "/" in name_or_path or "\\" in name_or_path
    short = None if has_sep else _short_name(name_or_path)
    if short is not None:
        path = HYP_DIR / _SHIPPED[short]
        return _read_yaml(path), f"shipped recipe 'hyp.{short}'"
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _read_yaml(path), repr(str(path))
    raise ValueError(
        f"unknown hyperparameter recipe {name_or_path!r}: it is neither a shipped recipe "
        f"({', '.join(list_hyps())}) nor an existing YAML file"
    )


def load_hyp(
    name_or_path: str | Path | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, float | int]:
    """Load, override and validate a hyperparameter recipe.

    Args:
        name_or_path: a shipped recipe name (``"hyp.scratch-low"``, ``"scratch-low"``,
            ``"hyp.scratch-low.yaml"``, ``"scratch.tiny"``, ...), a path to a YAML file, or a mapping.
            A string containing a path separator is always treated as a path.
        overrides: values replacing those of the recipe; strings are parsed as YAML numbers
            (so CLI text such as ``"0.02"`` works).

    Returns:
        A new dict holding every key of :data:`REQUIRED_KEYS` and :data:`OPTIONAL_KEYS`.

    Raises:
        ValueError: unknown recipe or file, unknown keys (the message suggests close matches),
            missing keys, or a value that is not a number in the key's range.
    """
    raw, where = _resolve(name_or_path)
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:
        raise ValueError(f"hyperparameter keys in {where} must be strings, got {bad!r}")
    unknown = [k for k in raw if k not in _ALL_KEYS]
    if unknown:
        raise _unknown_keys_error(unknown, where)
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ValueError(
            f"hyperparameter recipe {where} lacks required key(s) {missing}; start from a shipped "
            f"recipe ({', '.join(list_hyps())}) and change values with overrides instead"
        )
    hyp: dict[str, Any] = {**OPTIONAL_KEYS, **raw}
    if overrides:
        unknown = [k for k in overrides if k not in _ALL_KEYS]
        if unknown:
            raise _unknown_keys_error([str(k) for k in unknown], "overrides")
        hyp.update(overrides)
        where_of = {k: ("overrides" if k in overrides else where) for k in hyp}
    else:
        where_of = dict.fromkeys(hyp, where)
    return {k: _coerce(k, hyp[k], where_of[k]) for k in _ALL_KEYS}


_V5 = re.compile(r"(?<![a-z0-9])yolov5([nsmlx])6?(?![a-z0-9])")
_V7_TINY = re.compile(r"(?<![a-z0-9])yolov7[-_]?tiny(?![a-z0-9])")
_V7_P6 = re.compile(r"(?<![a-z0-9])yolov7[-_]?(w6|e6|d6|e6e)(?![a-z0-9])")
_V7_P5 = re.compile(r"(?<![a-z0-9])yolov7x?(?![a-z0-9])")


def default_hyp_for(cfg_name: str | Path) -> str:
    """Name of the official default recipe for a model config (for :func:`load_hyp`).

    ``yolov5n``/``yolov5s`` -> ``hyp.scratch-low``; ``yolov5m``/``l``/``x`` -> ``hyp.scratch-high``;
    ``yolov7-tiny`` -> ``hyp.tiny``; ``yolov7``/``yolov7x`` -> ``hyp.p5``. The family is read from the
    file name, so paths and derived names (``runs/yolov5s-cbam.yaml``) work.

    Raises:
        ValueError: the name shows no supported model family.
    """
    stem = Path(str(cfg_name)).name.lower()
    for suffix in (".yaml", ".yml"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    if m := _V5.search(stem):
        return "hyp.scratch-low" if m.group(1) in "ns" else "hyp.scratch-high"
    if _V7_TINY.search(stem):
        return "hyp.tiny"
    if _V7_P6.search(stem):
        raise ValueError(
            f"no shipped recipe for the YOLOv7 P6 model {str(cfg_name)!r} (official hyp.scratch.p6); "
            "pass a hyperparameter file explicitly"
        )
    if _V7_P5.search(stem):
        return "hyp.p5"
    raise ValueError(
        f"cannot infer the model family of {str(cfg_name)!r} (expected a name containing yolov5n/s/m/l/x, "
        f"yolov7-tiny, yolov7 or yolov7x); pass a hyperparameter recipe explicitly ({', '.join(list_hyps())})"
    )


def scale_loss_gains(hyp: Mapping[str, Any], *, nc: int, nl: int, imgsz: int) -> dict[str, Any]:
    """Rescale the nominal loss gains to a model and image size (spec section 6.2).

    ``box *= 3/nl``, ``cls *= nc/80 * 3/nl``, ``obj *= (imgsz/640)**2 * 3/nl``. Returns a new dict.
    """
    if nc < 1 or nl < 1 or imgsz < 1:
        raise ValueError(f"scale_loss_gains needs nc, nl, imgsz >= 1, got nc={nc}, nl={nl}, imgsz={imgsz}")
    out = dict(hyp)
    out["box"] = hyp["box"] * 3 / nl
    out["cls"] = hyp["cls"] * nc / 80 * 3 / nl
    out["obj"] = hyp["obj"] * (imgsz / 640) ** 2 * 3 / nl
    return out
