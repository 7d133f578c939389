"""Checks of a ``.safetensors`` file before its tensors are read: one-line errors naming the file.

The format (https://github.com/huggingface/safetensors): 8 bytes, the little-endian length N of
a JSON header, the header (``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
{...}}``), then the data. A zero-byte, truncated or over-long-header file, or a tensor whose
bytes do not fit its dtype and shape or lie past the end of the file, is refused by
:func:`read_header` with a ``ValueError`` naming the file (the safetensors library would raise
its own error type, which the command line would show as a traceback).

:func:`check_against` compares the header with the state dict of the model its sidecar
describes: a tensor whose dtype kind (floating point or integer) or shape differs is named (a
header edited from ``F32`` to ``I32`` keeps the file's length and would otherwise load as
garbage). :func:`non_finite` lists tensors holding NaN or infinity.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["DTYPE_BYTES", "MAX_HEADER_BYTES", "check_against", "non_finite", "read_header"]

#: bytes per element of each safetensors dtype
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_FLOAT = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}
MAX_HEADER_BYTES = 100 * 2**20  # as the safetensors library


def read_header(path: str | Path) -> dict[str, Any]:
    """The checked JSON header of ``path`` (tensor entries and ``__metadata__``)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if size < 8 or len(head) < 8:
                raise ValueError(
                    f"{path}: {size} bytes, too short for a safetensors file (empty or truncated)"
                )
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(
                    f"{path}: header length {n:,} bytes is longer than the file ({size:,} bytes) or the "
                    f"{MAX_HEADER_BYTES // 2**20} MB limit: truncated, or not a safetensors file"
                )
            raw = f.read(n)
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path}: the safetensors header is not valid JSON (damaged file?)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header is not a JSON object (damaged file?)")
    data_bytes = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: '__metadata__' in the header is not a JSON object")
            continue
        _check_entry(path, str(name), entry, data_bytes)
    return header


def _check_entry(path: Path, name: str, entry: Any, data_bytes: int) -> None:
    bad = f"{path}: tensor {name[:80]!r}:"
    if not isinstance(entry, dict):
        raise ValueError(f"{bad} its header entry is not a JSON object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"{bad} unknown dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"{bad} shape {str(shape)[:60]} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise ValueError(f"{bad} data_offsets {str(offsets)[:60]} are not [begin, end]")
    begin, end = offsets
    numel = 1
    for d in shape:
        numel *= d
    if not 0 <= begin <= end or end - begin != numel * DTYPE_BYTES[dtype]:
        raise ValueError(f"{bad} {end - begin:,} data bytes do not fit dtype {dtype} and shape {shape}")
    if end > data_bytes:
        raise ValueError(
            f"{bad} its data ends at byte {end:,} but the file holds {data_bytes:,} data bytes (truncated?)"
        )


def check_against(
    path: str | Path, header: Mapping[str, Any], expected: Mapping[str, torch.Tensor], config: str
) -> None:
    """Refuse a tensor of ``header`` whose shape, or dtype kind (floating point or not), differs
    from the same-named tensor of ``expected`` (the state dict of the model ``config`` describes).
    Missing and unexpected names are left to ``load_state_dict``."""
    for name, t in expected.items():
        entry = header.get(name)
        if not isinstance(entry, dict):
            continue
        dtype, shape = entry["dtype"], list(entry["shape"])
        if (dtype in _FLOAT) != t.is_floating_point():
            raise ValueError(
                f"{path}: tensor {name!r} is {dtype} in the file, but {str(t.dtype).removeprefix('torch.')} "
                f"in the model {config} describes (edited or damaged header?)"
            )
        if shape != list(t.shape):
            raise ValueError(
                f"{path}: tensor {name!r} has shape {shape} in the file, {list(t.shape)} in the model "
                f"{config} describes"
            )


def non_finite(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
