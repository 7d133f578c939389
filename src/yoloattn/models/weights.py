"""Model weights: our safetensors + JSON sidecar format, and weight transfer between models.

Format: ``best.safetensors`` holds the tensors (``model.<row>.…`` keys as in the official
state dicts); ``best.json`` beside it holds what is needed to rebuild the network and use it:
the model config (with any attention rows), class names, ``nc``, ``imgsz``, the training
summary passed as ``meta``, the dtype and the yoloattn/torch versions. The same JSON is also
kept in the safetensors header (key ``"yoloattn"``) as a fallback when the sidecar is lost.
No pickle is involved; both files are written atomically (temporary file + ``os.replace``).

Transfer: :func:`transfer_weights` copies a state dict into a model whose rows may have been
renumbered by attention placement (``model.<old>.rest`` -> ``model.<index_map[old]>.rest``),
copies every tensor whose shape matches, keeps the box and objectness rows of the detection
outputs when only the class count differs, and leaves inserted attention modules at their
fresh (often identity-like) initialisation. Official ``.pt`` checkpoints are read through
:mod:`yoloattn.models.official_pickle`, which never runs code from the file.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from yoloattn._io import atomic_paths
from yoloattn.models.safetensors_check import check_against, non_finite, read_header

if TYPE_CHECKING:
    from yoloattn.models.detector import Model

__all__ = [
    "FORMAT",
    "sidecar_path",
    "save_model",
    "load_model",
    "read_sidecar",
    "load_state_for_transfer",
    "TransferReport",
    "transfer_weights",
]

LOGGER = logging.getLogger(__name__)

FORMAT = "yoloattn-model"
FORMAT_VERSION = 1
_HEADER_KEY = "yoloattn"
_KEY_RE = re.compile(r"^model\.(\d+)\.(.+)$")


def sidecar_path(path: str | Path) -> Path:
    """``dir/best.safetensors`` -> ``dir/best.json``."""
    path = Path(path)
    return path.with_suffix(".json")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module) and not hasattr(model, "yaml"):
        model = model.module
    return model


def _tensors_for_saving(state: Mapping[str, torch.Tensor], half: bool) -> dict[str, torch.Tensor]:
    """Detached, CPU, contiguous tensors; storages shared between entries are cloned apart."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in state.items():
        t = v.detach()
        if half and t.is_floating_point():
            t = t.half()
        t = t.cpu().contiguous()
        st = t.untyped_storage()
        if st.data_ptr() in seen or st.nbytes() != t.numel() * t.element_size():
            t = t.clone()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def save_model(
    model: nn.Module, path: str | Path, *, meta: dict[str, Any] | None = None, half: bool = False
) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) and its JSON sidecar, atomically.

    Args:
        model: a :class:`~yoloattn.models.detector.Model` (a DDP wrapper is unwrapped).
        path: target file; ``.safetensors`` is appended when missing.
        meta: extra JSON-serialisable information (``imgsz``, epoch, metrics, training args...).
        half: store floating-point tensors as float16 (loaded back as float32).

    Returns:
        The path of the ``.safetensors`` file.
    """
    from yoloattn import __version__

    model = _unwrap(model)
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, dict):
        raise TypeError(f"save_model needs a yoloattn Model with a .yaml config, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    meta = dict(meta or {})
    tensors = _tensors_for_saving(model.state_dict(), half)
    index_map = getattr(model, "index_map", None)
    cfg_nc: int = cfg.get("nc", 0)
    sidecar: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": getattr(model, "yaml_file", None),
        "nc": int(getattr(model, "nc", cfg_nc)),
        "names": [str(n) for n in getattr(model, "names", [])],
        "imgsz": meta.pop("imgsz", None),
        "dtype": "float16" if half else "float32",
        "params": int(sum(p.numel() for p in model.parameters())),
        "tensors": len(tensors),
        "versions": {
            "yoloattn": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "cfg": cfg,
        "index_map": {str(k): v for k, v in index_map.items()} if index_map else None,
        "meta": meta,
        # the same token in the header copy and in the .json: a .json left from an earlier write
        # (a kill between the two replacements) has another one and is not trusted (read_sidecar)
        "write_id": uuid.uuid4().hex,
    }
    text = json.dumps(sidecar, indent=2, default=_json_default)
    side = sidecar_path(path)
    with atomic_paths(path, side) as (tmp_st, tmp_js):  # replaced in this order
        save_file(tensors, str(tmp_st), metadata={"format": "pt", _HEADER_KEY: text})
        tmp_js.write_text(text + "\n", encoding="utf-8")
    LOGGER.debug("saved %d tensors to %s (+ %s)", len(tensors), path, side.name)
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar dict of a ``.safetensors`` file (or of the ``.json`` itself).

    Falls back to the copy in the safetensors header when the ``.json`` file is missing.
    """
    path = Path(path)
    if path.suffix == ".json":
        side, st = path, path.with_suffix(".safetensors")
    else:
        side, st = sidecar_path(path), path
    if side.is_file():
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{side}: invalid JSON sidecar: {e}") from None
        header = _header_sidecar(st) if isinstance(data, dict) and data.get("write_id") else None
        if header is not None and header.get("write_id") != data.get("write_id"):
            LOGGER.warning(
                "%s belongs to an earlier write than %s (interrupted save?); using the copy in its header",
                side,
                st.name,
            )
            data = header
    elif st.is_file():
        text = _header_text(st)
        if text is None:
            raise FileNotFoundError(
                f"{st} has no sidecar {side.name} and no config in its header; it is not a yoloattn "
                "model file (official .pt checkpoints: run `yoloattn convert` first)"
            )
        data = json.loads(text)
    else:
        raise FileNotFoundError(f"model file {st} does not exist")
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("cfg"), dict):
        raise ValueError(f"{side}: not a {FORMAT} sidecar (missing 'format' or 'cfg')")
    return data


