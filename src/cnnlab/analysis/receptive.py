"""Receptive fields and parameter counts per layer, from a network description alone.

Each layer kind declares its geometry (:meth:`cnnlab.models.layers.Layer.geometry`: a
window, a shift, pointwise, a merge or a collapse); :mod:`cnnlab.models.fields` holds the
recurrence for each. Here it runs over the whole graph, every path: a merge's units see the
union of what its inputs' units see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cnnlab.models import ModelDescription
from cnnlab.models import layers as L
from cnnlab.models.description import LayerInfo
from cnnlab.models.fields import POINTWISE, Axis, Field, State, apply, input_state, step

__all__ = ["Axis", "Field", "Row", "layer_table", "markdown", "receptive_fields", "step"]


def field_states(desc: ModelDescription, strict: bool = True) -> dict[str, State | None]:
    """The field state of the input and of every layer's units, by layer name.

    ``strict``: a layer without a rule raises :class:`~cnnlab.models.layers.CapabilityError`
    naming it; otherwise it and everything after it get None.
    """
    states: dict[str, State | None] = {L.INPUT: input_state(desc.input_shape[:-1])}
    for info in desc.info:
        before = [states[n] for n in info.inputs]
        if any(s is None for s in before):
            states[info.layer.name] = None
            continue
        try:
            result = apply(info.layer.geometry(info), before, info.in_shapes)  # type: ignore[arg-type]
        except L.CapabilityError:
            if strict:
                raise
            states[info.layer.name] = None
            continue
        if isinstance(result, str):
            if strict:
                raise L.CapabilityError(info.layer, "receptive-field rule", result)
            states[info.layer.name] = None
            continue
        states[info.layer.name] = result
    return states


def receptive_fields(desc: ModelDescription) -> list[Field]:
    """The field of every description layer's output units, in layer order; a layer that
    has no rule raises :class:`~cnnlab.models.layers.CapabilityError` naming it."""
    states = field_states(desc)
    return [states[i.layer.name].field for i in desc.info]  # type: ignore[union-attr]


@dataclass(frozen=True)
class Row:
    """One row of the per-layer table of a network."""

    name: str
    kind: str  # the Keras class name
    out_shape: tuple[int, ...]  # channels-last, without the batch axis
    field: Field  # jump 0: a single unit per feature (after flattening or global pooling)
    params: int  # trainable and non-trainable
    dense_params: int  # a fully connected layer from the same input volume to the same output
    fan_in: int  # inputs each output unit is connected to (0: not a weighted sum)
    dense_fan_in: int  # ... in that fully connected layer: the whole input volume
    uses_per_weight: int  # output positions sharing each weight (1 for dense layers, 0: none)


def _shown(info: LayerInfo) -> bool:
    """Every layer but the element-wise ones without weights (activations, dropout ...)."""
    return info.layer.geometry(info) is not POINTWISE or bool(info.trainable + info.non_trainable)


def _row(info: LayerInfo, field: Field) -> Row:
    layer, n_in, n_out = info.layer, math.prod(info.in_shape), math.prod(info.out_shape)
    fan_in, uses = layer.connections(info)
    weighted = uses > 0
    return Row(
        name=layer.name,
        kind=layer.class_name,
        out_shape=info.out_shape,
        field=field,
        params=info.trainable + info.non_trainable,
        dense_params=n_in * n_out + n_out if weighted else 0,
        fan_in=fan_in,
        dense_fan_in=n_in,
        uses_per_weight=uses,
    )


def layer_table(desc: ModelDescription) -> list[Row]:
    """Receptive field, output shape and parameters of every layer but the element-wise ones."""
    rows = zip(desc.info, receptive_fields(desc), strict=True)
    return [_row(info, field) for info, field in rows if _shown(info)]


def _x(values: Sequence[int]) -> str:
    return "x".join(str(v) for v in values)


def markdown(rows: Sequence[Row]) -> str:
    """The table as Markdown: receptive field and jump, then parameters against dense."""
    head = (
        "| layer | type | output | receptive field | jump | params | dense params "
        "| inputs per unit (dense) | uses per weight |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        jumps = r.field.jump
        jump = "-" if not any(jumps) else str(jumps[0]) if len(set(jumps)) == 1 else _x(jumps)
        dense = f"{r.dense_params:,}" if r.dense_params else "-"
        fan = f"{r.fan_in:,} ({r.dense_fan_in:,})" if r.fan_in else "-"
        uses = f"{r.uses_per_weight:,}" if r.uses_per_weight else "-"
        lines.append(
            f"| {r.name} | {r.kind} | {_x(r.out_shape)} | {_x(r.field.size)} | {jump} "
            f"| {r.params:,} | {dense} | {fan} | {uses} |"
        )
    return "\n".join(lines) + "\n"
