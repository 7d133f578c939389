"""The validation protocol: the one geometry in which the trainer's per-epoch validation,
``compare`` and ``yoloattn val`` see the validation images, and the evaluation options
(image size, single-class) that ``val`` and ``predict`` take from the weights' sidecar.

``per-image`` (the default): every image is resized so its long side is ``imgsz`` and padded
(centred, grey) only up to the next multiple of the model's max stride on its short side;
images are ordered by (shape, aspect ratio, scan order) and a batch holds only images of one
shape, at most ``batch`` of them. No image is padded to another image's shape, so detections and
metrics do not depend on the batch size or the number of workers (with the evaluator's fixed
forward batch, bit for bit).

``official-rect``: the official val scripts' rect batches: images sorted by aspect ratio, each
run of ``batch`` images padded to one shared shape, ``ceil(ratio * imgsz / stride + 0.5) *
stride`` (half a stride extra). Kept to reproduce published numbers; its metrics change with
the batch size.

This module imports no torch at import time (the CLI reads :data:`PROTOCOLS` to build its
parser).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_IMGSZ", "DEFAULT_PROTOCOL", "PROTOCOLS", "protocol_loader", "resolve_eval_options"]

#: Validation geometries (:func:`protocol_loader`); the first is the default.
PROTOCOLS = ("per-image", "official-rect")
DEFAULT_PROTOCOL = PROTOCOLS[0]


DEFAULT_IMGSZ = 640  # when neither the command line nor the weights' sidecar gives one


def resolve_eval_options(
    weights: str | Path, imgsz: int | None = None, single_cls: bool | None = None
) -> tuple[int, bool, str]:
    """``(imgsz, single_cls, note)`` for evaluating or predicting with ``weights``: what the
    caller gives, else what the weights' sidecar records (its ``imgsz``, and
    ``meta.train_args.single_cls``), else 640 px and multi-class. ``note`` says which was used."""
    from yoloattn.engine.backend import eval_defaults, is_onnx
    from yoloattn.models.weights import read_sidecar

    side = eval_defaults(weights) if is_onnx(weights) else read_sidecar(weights)
    side_imgsz = side.get("imgsz")
    train_args = (side.get("meta") or {}).get("train_args") or {}
    side_single = train_args.get("single_cls")
    if imgsz is not None:
        sz, src = int(imgsz), "command line"
        if side_imgsz and int(side_imgsz) != sz:
            src += f"; the weights were trained at {int(side_imgsz)}"
    elif side_imgsz:
        sz, src = int(side_imgsz), "weights sidecar"
    else:
        sz, src = DEFAULT_IMGSZ, "default; the weights record none"
    if single_cls is not None:
        sc, ssrc = bool(single_cls), "command line"
    elif side_single is not None:
        sc, ssrc = bool(side_single), "weights sidecar"
    else:
        sc, ssrc = False, "default"
    return sz, sc, f"imgsz {sz} ({src}), single-cls {sc} ({ssrc})"


def protocol_loader(
    sources: Any,
    imgsz: int,
    batch: int,
    stride: int,
    protocol: str = DEFAULT_PROTOCOL,
    *,
    workers: int = 0,
    seed: int = 0,
    cache_dir: str | None = None,
    nc: int | None = None,
    single_cls: bool = False,
    cache_images: bool = False,
    prefix: str = "val: ",
) -> tuple[Any, Any]:
    """``(dataset, loader)`` of validation images ``sources`` in the geometry of ``protocol``
    (module docstring): the one place where the trainer's per-epoch validation, ``compare``
    and ``yoloattn val`` get their batches. ``batch`` is an upper bound under ``per-image``."""
    from yoloattn.data import YoloDataset, build_dataloader

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown validation protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    per_image = protocol == "per-image"
    ds = YoloDataset(
        sources,
        imgsz=imgsz,
        augment=False,
        hyp=None,  # no augmentation
        rect=True,
        batch_size=batch,
        stride=stride,
        pad=0.0 if per_image else 0.5,
        seed=seed,
        cache_dir=cache_dir,
        prefix=prefix,
        nc=nc,
        cache_images=cache_images,
        single_cls=single_cls,
        per_image=per_image,
    )
    return ds, build_dataloader(ds, batch, shuffle=False, workers=workers, seed=seed)