def _header_text(st: Path) -> str | None:
    """The sidecar copy in a safetensors header (None when there is none)."""
    return read_header(st).get("__metadata__", {}).get(_HEADER_KEY)


def _header_sidecar(st: Path) -> dict[str, Any] | None:
    if not st.is_file():
        return None
    text = _header_text(st)
    try:
        data = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def load_model(path: str | Path, device: torch.device | str = "cpu") -> Model:
    """Rebuild the model described by the sidecar and load the tensors (strict), in eval mode.

    Float16 files are loaded as float32.
    """
    from yoloattn.models.detector import build_model
    from yoloattn.models.wiring import WiringError

    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    side = read_sidecar(path)
    cfg = side["cfg"]
    try:
        model = build_model(cfg, nc=side.get("nc") or cfg.get("nc"))
    except WiringError as e:  # the architecture that was trained, even if written by hand wrongly
        LOGGER.warning("%s: %s", path, e)
        model = build_model(cfg, nc=side.get("nc") or cfg.get("nc"), allow_unused_rows=True)
    check_against(path, read_header(path), model.state_dict(), f"config of {sidecar_path(path).name}")
    state = load_file(str(path))
    _warn_non_finite(path, state)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path}: tensors do not match the config in {sidecar_path(path).name}: "
            f"missing {_head(result.missing_keys)}, unexpected {_head(result.unexpected_keys)}"
        )
    if side.get("model_name"):
        model.yaml_file = side["model_name"]
    names = _sidecar_names(side, model.nc, sidecar_path(path))
    if names:
        model.names = names
    if side.get("index_map"):
        model.index_map = {int(k): int(v) for k, v in side["index_map"].items()}
    return model.to(device).eval()


