"""One resolved row of a model config (:class:`Row`) and how it builds its module.

:mod:`yoloattn.models.parse` resolves the rows (one resolver per block kind) and re-exports
:class:`Row`; the detector builds its layers with :meth:`Row.build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from yoloattn.models.block_table import ActSpec
from yoloattn.models.config import ConfigError
from yoloattn.nn import Conv
from yoloattn.nn.gate import ResidualGate

__all__ = ["Row"]


@dataclass
class Row:
    """One resolved row.

    Attributes:
        index: row index (0-based, backbone then head).
        from_: the row's ``from`` as written.
        number: repeat count after depth scaling (for CSP blocks the count moved into args
            and the row itself is built once: ``repeats`` keeps it for display).
        name: canonical module name (a :data:`BLOCKS` key or an attention registry key).
        kind: BlockEntry kind, or ``attention``.
        args: constructor positional args (activations as :class:`ActSpec`).
        kwargs: constructor keyword args (attention hyperparameters).
        c1: input channels (a list for multi-input rows).
        c2: output channels.
        stride: output stride w.r.t. the network input (None when unknown).
        yaml_row: the row as written.
        where: ``backbone[k]`` or ``head[k]``.
        repeats: the depth-scaled repeat count (also for CSP blocks).
        cls: the block class (None for attention rows).
        head_strides: for a head row, the strides of its inputs.
        insert: for an attention row, its insertion mode (``plain`` or ``identity``).
        gate: the gate shape (``scalar``/``channel``) when the row is built gated, else None.
    """

    index: int
    from_: int | list[int]
    number: int
    name: str
    kind: str
    args: list[Any]
    kwargs: dict[str, Any]
    c1: int | list[int]
    c2: int
    stride: float | None
    yaml_row: list[Any]
    where: str
    repeats: int = 1
    cls: type[nn.Module] | None = field(default=None, repr=False)
    head_strides: list[float | None] | None = None
    insert: str | None = None
    gate: str | None = None

    def display_args(self) -> Any:
        """Resolved args in a YAML/JSON-friendly form (for tables)."""

        def conv(v: Any) -> Any:
            if isinstance(v, ActSpec):
                return str(v)
            if isinstance(v, (list, tuple)):
                return [conv(x) for x in v]
            return v

        if self.kind == "attention":
            return dict(self.kwargs)
        return conv(self.args)

    def build(self, activation: ActSpec | None = None) -> nn.Module:
        """Build the row's module (``number`` copies in a Sequential when > 1)."""
        try:
            mods = [self._build_one(activation) for _ in range(self.number)]
        except ConfigError:
            raise
        except (ValueError, TypeError, RuntimeError, KeyError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise ConfigError(f"{self.name}: {msg}", self.index, self.where) from e
        m = mods[0] if self.number == 1 else nn.Sequential(*mods)
        if self.gate is not None:
            assert isinstance(self.c1, int)
            m = ResidualGate(m, self.c1, self.gate)
        # routing and display attributes, as the official layers carry them (``type`` shadows
        # nn.Module.type, as officially)
        attrs = {"i": self.index, "f": self.from_, "type": self.name, "args": self.display_args()}
        attrs["np"] = sum(p.numel() for p in m.parameters())
        for k, v in attrs.items():
            setattr(m, k, v)
        return m

    def _build_one(self, activation: ActSpec | None) -> nn.Module:
        if self.kind == "attention":
            from yoloattn.attention import create_attention

            assert isinstance(self.c1, int)
            return create_attention(self.name, self.c1, **self.kwargs)
        assert self.cls is not None
        args = [a.build() if isinstance(a, ActSpec) else a for a in self.args]
        m = self.cls(*args, **self.kwargs)
        if activation is not None:
            for sub in m.modules():
                if isinstance(sub, Conv) and sub.uses_default_act:
                    sub.act = activation.build()
        return m
