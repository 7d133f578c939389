"""``yoloattn convert``: official YOLOv5/YOLOv7 or ultralytics YOLOv8/YOLO11 ``.pt`` checkpoint ->
our ``.safetensors`` + JSON.

The checkpoint is read with a restricted unpickler that never imports or runs code from the
file (see :mod:`yoloattn.models.official_pickle`). The model config comes from the checkpoint
(``model.yaml``) or ``--cfg``; the class names from the checkpoint or ``--names``. The weights
must load with ``strict=True`` into our model of that config, so the output is exact.

A checkpoint is untrusted input: reading it is bounded in time and memory, its config is first
built on the ``meta`` device (no memory) and compared with its tensors before the real model is
allocated, and every failure is one line naming the file (exit status 1), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path
from typing import Any

#: errors of reading, checking and converting a checkpoint, answered with one line.
_ERRORS = (
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    OSError,
    RuntimeError,
    MemoryError,
    zipfile.BadZipFile,
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "convert",
        help="convert an official YOLOv5/v7/v8/11 .pt checkpoint to .safetensors (no code is run)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="official .pt file (torch zip format)")
    p.add_argument("-o", "--output", default=None, help="output .safetensors (default: beside the input)")
    p.add_argument(
        "--cfg",
        default=None,
        help="model config (shipped name such as yolov5s, or YAML) when the checkpoint has none "
        "or to override it",
    )
    p.add_argument("--names", default=None, help="comma-separated class names (override the checkpoint's)")
    p.add_argument("--half", action="store_true", help="store float16 tensors (default float32)")
    p.add_argument("--imgsz", type=int, default=640, help="image size recorded in the sidecar")
    return p


def _infer_nc(state: dict[str, Any], cfg: dict[str, Any]) -> int | None:
    """Class count from the first detection-output bias: na * (5 + nc) rows, or nc rows of the
    anchor-free head's class output (``cv3.0.2``)."""
    from yoloattn.models.parse import detect_index

    try:
        det = detect_index(cfg)
    except ValueError:
        return None
    cls_bias = state.get(f"model.{det}.cv3.0.2.bias")
    if cls_bias is not None and cls_bias.dim() == 1 and cls_bias.numel() > 0:
        return int(cls_bias.numel())
    bias = state.get(f"model.{det}.m.0.bias")
    anchors = cfg.get("anchors")
    if bias is None or not isinstance(anchors, list) or not anchors:
        return None
    na = len(anchors[0]) // 2 if isinstance(anchors[0], list) else int(anchors[0])
    if na <= 0 or bias.numel() % na:
        return None
    return bias.numel() // na - 5


def _check_blocks(src: Path, cfg: dict[str, Any], n_tensors: int) -> None:
    """Refuse a config with far more blocks (depth-scaled repeats) than the checkpoint has
    tensors: building it, even on the meta device, would take unbounded time."""
    from yoloattn.models.config import scale_values

    try:
        gd: Any = scale_values(cfg)[0]
    except (ValueError, TypeError, KeyError):
        gd = 1.0
    gd = gd if isinstance(gd, (int, float)) and not isinstance(gd, bool) and 0 < gd < 1e6 else 1.0
    total = 0
    for row in [*(cfg.get("backbone") or []), *(cfg.get("head") or [])]:
        n = row[1] if isinstance(row, (list, tuple)) and len(row) == 4 else 1
        ok = isinstance(n, (int, float)) and not isinstance(n, bool) and 0 < n < 1e12
        total += max(round(n * gd), 1) if ok else 1
    if total > max(1000, 4 * n_tensors):
        raise ValueError(
            f"{src}: the model config has {total:,} blocks (rows x depth-scaled repeats) for "
            f"{n_tensors} tensors in the checkpoint: it cannot describe these weights"
        )


