"""ONNX Runtime backend: an exported ``.onnx`` file as a model-like module for val and predict.

:class:`OnnxModel` is an ``nn.Module`` whose ``forward(images)`` returns what a PyTorch
detector returns in eval mode, ``(decoded [N, A, 5 + nc], levels)`` (``levels`` is empty: the
raw head maps are not exported), and which carries ``names``, ``nc`` and ``stride``. So
:func:`yoloattn.engine.evaluator.evaluate` and :func:`yoloattn.engine.predictor.predict` run
it with the same letterbox, NMS and box mapping as PyTorch weights. :func:`load_weights` picks
the backend from the file suffix.

This module also owns the metadata format of an export (:data:`META_KEYS`, written by
:mod:`yoloattn.engine.export`, read by :func:`read_metadata`). onnx and onnxruntime are the
optional ``export`` extra (``pip install yoloattn[export]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "META_FORMAT",
    "META_KEYS",
    "OnnxModel",
    "is_onnx",
    "load_weights",
    "parse_metadata",
    "read_metadata",
]

#: Value of the ``format`` metadata key; a ``.onnx`` file without it is not ours.
META_FORMAT = "yoloattn-onnx"
#: Metadata keys written into every exported file, and what they hold.
META_KEYS: dict[str, str] = {
    "format": f"{META_FORMAT!r}, marks the file as a yoloattn export",
    "format_version": "1",
    "model": "model name (e.g. yolov5n)",
    "names": "JSON list of the class names",
    "nc": "number of classes",
    "stride": "JSON list of the head strides, e.g. [8.0, 16.0, 32.0]",
    "imgsz": "JSON [h, w]: the input size traced (the only size accepted unless dynamic)",
    "batch": "the batch size traced (the only batch accepted unless dynamic)",
    "dynamic": "'true' if batch, height and width are dynamic axes",
    "train_imgsz": "the training image size from the weights' sidecar ('' if unknown)",
    "single_cls": "'true' if trained with --single-cls",
    "attention": "JSON list of the attention rows: {row, key, hyper, insert, gate}",
    "attention_spec": "the --attention placement spec of training ('' if none recorded)",
    "opset": "ONNX opset",
    "nms": "JSON {conf, iou, max_det} when NMS is in the graph, else 'null'",
    "output": "the output layout: 'raw [N,A,5+nc] cx,cy,w,h,obj,cls...' or 'nms [K,7] ...'",
    "yoloattn_version": "version of yoloattn that exported",
}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The yoloattn metadata of an exported ``.onnx`` file, JSON values decoded.

    Raises ValueError when the file has none (not exported by ``yoloattn export``).
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX file not found: {p}")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise ValueError(f"{p}: not a readable ONNX file ({e})") from None
    return parse_metadata({e.key: e.value for e in proto.metadata_props}, str(p))


def parse_metadata(props: dict[str, str], source: str = "model") -> dict[str, Any]:
    """Decode the string metadata map of an export (see :data:`META_KEYS`)."""
    if props.get("format") != META_FORMAT:
        raise ValueError(
            f"{source} has no yoloattn metadata (names, stride, imgsz); it was not written by "
            f"`yoloattn export`. Re-export it: yoloattn export --weights WEIGHTS.safetensors"
        )
    out: dict[str, Any] = {}
    for k, v in props.items():
        if k in ("names", "stride", "imgsz", "attention", "nms"):
            out[k] = json.loads(v)
        elif k in ("nc", "batch", "opset", "format_version"):
            out[k] = int(v)
        elif k in ("dynamic", "single_cls"):
            out[k] = v == "true"
        elif k == "train_imgsz":
            out[k] = int(v) if v else None
        else:
            out[k] = v
    return out


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("running an .onnx file needs onnxruntime: pip install 'yoloattn[export]'") from None
    return onnxruntime


class OnnxModel(nn.Module):
    """An exported detector run by onnxruntime, called like the PyTorch model in eval mode.

    Args:
        path: ``.onnx`` file written by ``yoloattn export`` without ``--nms``.
        device: ``cuda`` uses the CUDA provider when onnxruntime has it (else a warning and the
            CPU); anything else the CPU provider. Outputs come back on ``device``.
        threads: intra-op threads of the CPU provider (default: ``torch.get_num_threads()``, so
            ``--threads`` and ``OMP_NUM_THREADS`` act as for PyTorch).
    """

    stride: Tensor

    def __init__(
        self, path: str | Path, device: torch.device | str = "cpu", threads: int | None = None
    ) -> None:
        super().__init__()
        ort = _import_ort()
        self.path = Path(path)
        self.meta = read_metadata(self.path)
        if self.meta.get("nms"):
            raise ValueError(
                f"{self.path} was exported with --nms (final boxes, fixed thresholds); val and predict "
                "apply their own NMS: export again without --nms"
            )
        self.device = torch.device(device)
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                import logging

                logging.getLogger("yoloattn.backend").warning(
                    "onnxruntime has no CUDA provider (pip install onnxruntime-gpu); running on the CPU"
                )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.names: list[str] = [str(n) for n in self.meta["names"]]
        self.nc = int(self.meta["nc"])
        self.yaml_file = str(self.meta.get("model") or self.path.stem)
        self.dynamic = bool(self.meta.get("dynamic"))
        self.imgsz: tuple[int, int] = tuple(int(v) for v in self.meta["imgsz"])  # type: ignore[assignment]
        self.batch = int(self.meta.get("batch") or 1)
        self.register_buffer(
            "stride", torch.tensor(self.meta["stride"], dtype=torch.float32), persistent=False
        )

    @property
    def fixed_shape(self) -> tuple[int, int] | None:
        """The only input ``(H, W)`` accepted (None when the export has dynamic axes)."""
        return None if self.dynamic else self.imgsz

    def _run(self, x: Tensor) -> Tensor:
        out = self.session.run(None, {self.input_name: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        if not self.dynamic:
            if tuple(x.shape[2:]) != self.imgsz:
                raise ValueError(
                    f"{self.path} was exported for {self.imgsz[0]}x{self.imgsz[1]} inputs only, got "
                    f"{x.shape[2]}x{x.shape[3]}: export with --dynamic (val and predict pad each image "
                    "to its own stride multiple)"
                )
            if x.shape[0] != self.batch:
                if self.batch != 1:
                    raise ValueError(f"{self.path} was exported for batch {self.batch}, got {x.shape[0]}")
                return torch.cat([self._run(x[i : i + 1]) for i in range(x.shape[0])], 0), []
        return self._run(x), []

    def extra_repr(self) -> str:
        providers = ",".join(self.session.get_providers())
        return f"path={self.path}, providers={providers}, dynamic={self.dynamic}"


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """PyTorch weights (``.safetensors``) as the detector, an ``.onnx`` export as an
    :class:`OnnxModel`; both in eval mode, called the same way."""
    if is_onnx(path):
        return OnnxModel(path, device).eval()
    from yoloattn.models.weights import load_model

    return load_model(path, device=device)


def eval_defaults(path: str | Path) -> dict[str, Any]:
    """The sidecar entries val and predict read (``imgsz``, ``meta.train_args.single_cls``),
    for an ``.onnx`` export from its metadata."""
    meta = read_metadata(path)
    imgsz = meta.get("train_imgsz") or max(meta["imgsz"])
    return {"imgsz": imgsz, "meta": {"train_args": {"single_cls": bool(meta.get("single_cls"))}}}
