"""One image explained: attention-row maps and the detection heatmap from a single forward pass,
mapped back to the original image, rendered and saved.

>>> exp = explain_image(model, load_image(path), imgsz=320)        # doctest: +SKIP
>>> save_explanation(exp, load_image(path), model.names, out_dir)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from yoloattn.attention import AttentionMap
from yoloattn.data.boxes import scale_boxes
from yoloattn.engine.draw import draw_boxes
from yoloattn.engine.explain.cam import CamResult, explain_detections
from yoloattn.engine.explain.render import caption, channel_strip, grid, normalise, overlay, to_image
from yoloattn.engine.explain.rows import AttentionRow, attention_rows, capture_rows
from yoloattn.engine.nms import PREDICT_NMS
from yoloattn.engine.predictor import input_stride, preprocess

__all__ = [
    "Explanation",
    "RowView",
    "explain_image",
    "explanation_record",
    "panel_captions",
    "render_explanation",
    "save_explanation",
]


@dataclass
class RowView:
    """The map of one attention row on one image.

    ``image`` is the map on the original image (``H0 x W0``, float32, in the map's own units):
    the values for spatial and positions maps, the channel ``emphasis`` for channel maps.
    """

    row: AttentionRow
    map: AttentionMap
    image: np.ndarray


@dataclass
class Explanation:
    """Everything :func:`explain_image` found for one image.

    Attributes:
        shape: ``(H0, W0)`` of the original image.
        detections: ``(n, 6)`` ``x1 y1 x2 y2 conf cls`` in original-image pixels.
        heatmap: ``H0 x W0`` detection heatmap in ``[0, 1]``.
        cam: the heatmaps at the network-input resolution (:class:`CamResult`).
        rows: one :class:`RowView` per attention row.
        input_hw: the letterboxed network-input size.
    """

    shape: tuple[int, int]
    detections: torch.Tensor
    heatmap: np.ndarray
    cam: CamResult
    rows: list[RowView] = field(default_factory=list)
    input_hw: tuple[int, int] = (0, 0)


def explain_image(
    model: nn.Module,
    img0: np.ndarray,
    *,
    imgsz: int = 640,
    rows: Iterable[int] | None = None,
    method: str = "layercam",
    target: str = "detection",
    layers: Sequence[int] | None = None,
    conf: float = PREDICT_NMS["conf_thres"],
    iou: float = PREDICT_NMS["iou_thres"],
    max_det: int = PREDICT_NMS["max_det"],
    device: torch.device | str | None = None,
) -> Explanation:
    """Explain one RGB image ``img0`` (``H0 x W0 x 3`` uint8): letterbox to ``imgsz``, one forward
    pass recording the attention rows (all, or ``rows``; ``[]`` for none) and the detection
    heatmap (:func:`~yoloattn.engine.explain.cam.explain_detections`), mapped back to ``img0``."""
    model.eval()
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else "cpu"
    x, ratio, pad = preprocess(img0, imgsz, input_stride(model), device)
    hw0 = (int(img0.shape[0]), int(img0.shape[1]))
    input_hw = (int(x.shape[2]), int(x.shape[3]))
    found = attention_rows(model, rows)
    with capture_rows(model, list(found)) as maps:
        cam = explain_detections(
            model, x, method=method, target=target, layers=layers, conf=conf, iou=iou, max_det=max_det
        )
    views = []
    for i, r in found.items():
        amap = maps.get(i)
        spatial = amap.spatial() if amap is not None else None
        if amap is None or spatial is None:
            continue
        views.append(RowView(r, amap, to_image(spatial[0], input_hw, ratio, pad, hw0)))
    det = cam.detections.clone()
    if len(det):
        det[:, :4] = scale_boxes(input_hw, det[:, :4], hw0, official=True)
    heat = np.clip(to_image(cam.heatmap, input_hw, ratio, pad, hw0), 0.0, 1.0)
    return Explanation(hw0, det.cpu(), heat, cam, views, input_hw)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _row_caption(v: RowView) -> str:
    m = v.map
    vals = m.values[0]
    what = {"spatial": "spatial map", "channel": "channel weights", "positions": "attention received"}[m.kind]
    text = f"row {v.row.index} {v.row.key}: {what} ({m.source})"
    rng = f"values {_fmt(float(vals.min()))}..{_fmt(float(vals.max()))}"
    if m.kind == "channel":
        rng += " (strip); overlay: emphasis"
    if v.row.gate is not None:
        g = v.row.gate
        rng += f"; gate {_fmt(g[0])}" if len(g) == 1 else f"; gate mean {_fmt(float(np.mean(g)))}"
    return f"{text}\n{rng}"


def _key(v: RowView) -> str:
    return f"row{v.row.index}_{v.row.key}"


def panel_captions(exp: Explanation) -> dict[str, str]:
    """The caption of each panel of :func:`render_explanation` (``"cam"``, ``"row<i>_<key>"``)."""
    cam = exp.cam
    on = f"on rows {', '.join(map(str, cam.layers))}"
    title = f"LayerCAM per {cam.target} {on}" if cam.method == "layercam" else f"EigenCAM {on}"
    if len(exp.detections):
        found = f"{len(exp.detections)} detection(s)"
    elif cam.method == "layercam" and cam.labels:
        found = f"no detection; map of the {cam.labels[0]}"
    else:
        found = "no detection"
    return {"cam": f"{title}\n{found}", **{_key(v): _row_caption(v) for v in exp.rows}}


def _bare(im: Image.Image, _text: str, below: Image.Image | None = None) -> Image.Image:
    """A panel without its caption (the channel strip, if any, still below it)."""
    return im if below is None else grid([im, below], columns=1, width=im.width)


def render_explanation(
    exp: Explanation, img0: np.ndarray, names: Sequence[str], captions: bool = True
) -> dict[str, Image.Image]:
    """Panels of one explanation: ``"cam"`` (heatmap + boxes), ``"row<i>_<key>"`` per attention
    row, and ``"summary"`` (all panels tiled). ``captions=False``: the panels without their title
    strips (:func:`panel_captions` has the texts) and without ``"summary"``."""
    text = panel_captions(exp)
    label = caption if captions else _bare
    boxes = exp.detections.tolist()
    panels = {"cam": label(draw_boxes(overlay(img0, exp.heatmap), boxes, list(names)), text["cam"])}
    for v in exp.rows:
        mode = "max" if v.map.kind == "positions" else "minmax"
        im = overlay(img0, normalise(v.image, mode))
        below = channel_strip(v.map.values[0], im.width) if v.map.kind == "channel" else None
        panels[_key(v)] = label(im, text[_key(v)], below)
    if captions:
        panels["summary"] = grid(list(panels.values()))
    return panels


def save_explanation(
    exp: Explanation, img0: np.ndarray, names: Sequence[str], out_dir: Path, stem: str
) -> list[Path]:
    """Write ``<stem>_cam.png``, ``<stem>_row<i>_<key>.png`` and ``<stem>_summary.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, im in render_explanation(exp, img0, names).items():
        p = out_dir / f"{stem}_{name}.png"
        im.save(p)
        paths.append(p)
    return paths


def explanation_record(exp: Explanation, names: Sequence[str]) -> dict[str, Any]:
    """JSON-ready summary: detections and per-row map statistics."""

    def stats(t: torch.Tensor) -> dict[str, float]:
        return {"min": float(t.min()), "max": float(t.max()), "mean": float(t.mean())}

    return {
        "shape": list(exp.shape),
        "input": list(exp.input_hw),
        "method": exp.cam.method,
        "target": exp.cam.target,
        "layers": exp.cam.layers,
        "detections": [
            {
                "class": int(c),
                "name": names[int(c)] if int(c) < len(names) else str(int(c)),
                "score": round(s, 5),
                "box_xyxy": [round(b, 2) for b in (x1, y1, x2, y2)],
            }
            for x1, y1, x2, y2, s, c in exp.detections.tolist()
        ],
        "rows": [
            {
                "row": v.row.index,
                "key": v.row.key,
                "kind": v.map.kind,
                "source": v.map.source,
                "gate": list(v.row.gate) if v.row.gate is not None else None,
                **stats(v.map.values[0]),
            }
            for v in exp.rows
        ],
    }