def _check_fit(src: Path, nc: int, own: dict[str, Any], theirs: dict[str, Any]) -> None:
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shape = [k for k in own if k in theirs and tuple(own[k].shape) != tuple(theirs[k].shape)]
    if missing or unexpected or shape:

        def head(keys: list[str]) -> str:
            return f"{len(keys)} {keys[:4]}" + (" ..." if len(keys) > 4 else "")

        raise ValueError(
            f"{src}: the checkpoint does not fit the config (nc={nc}): missing {head(missing)}, "
            f"unexpected {head(unexpected)}, shape mismatch {head(shape)}. Check --cfg."
        )


def convert(
    checkpoint: str | Path,
    output: str | Path | None = None,
    *,
    cfg: str | None = None,
    names: list[str] | None = None,
    half: bool = False,
    imgsz: int = 640,
) -> Path:
    """Convert ``checkpoint``; returns the written ``.safetensors`` path."""
    from yoloattn.models.detector import build_model
    from yoloattn.models.official_pickle import load_official_checkpoint
    from yoloattn.models.parse import load_config
    from yoloattn.models.weights import save_model

    src = Path(checkpoint)
    ck = load_official_checkpoint(src)
    if cfg is not None:
        cfg_dict = load_config(cfg)
    elif ck.cfg is not None:
        cfg_dict = dict(ck.cfg)
        if cfg_dict.get("scales") is not None and cfg_dict.get("scale") is None:
            from yoloattn.models.config import guess_scale

            guess_scale(cfg_dict, str(cfg_dict.get("yaml_file") or src.stem))
    else:
        raise ValueError(
            f"{src} holds no model config (no model.yaml attribute); pass --cfg, e.g. --cfg yolov5s"
        )
    nc = ck.nc if ck.nc is not None else _infer_nc(ck.state_dict, cfg_dict)
    if nc is None:
        nc = int(cfg_dict.get("nc", 80))
    if names is not None:
        if nc is not None and len(names) != nc and ck.nc is not None:
            raise ValueError(f"--names gives {len(names)} names but the checkpoint has nc={nc}")
        nc = len(names)
    _check_blocks(src, cfg_dict, len(ck.state_dict))
    try:  # shapes only: a config that does not fit is refused before anything is allocated
        own = build_model(cfg_dict, nc=nc, device="meta").state_dict()
    except (ValueError, RuntimeError, NotImplementedError):  # cannot be checked on meta: build it
        own = None
    if own is not None:
        _check_fit(src, nc, own, ck.state_dict)
    model = build_model(cfg_dict, nc=nc)
    _check_fit(src, nc, model.state_dict(), ck.state_dict)
    model.load_state_dict(ck.state_dict, strict=True)
    final_names = names or ck.names
    if final_names is not None and len(final_names) == model.nc:
        model.names = list(final_names)
    out = Path(output) if output else src.with_suffix(".safetensors")
    if out.resolve() == src.resolve():
        raise ValueError(f"output {out} would overwrite the input")
    meta = {"imgsz": imgsz, "converted_from": ck.source}
    return save_model(model, out, meta=meta, half=half)


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    if names is not None and not all(names):
        raise ValueError(f"--names {args.names!r} has an empty name")
    try:
        out = convert(
            args.checkpoint, args.output, cfg=args.cfg, names=names, half=args.half, imgsz=args.imgsz
        )
    except FileNotFoundError:
        raise
    except _ERRORS as e:  # one line naming the file (the CLI prints ValueErrors without traceback)
        raise ValueError(_one_line(e, args.checkpoint)) from e
    from yoloattn.models.weights import read_sidecar

    side = read_sidecar(out)
    sys.stdout.write(
        f"wrote {out} and {out.with_suffix('.json').name}: {side['tensors']} tensors, "
        f"{side['params']:,} parameters, nc={side['nc']}, dtype {side['dtype']}\n"
    )
    return 0


def _one_line(e: BaseException, checkpoint: str) -> str:
    msg = (e.args[0] if isinstance(e, KeyError) and e.args else str(e)) or type(e).__name__
    msg = " ".join(str(msg).split())[:2000]
    if not isinstance(e, ValueError):
        msg = f"{type(e).__name__}: {msg}"
    return msg if checkpoint in msg else f"{checkpoint}: {msg}"
