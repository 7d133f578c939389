"""Shared ONNX round-trip check for the attention tests (a helper module, not a test file).

``tests/`` has no ``__init__.py``, so pytest puts each test file's folder on ``sys.path`` and
the attention tests import this as ``from onnx_check import assert_onnx_matches``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import pytest
import torch
from torch import nn


def assert_onnx_matches(
    module: nn.Module,
    channels: int,
    export_size: tuple[int, int],
    sizes: Sequence[tuple[int, int]],
    *,
    atol: float = 0.0,
    rtol_scale: float = 1e-4,
    input_scale: float = 1.0,
    label: str = "",
    opset: int = 17,
) -> None:
    """Export ``module`` to ONNX and check onnxruntime agrees with PyTorch at every size.

    The export uses the legacy TorchScript exporter (``dynamo=False``), ``opset`` (17), one input
    ``x`` and one output ``y`` with dynamic axes ``n`` (batch), ``h`` and ``w``; the traced
    input is ``torch.randn(1, channels, *export_size)``. For each ``(h, w)`` in ``sizes`` a
    batch ``torch.randn(2, channels, h, w) * input_scale`` is run through both the module and an
    onnxruntime CPU session; the outputs must have the same shape and satisfy

        ``max|onnx - torch| < atol + rtol_scale * max(1, max|torch|)``.

    Random numbers come from torch's global generator in that order (export input first), so a
    caller that seeds it gets the same inputs as before this helper existed. Skips the test when
    onnxruntime is not installed.
    """
    ort = pytest.importorskip("onnxruntime")
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.randn(1, channels, *export_size),),
            f,
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
        )
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    prefix = f"{label}: " if label else ""
    for h, w in sizes:
        x = torch.randn(2, channels, h, w) * input_scale
        with torch.no_grad():
            ref = module(x).numpy()
        out = sess.run(None, {"x": x.numpy()})[0]
        assert out.shape == ref.shape, (
            f"{prefix}ONNX output shape {out.shape} != torch {ref.shape} at {h}x{w}"
        )
        err = float(abs(out - ref).max())
        bound = atol + rtol_scale * max(1.0, float(abs(ref).max()))
        assert err < bound, f"{prefix}ONNX mismatch at {h}x{w}: max error {err:.3g} >= {bound:.3g}"
