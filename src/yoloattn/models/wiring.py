"""The miswire check: rows that still build but are wired wrong.

A row inserted into a config by hand shifts every later row index by one, and the absolute
``from`` indices (Concat inputs, the Detect inputs) then point one row too early. Such a network
often still builds and trains, silently: in yolov5n with a row inserted after row 8 and nothing
renumbered, the Detect row reads the three Concat rows instead of the C3 rows after them, and
the last C3 computes a result nobody reads. The parser therefore rejects, after resolving every
row (:func:`check_wiring`):

* a row whose output no later row reads (the last row, the network output, excepted; rows read
  by the Detect row count as read);
* a detection head input that is not a feature row (a Concat or a pass-through row such as
  Upsample or MaxPool), or detection head inputs whose strides do not strictly increase
  (level ``k`` of the anchors is for the ``k``-th smallest stride: 8, 16, 32 for P5 models).

Research configs that mean it set the model-level key ``allow_unused_rows: true`` (or pass
``build_model(..., allow_unused_rows=True)``) to skip the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from yoloattn.models.config import ConfigError

__all__ = ["WiringError", "WiredRow", "unused_rows", "head_input_problem", "check_wiring"]

#: Row kinds that only route or resample features: never a detection head input.
NOT_FEATURE_KINDS = ("concat", "passthrough")

_HOW_TO_FIX = (
    "Row indices after an inserted row shift by one, so a row inserted by hand needs every later "
    "'from' (Concat and Detect inputs too) renumbered: place attention with the model-level "
    "`attention:` key (e.g. attention: cbam@neck, or a list of {after: ROW, module: KEY}) or write "
    "the renumbered config with `yoloattn info <model> --attention ... --save out.yaml`; set "
    "allow_unused_rows: true to skip this check"
)


class WiringError(ConfigError):
    """A config whose rows build but are miswired (:func:`check_wiring`)."""


class WiredRow(Protocol):
    """What the check reads of a resolved row (:class:`yoloattn.models.rows.Row` has it)."""

    index: int
    from_: Any
    name: str
    kind: str
    stride: float | None


def _absolute(row: WiredRow) -> list[int]:
    fs = row.from_ if isinstance(row.from_, list) else [row.from_]
    return [row.index + j if j < 0 else j for j in fs if not (row.index == 0 and j == -1)]


def unused_rows(rows: Sequence[WiredRow]) -> list[int]:
    """Rows (but the last) whose output no later row reads."""
    read = {a for r in rows for a in _absolute(r)}
    return [r.index for r in rows[:-1] if r.index not in read and r.kind != "head"]


def _stride(s: float | None) -> str:
    return "?" if s is None else f"{s:g}"


def head_input_problem(rows: Sequence[WiredRow], head: WiredRow) -> str | None:
    """Why the detection head ``head`` reads the wrong rows, or None."""
    srcs = [rows[a] for a in _absolute(head)]
    bad = [r for r in srcs if r.kind in NOT_FEATURE_KINDS]
    strides = [r.stride for r in srcs]
    known = [s for s in strides if s is not None]
    increasing = all(b > a for a, b in zip(known, known[1:]))
    if not bad and increasing:
        return None
    reads = ", ".join(f"{r.index} ({r.name}, stride {_stride(r.stride)})" for r in srcs)
    if bad:
        which = ", ".join(str(r.index) for r in bad)
        kinds = "/".join(sorted({r.name for r in bad}))
        which = ("rows " if len(bad) > 1 else "row ") + which
        why = f"{which} ({kinds}) only route features; the head reads feature rows"
    else:
        why = "their strides do not strictly increase (one anchor level per stride: 8, 16, 32 for P5)"
    return f"{head.name} row {head.index} reads rows {reads}: {why}"


def check_wiring(rows: Sequence[WiredRow]) -> None:
    """Raise :class:`WiringError` (a ConfigError; one line naming the rows) when the resolved
    ``rows`` are miswired (module docstring)."""
    problems: list[str] = []
    unused = unused_rows(rows)
    if unused:
        names = ", ".join(f"{i} ({rows[i].name})" for i in unused)
        verb = "rows {} are" if len(unused) > 1 else "row {} is"
        problems.append(f"{verb.format(names)} read by no other row")
    for head in (r for r in rows if r.kind == "head"):
        p = head_input_problem(rows, head)
        if p is not None:
            problems.append(p)
        elif unused:
            problems.append(
                f"{head.name} row {head.index} reads rows "
                + ", ".join(f"{a} ({rows[a].name})" for a in _absolute(head))
            )
    if problems:
        raise WiringError(f"miswired rows: {'; '.join(problems)}. {_HOW_TO_FIX}")
