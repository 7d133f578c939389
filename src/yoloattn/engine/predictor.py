"""Prediction on images: letterbox, forward, NMS (predict defaults), boxes mapped to the original.

A bad source path or an unreadable image is reported and skipped; the rest continues.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from yoloattn.data.augment import letterbox
from yoloattn.data.boxes import scale_boxes, xyxy2xywhn
from yoloattn.engine.draw import draw_boxes
from yoloattn.engine.nms import PREDICT_NMS, non_max_suppression

LOGGER = logging.getLogger("yoloattn.predict")

IMG_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

__all__ = ["iter_sources", "input_stride", "load_image", "predict", "preprocess", "Prediction"]


@dataclass
class Prediction:
    path: Path
    boxes: torch.Tensor  # [n, 6] xyxy conf cls in original-image pixels
    shape: tuple[int, int]


def iter_sources(source: str) -> tuple[list[Path], list[str]]:
    """Image paths for a file, a folder or a glob; and a list of problems (missing paths...)."""
    problems: list[str] = []
    p = Path(source)
    if any(ch in source for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(source, recursive=True))
        if not files:
            problems.append(f"glob {source!r} matched no files")
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
    elif p.is_file():
        files = [p]
    else:
        problems.append(f"source {source!r} does not exist")
        files = []
    images = [f for f in files if f.suffix.lower() in IMG_SUFFIXES]
    skipped = len(files) - len(images)
    if skipped and p.is_dir():
        LOGGER.info("%d non-image files in %s ignored", skipped, source)
    elif skipped:
        problems.extend(f"{f}: not an image ({f.suffix or 'no suffix'})" for f in files if f not in images)
    return images, problems


def collect_sources(sources: list[str]) -> list[Path]:
    """Images of every ``--source`` (files, folders, globs); problems are printed as warnings.

    Raises FileNotFoundError when no image is found.
    """
    import sys

    paths: list[Path] = []
    for src in sources:
        p, problems = iter_sources(src)
        paths += p
        for msg in problems:
            print(f"warning: {msg}", file=sys.stderr)
    if not paths:
        raise FileNotFoundError("no images found in --source " + " ".join(sources))
    return paths


def load_image(path: Path) -> np.ndarray:
    """The image as an ``H x W x 3`` RGB array, EXIF orientation applied."""
    with Image.open(path) as f:
        im = ImageOps.exif_transpose(f)
        im.load()
        return np.asarray(im.convert("RGB"))


def input_stride(model: torch.nn.Module) -> int:
    """The multiple the input sides are padded to: the largest head stride, at least 32."""
    stride: torch.Tensor = model.stride  # type: ignore[assignment]
    return max(int(stride.max()), 32)


def preprocess(
    img0: np.ndarray,
    imgsz: int | tuple[int, int],
    stride: int,
    device: torch.device | str = "cpu",
    auto: bool = True,
) -> tuple[torch.Tensor, tuple[float, float], tuple[float, float]]:
    """Letterbox ``img0`` (minimal stride-aligned padding) into a ``1 x 3 x H x W`` float tensor.

    ``auto=False`` pads to exactly ``imgsz`` (an ``(h, w)`` tuple or a side) instead, for a model
    exported with a fixed input size. Returns the tensor, the ``(rw, rh)`` resize ratio and the
    ``(left, top)`` padding of :func:`yoloattn.data.augment.letterbox`, so a point maps as
    ``x' = x * rw + left``.
    """
    img, ratio, pad = letterbox(img0, imgsz, auto=auto, stride=stride)
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(device).float()[None] / 255.0
    return x, ratio, pad


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    paths: list[Path],
    *,
    imgsz: int = 640,
    conf: float = PREDICT_NMS["conf_thres"],
    iou: float = PREDICT_NMS["iou_thres"],
    max_det: int = PREDICT_NMS["max_det"],
    device: torch.device | str = "cpu",
) -> Iterator[Prediction | tuple[Path, str]]:
    """Yield a :class:`Prediction` per readable image, or ``(path, error)`` for a bad one.

    ``model`` is a PyTorch detector or an :class:`~yoloattn.engine.backend.OnnxModel`; an export
    with a fixed input size (``fixed_shape``) gets every image letterboxed to that size.
    """
    device = torch.device(device)
    model.eval()
    stride = input_stride(model)
    fixed: tuple[int, int] | None = getattr(model, "fixed_shape", None)
    for path in paths:
        try:
            img0 = load_image(path)
        except Exception as e:  # unreadable, truncated, not an image
            yield path, f"cannot read image: {e}"
            continue
        x, _, _ = preprocess(img0, fixed or imgsz, stride, device, auto=fixed is None)
        out = model(x)[0]
        det = non_max_suppression(out, conf, iou, max_det=max_det)[0]
        det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], img0.shape[:2], official=True)
        yield Prediction(path, det.cpu(), img0.shape[:2])


def save_prediction(
    pred: Prediction, names: list[str], out_dir: Path, save_txt: bool, image: Image.Image | None = None
) -> Path:
    """Save the image with its boxes (on ``image`` instead of the original when given, e.g. a
    heatmap overlay of the same size) and, with ``save_txt``, the YOLO-format labels."""
    if image is None:
        with Image.open(pred.path) as f:
            im = ImageOps.exif_transpose(f).convert("RGB")
    else:
        im = image
    out = out_dir / pred.path.name
    draw_boxes(im, pred.boxes.tolist(), names).save(out)
    if save_txt:
        (out_dir / "labels").mkdir(exist_ok=True)
        h, w = pred.shape
        rows = []
        for x1, y1, x2, y2, c_, cls in pred.boxes.tolist():
            xywh = xyxy2xywhn(np.array([[x1, y1, x2, y2]], dtype=np.float64), w=w, h=h)[0]
            rows.append(f"{int(cls)} {xywh[0]:.6f} {xywh[1]:.6f} {xywh[2]:.6f} {xywh[3]:.6f} {c_:.5f}")
        (out_dir / "labels" / f"{pred.path.stem}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    return out


def to_json(pred: Prediction, names: list[str]) -> list[dict]:
    return [
        {
            "file": str(pred.path),
            "class": int(c),
            "name": names[int(c)] if int(c) < len(names) else str(int(c)),
            "score": round(s, 5),
            "box_xyxy": [round(v, 2) for v in (x1, y1, x2, y2)],
        }
        for x1, y1, x2, y2, s, c in pred.boxes.tolist()
    ]


def dump_json(items: list[dict], path: Path) -> None:
    path.write_text(json.dumps(items, indent=1))