def _sidecar_names(side: dict[str, Any], nc: int, where: Path) -> list[str]:
    """The sidecar's class names, checked: a list of ``nc`` distinct names (or none at all)."""
    names = side.get("names")
    if names is None or names == []:
        return []
    if not isinstance(names, list):
        raise ValueError(f"{where}: 'names' must be a list of class names, got {type(names).__name__}")
    if len(names) != nc:
        raise ValueError(f"{where}: 'names' has {len(names)} entries but the model has nc={nc} classes")
    out = [str(n) for n in names]
    twice = sorted({n for n in out if out.count(n) > 1})
    if twice:
        raise ValueError(f"{where}: duplicate class name(s) {twice} in 'names'")
    return out


def _warn_non_finite(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    bad = non_finite(state)
    if bad:
        LOGGER.warning("%s: %d tensor(s) hold NaN or infinity: %s", path, len(bad), _head(bad))


def _head(keys: list[str], n: int = 5) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return f"{len(keys)} {keys[:n]}{more}"


def load_state_for_transfer(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a weights file for :func:`transfer_weights`.

    ``.safetensors`` files of ours give the sidecar as metadata (``{}`` for a bare safetensors
    state dict); official ``.pt`` checkpoints are read with the restricted unpickler and give
    ``{"cfg", "names", "nc", "source"}`` (``cfg`` may be None).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        read_header(path)  # a damaged file: one line naming it
        state = load_file(str(path))
        _warn_non_finite(path, state)
        try:
            meta = read_sidecar(path)
        except FileNotFoundError:
            meta = {}
        return state, meta
    if path.suffix in (".pt", ".pth"):
        from yoloattn.models.official_pickle import load_official_checkpoint

        ck = load_official_checkpoint(path)
        return ck.state_dict, {"cfg": ck.cfg, "names": ck.names, "nc": ck.nc, "source": ck.source}
    raise ValueError(
        f"{path}: unknown weights format {path.suffix!r}; expected .safetensors or an official .pt"
    )


# ----------------------------------------------------------------------------- transfer


@dataclass
class TransferReport:
    """What :func:`transfer_weights` did, key by key.

    Attributes:
        matched: destination keys copied in full.
        partial: destination keys of the detection outputs of which only the box and
            objectness rows were copied (class count differs).
        skipped: ``(source key, source shape, destination shape)`` not copied (shape mismatch).
        new: destination keys with no source (e.g. inserted attention layers): fresh init.
        unused: source keys that map to no destination key.
        excluded: source keys left out on request.
    """

    matched: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    skipped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    def summary(self) -> str:
        total = len(self.matched) + len(self.partial) + len(self.skipped) + len(self.new)
        s = (
            f"transferred {len(self.matched) + len(self.partial)}/{total} tensors "
            f"(matched {len(self.matched)}, partial {len(self.partial)}, skipped {len(self.skipped)}, "
            f"new {len(self.new)}, unused {len(self.unused)}"
        )
        if self.excluded:
            s += f", excluded {len(self.excluded)}"
        gates = [k for k in self.new if k.endswith(".gate")]
        if gates:
            s += f"; {len(gates)} of the new are zero-initialised insertion gates"
        return s + ")"

    def __str__(self) -> str:
        return self.summary()


def _remap(key: str, index_map: Mapping[int, int] | None) -> str | None:
    if index_map is None:
        return key
    m = _KEY_RE.match(key)
    if m is None:
        return key
    old = int(m.group(1))
    if old not in index_map:
        return None
    return f"model.{index_map[old]}.{m.group(2)}"


def _gate_alias(key: str, dst: Mapping[str, torch.Tensor]) -> str:
    """The destination key of ``key`` across plain and identity insertion of one attention row.

    A gated row keeps its module under ``model.N.attn.``; a plain row has it at ``model.N.``.
    Weights of an attention module move between the two layouts unchanged.
    """
    if key in dst:
        return key
    m = _KEY_RE.match(key)
    if m is None:
        return key
    n, rest = m.group(1), m.group(2)
    alt = f"model.{n}.{rest[5:]}" if rest.startswith("attn.") else f"model.{n}.attn.{rest}"
    return alt if alt in dst else key


def _head_info(model: nn.Module) -> tuple[str | None, int]:
    layers = getattr(model, "model", None)
    if isinstance(layers, nn.Sequential) and len(layers):
        head = layers[-1]
        na = getattr(head, "na", None)
        if isinstance(na, int):
            return f"model.{len(layers) - 1}.", na
    return None, 0


def _partial_copy(src: torch.Tensor, dst: torch.Tensor, na: int) -> torch.Tensor | None:
    """Copy box+objectness rows (first 5 of each anchor block) along the one differing dim."""
    if src.dim() != dst.dim() or na <= 0:
        return None
    diff = [d for d in range(dst.dim()) if src.shape[d] != dst.shape[d]]
    if len(diff) != 1:
        return None
    d = diff[0]
    ns, nd = src.shape[d], dst.shape[d]
    if ns % na or nd % na or ns // na < 5 or nd // na < 5:
        return None
    s = src.movedim(d, 0).reshape(na, ns // na, -1)
    out = dst.detach().clone().movedim(d, 0).contiguous()
    o = out.view(na, nd // na, -1)
    o[:, :5] = s[:, :5].to(o.dtype)
    return out.movedim(0, d).contiguous()


@torch.no_grad()
def transfer_weights(
    src_state: Mapping[str, torch.Tensor],
    dst_model: nn.Module,
    index_map: Mapping[int, int] | None = None,
    *,
    exclude: Iterable[str] = (),
) -> TransferReport:
    """Copy ``src_state`` into ``dst_model`` in place and report what happened.

    Args:
        src_state: source state dict (ours, or from an official checkpoint; any float dtype).
        dst_model: destination model (its state is overwritten where a source matches).
        index_map: old row -> new row (from :func:`~yoloattn.models.placement.place_attention`);
            None when the rows are the same. Source rows missing from the map are unused.
        exclude: source keys containing any of these substrings are left out (e.g. ``"anchor"``).

    Detection-output tensors (``m.k.weight``/``bias`` and IDetect ``im.k.implicit``) whose
    class count differs get their box+objectness rows copied and are listed as ``partial``.
    """
    dst_model = _unwrap(dst_model)
    dst_sd = dst_model.state_dict()
    head_prefix, na = _head_info(dst_model)
    excl = tuple(exclude)
    if index_map:
        src_rows = {int(m.group(1)) for m in map(_KEY_RE.match, src_state) if m}
        beyond = sorted(r for r in src_rows if r not in index_map)
        if beyond:
            LOGGER.warning(
                "source weights have rows %s that the index map does not know; if they come from a "
                "model that already has attention rows, map rows with "
                "yoloattn.models.placement.row_map(source_cfg, target_cfg) instead",
                beyond[:8],
            )
    report = TransferReport()
    new_state: dict[str, torch.Tensor] = {}
    for sk, t in src_state.items():
        if excl and any(e in sk for e in excl):
            report.excluded.append(sk)
            continue
        dk = _remap(sk, index_map)
        if dk is not None:
            dk = _gate_alias(dk, dst_sd)
        if dk is None or dk not in dst_sd or dk in new_state:
            report.unused.append(sk)
            continue
        dt = dst_sd[dk]
        if tuple(t.shape) == tuple(dt.shape):
            new_state[dk] = t.detach().to(device=dt.device, dtype=dt.dtype)
            report.matched.append(dk)
            continue
        part = None
        if head_prefix is not None and dk.startswith(head_prefix) and dt.is_floating_point():
            part = _partial_copy(t.detach().to(dt.device), dt, na)
        if part is not None:
            new_state[dk] = part
            report.partial.append(dk)
        else:
            report.skipped.append((sk, tuple(t.shape), tuple(dt.shape)))
    skipped_dst = {_remap(k, index_map) for k, _, _ in report.skipped}
    report.new = [k for k in dst_sd if k not in new_state and k not in skipped_dst]
    dst_model.load_state_dict({**dst_sd, **new_state}, strict=True)
    LOGGER.debug("transfer: %s", report.summary())
    return report
