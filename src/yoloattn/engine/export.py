"""Export a detector to ONNX: the fused model, its metadata, and optionally NMS inside the graph.

``yoloattn export`` (:mod:`yoloattn.cli.export`) and :func:`export` write one ``.onnx`` file:

* **input** ``images``: ``float32 [N, 3, H, W]``, RGB, values in ``[0, 1]``, letterboxed as by
  :func:`yoloattn.engine.predictor.preprocess` (H and W multiples of the largest stride);
* **output** ``output0`` (default): ``float32 [N, A, 5 + nc]``, the decoded head output of the
  PyTorch model in eval mode: ``(cx, cy, w, h)`` in input pixels, objectness, ``nc`` class
  probabilities; ``A = na * sum(H_l * W_l)`` over the levels. NMS is left to the caller
  (:func:`yoloattn.engine.nms.non_max_suppression`, as for PyTorch weights);
* **output** ``detections`` (``--nms``): ``float32 [K, 7]``, one row per kept box over the whole
  batch: ``(batch_index, x1, y1, x2, y2, score, class)`` in input pixels, grouped by image and
  sorted by score within it. The graph runs the predict-mode NMS of
  :func:`~yoloattn.engine.nms.non_max_suppression` (best class per box, ``score = obj * cls``,
  class-aware through the class-offset trick) with the standard ``NonMaxSuppression`` operator;
  ``conf``, ``iou`` and ``max_det`` are fixed at export time (recorded in the metadata).

Metadata (ONNX ``metadata_props``, all values strings, JSON where noted): see
:data:`yoloattn.engine.backend.META_KEYS`, which also reads them back.
The attention rows are checked against the opset before exporting: a module whose registry
entry says it cannot export, or needs a higher opset (:attr:`AttentionInfo.onnx_opset`), stops
the export with an error naming the row and the opset that works.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from yoloattn._io import write_bytes_atomic
from yoloattn.engine.backend import META_FORMAT, META_KEYS
from yoloattn.engine.nms import PREDICT_NMS
from yoloattn.engine.train_config import option

LOGGER = logging.getLogger("yoloattn.export")

__all__ = [
    "DEFAULT_OPSET",
    "EXPORT",
    "FORMATS",
    "META_FORMAT",
    "META_KEYS",
    "MIN_OPSET",
    "NMSModel",
    "ExportConfig",
    "ExportError",
    "check_exportable",
    "export",
    "export_onnx",
]

#: Formats ``yoloattn export`` writes.
FORMATS = ("onnx",)
#: Default opset: every zoo module exports at it (the highest per-module minimum is 13).
DEFAULT_OPSET = 17
#: The lowest opset the detector itself needs (dynamic grids, ``NonMaxSuppression``).
MIN_OPSET = 11
#: Scope of the :class:`ExportConfig` fields that are ``yoloattn export`` options.
EXPORT = "export"


class ExportError(ValueError):
    """The model cannot be exported as asked (format, opset, shapes); the message says why."""


@dataclass
class ExportConfig:
    """Options of one export; ``yoloattn export`` generates its options from these fields."""

    weights: str = option("", scope=EXPORT, required=True, help="run folder or .safetensors file")
    format: str = option("onnx", scope=EXPORT, help=f"output format ({', '.join(FORMATS)})")
    imgsz: list[int] = option(
        scope=EXPORT,
        factory=list,
        nargs="+",
        metavar="PX",
        help="input size traced: one side or H W (default: the weights' training size, else 640)",
    )
    dynamic: bool = option(False, scope=EXPORT, help="dynamic batch, height and width axes")
    batch: int = option(1, scope=EXPORT, help="batch size traced (fixed unless --dynamic)")
    opset: int = option(DEFAULT_OPSET, scope=EXPORT, help=f"ONNX opset (>= {MIN_OPSET})")
    nms: bool = option(False, scope=EXPORT, help="NMS in the graph; outputs final boxes [K, 7]")
    conf: float = option(
        PREDICT_NMS["conf_thres"], scope=EXPORT, help="--nms: confidence threshold baked into the graph"
    )
    iou: float = option(PREDICT_NMS["iou_thres"], scope=EXPORT, help="--nms: NMS IoU threshold")
    max_det: int = option(PREDICT_NMS["max_det"], scope=EXPORT, help="--nms: most boxes per image")
    output: str | None = option(
        None,
        scope=EXPORT,
        flag=("-o", "--output"),
        help="output file (default: the weights file with the suffix .onnx)",
    )


# ------------------------------------------------------------------------------ checks


def attention_rows(model: nn.Module) -> list[dict[str, Any]]:
    """``{row, key, hyper, insert, gate}`` of every attention row of ``model``."""
    rows = getattr(model, "rows", None) or []
    return [
        {"row": r.index, "key": r.name, "hyper": dict(r.kwargs), "insert": r.insert, "gate": r.gate}
        for r in rows
        if r.kind == "attention"
    ]


def check_exportable(model: nn.Module, opset: int) -> None:
    """Raise :class:`ExportError` if ``opset`` is out of range or an attention row of ``model``
    cannot export at it (registry metadata); the message names the row and the opset that works."""
    from yoloattn.attention import get_attention_info

    max_opset = _max_opset()
    if not MIN_OPSET <= opset <= max_opset:
        raise ExportError(
            f"--opset {opset} is not supported: the detector needs opset {MIN_OPSET} to {max_opset} "
            f"(default {DEFAULT_OPSET})"
        )
    problems, need = [], opset
    for r in attention_rows(model):
        info = get_attention_info(r["key"])
        if not info.onnx:
            problems.append(f"row {r['row']} ({r['key']}) cannot be exported to ONNX: {info.onnx_note}")
        elif info.onnx_opset > opset:
            need = max(need, info.onnx_opset)
            problems.append(
                f"row {r['row']} ({r['key']}) needs opset >= {info.onnx_opset}, got --opset {opset}"
            )
    if problems:
        hint = f"; export with --opset {need}" if need > opset and all("needs" in p for p in problems) else ""
        raise ExportError("; ".join(problems) + hint)


def _max_opset() -> int:
    """The highest opset of the TorchScript exporter and of onnxruntime (when installed)."""
    from torch.onnx import _constants

    top = int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    try:
        import onnx

        top = min(top, int(onnx.defs.onnx_opset_version()))
    except ImportError:
        pass
    return top


# ------------------------------------------------------------------------------ NMS in the graph


class _OnnxNMS(torch.autograd.Function):
    """``NonMaxSuppression`` of ONNX: ``selected [K, 3]`` int64 ``(batch, class, box)``.

    The eager forward computes the same selection with torchvision (so the wrapper also runs in
    PyTorch, and tracing sees real data); the symbolic emits the standard operator.
    """

    @staticmethod
    def forward(ctx: Any, boxes: Tensor, scores: Tensor, max_det: int, iou: float, conf: float) -> Tensor:
        import torchvision

        out = []
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                s = scores[b, c]
                cand = (s > conf).nonzero().flatten()
                keep = cand[torchvision.ops.nms(boxes[b, cand], s[cand], iou)][:max_det]
                bc = torch.tensor([b, c], dtype=torch.int64, device=boxes.device).expand(len(keep), 2)
                out.append(torch.cat((bc, keep[:, None].to(torch.int64)), 1))
        return torch.cat(out, 0) if out else torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, max_det: int, iou: float, conf: float) -> Any:
        max_out = g.op("Constant", value_t=torch.tensor([max_det], dtype=torch.int64))
        iou_t = g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32))
        conf_t = g.op("Constant", value_t=torch.tensor([conf], dtype=torch.float32))
        return g.op("NonMaxSuppression", boxes, scores, max_out, iou_t, conf_t, center_point_box_i=0)


class NMSModel(nn.Module):
    """``model`` followed by predict-mode NMS: ``images -> detections [K, 7]``.

    Rows ``(batch_index, x1, y1, x2, y2, score, class)``: the best class of each box, its score
    ``obj * cls`` (candidates need ``obj > conf`` and ``score > conf``), class-aware NMS through
    the class-offset trick with ``max_wh`` (as :func:`~yoloattn.engine.nms.non_max_suppression`
    with ``multi_label=False``), at most ``max_det`` boxes per image.
    """

    def __init__(self, model: nn.Module, conf: float, iou: float, max_det: int, max_wh: int = 7680) -> None:
        super().__init__()
        self.model = model
        self.conf, self.iou, self.max_det, self.max_wh = float(conf), float(iou), int(max_det), int(max_wh)

    def forward(self, x: Tensor) -> Tensor:
        pred = self.model(x)[0]  # [N, A, 5 + nc]
        n, a = pred.shape[0], pred.shape[1]
        xy, wh = pred[..., :2], pred[..., 2:4]
        boxes = torch.cat((xy - wh / 2, xy + wh / 2), -1)
        obj = pred[..., 4:5]
        cls_scores = pred[..., 5:] * obj * (obj > self.conf).to(pred.dtype)
        score, cls = cls_scores.max(-1)  # [N, A]
        shifted = boxes + cls.unsqueeze(-1).to(pred.dtype) * self.max_wh
        sel = _OnnxNMS.apply(shifted, score.unsqueeze(1), self.max_det, self.iou, self.conf)
        flat = sel[:, 0] * a + sel[:, 2]
        det = torch.cat(
            (
                sel[:, :1].to(pred.dtype),
                boxes.reshape(n * a, 4).index_select(0, flat),
                score.reshape(n * a, 1).index_select(0, flat),
                cls.reshape(n * a, 1).index_select(0, flat).to(pred.dtype),
            ),
            1,
        )
        return det


class _RawModel(nn.Module):
    """The decoded output alone (the eval-mode model also returns the raw levels)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[0]


# ------------------------------------------------------------------------------ export


def _reset_grids(model: nn.Module) -> None:
    """Drop the heads' cached grids so the trace computes them from the input size."""
    for m in model.modules():
        grids = getattr(m, "_grids", None)
        if isinstance(grids, list):
            m._grids = [None] * len(grids)  # type: ignore[assignment]


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    imgsz: tuple[int, int] = (640, 640),
    batch: int = 1,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    nms: dict[str, float] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Export ``model`` (a :class:`~yoloattn.models.detector.Model`; a fused copy is exported,
    ``model`` is left as it is) to ``path``; returns the path.

    ``nms``: ``{"conf", "iou", "max_det"}`` puts NMS in the graph. ``metadata``: extra keys
    (string values; others are JSON-encoded) on top of the ones taken from the model.
    """
    import onnx

    from yoloattn import __version__

    check_exportable(model, opset)
    h, w = imgsz
    stride = max(int(getattr(model, "stride", torch.tensor([32.0])).max()), 32)
    if h % stride or w % stride:
        raise ExportError(f"--imgsz {h} {w} must be multiples of the model's largest stride {stride}")
    if batch < 1:
        raise ExportError(f"--batch {batch} must be >= 1")
    m = copy.deepcopy(model).float().cpu().eval()
    fuse = getattr(m, "fuse", None)
    if callable(fuse):
        fuse()
    _reset_grids(m)
    wrapped: nn.Module = (
        NMSModel(m, nms["conf"], nms["iou"], int(nms["max_det"])) if nms is not None else _RawModel(m)
    )
    out_name = "detections" if nms is not None else "output0"
    dyn = None
    if dynamic:
        dyn = {"images": {0: "batch", 2: "height", 3: "width"}}
        dyn[out_name] = {0: "detections"} if nms is not None else {0: "batch", 1: "anchors"}
    x = torch.zeros(batch, 3, h, w)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapped,
                (x,),
                str(Path(tmp) / "model.onnx"),
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=[out_name],
                dynamic_axes=dyn,
                do_constant_folding=True,
            )
        except Exception as e:  # the exporter's errors are long; keep the first line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"ONNX export failed at opset {opset}: {first}") from e
        proto = onnx.load(str(Path(tmp) / "model.onnx"))
    names = list(getattr(model, "names", []))
    meta: dict[str, Any] = {
        "format": META_FORMAT,
        "format_version": "1",
        "model": str(getattr(model, "yaml_file", "") or ""),
        "names": names,
        "nc": int(getattr(model, "nc", len(names))),
        "stride": [float(s) for s in getattr(model, "stride", torch.tensor([32.0])).tolist()],
        "imgsz": [h, w],
        "batch": batch,
        "dynamic": "true" if dynamic else "false",
        "train_imgsz": "",
        "single_cls": "false",
        "attention": attention_rows(model),
        "attention_spec": "",
        "opset": opset,
        "nms": nms,
        "output": (
            "nms [K,7] batch_index,x1,y1,x2,y2,score,class (input pixels)"
            if nms is not None
            else "raw [N,A,5+nc] cx,cy,w,h,obj,cls_1..cls_nc (input pixels, probabilities)"
        ),
        "yoloattn_version": __version__,
    }
    meta.update(metadata or {})
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key = k
        entry.value = v if isinstance(v, str) else json.dumps(v)
    proto.producer_name = "yoloattn"
    proto.producer_version = __version__
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, proto.SerializeToString())
    return path


def default_output(weights: Path) -> Path:
    """``best.safetensors`` -> ``best.onnx`` next to it."""
    return weights.with_suffix(".onnx")


def export(cfg: ExportConfig) -> Path:
    """Export ``cfg.weights`` as ``cfg`` says; returns the written file."""
    from yoloattn.engine.evaluator import resolve_weights
    from yoloattn.models.weights import load_model, read_sidecar

    if not cfg.weights:
        raise ExportError("--weights is required: a run folder or a .safetensors file")
    if cfg.format.lower() not in FORMATS:
        raise ExportError(f"unknown export format {cfg.format!r}; supported: {', '.join(FORMATS)}")
    wpath = resolve_weights(cfg.weights)
    if wpath.suffix == ".onnx":
        raise ExportError(f"{wpath} is already an ONNX file; pass the .safetensors weights")
    side = read_sidecar(wpath)
    train_args = (side.get("meta") or {}).get("train_args") or {}
    if len(cfg.imgsz) > 2:
        raise ExportError(f"--imgsz takes one or two values (H W), got {cfg.imgsz}")
    if cfg.imgsz:
        h, w = (cfg.imgsz * 2)[:2]
    else:
        h = w = int(side.get("imgsz") or 640)
    model = load_model(wpath)
    nms = {"conf": cfg.conf, "iou": cfg.iou, "max_det": cfg.max_det} if cfg.nms else None
    out = Path(cfg.output) if cfg.output else default_output(wpath)
    meta = {
        "train_imgsz": str(side.get("imgsz") or ""),
        "single_cls": "true" if train_args.get("single_cls") else "false",
        "attention_spec": str(train_args.get("attention") or ""),
    }
    if side.get("model_name"):
        meta["model"] = str(side["model_name"])
    return export_onnx(
        model,
        out,
        imgsz=(int(h), int(w)),
        batch=cfg.batch,
        dynamic=cfg.dynamic,
        opset=cfg.opset,
        nms=nms,
        metadata=meta,
    )
