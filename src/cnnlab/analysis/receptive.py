"""Receptive fields and parameter counts per layer: locality and parameter sharing as numbers.

The standard recurrence, per spatial axis, for a layer with kernel ``k``, stride ``s``,
dilation ``d`` and leading padding ``p`` applied to a map whose units have receptive field
``r`` (in input pixels), jump ``j`` (input pixels between neighbouring units) and centre of
the first unit ``c``:

    k_eff = d * (k - 1) + 1
    r_out = r + (k_eff - 1) * j
    j_out = j * s
    c_out = c + ((k_eff - 1) / 2 - p) * j

starting from the input itself: ``r = 1, j = 1, c = 0``. ReLU, dropout and flatten change
none of them; global average pooling is a window over the whole map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from cnnlab.models import FlattenHWC, GlobalAvgPool
from cnnlab.ops import output_size


@dataclass(frozen=True)
class LayerSpec:
    """A sliding-window layer along one axis (square kernels: the same on both axes)."""

    name: str
    kind: str  # "conv", "pool" or "gap"
    kernel: int
    stride: int = 1
    padding: int = 0  # leading zero padding, in this layer's input units
    dilation: int = 1


@dataclass(frozen=True)
class Field:
    """Receptive field of one layer's units: size and jump in input pixels, first centre."""

    name: str
    size: int
    jump: int
    start: float


def receptive_fields(specs: Sequence[LayerSpec]) -> list[Field]:
    """Apply the recurrence layer by layer; one :class:`Field` per spec."""
    field = INPUT
    out: list[Field] = []
    for spec in specs:
        field = step(field, spec)
        out.append(field)
    return out


INPUT = Field("input", 1, 1, 0.0)


def step(prev: Field, spec: LayerSpec) -> Field:
    """One application of the recurrence: the field of ``spec``'s units given its input's."""
    if spec.kernel < 1 or spec.stride < 1 or spec.dilation < 1 or spec.padding < 0:
        raise ValueError(f"invalid layer geometry {spec}")
    k_eff = spec.dilation * (spec.kernel - 1) + 1
    return Field(
        spec.name,
        prev.size + (k_eff - 1) * prev.jump,
        prev.jump * spec.stride,
        prev.start + ((k_eff - 1) / 2 - spec.padding) * prev.jump,
    )


@dataclass(frozen=True)
class LayerInfo:
    """One row of the per-layer table of a model."""

    name: str
    kind: str  # Keras-style layer type
    out_shape: tuple[int, ...]  # channels-last, without the batch axis
    field: Field  # jump 0: a single unit per feature (after flattening or global pooling)
    params: int
    dense_params: int  # a fully connected layer from the same input volume to the same output
    fan_in: int  # inputs each output unit is connected to
    dense_fan_in: int  # ... in that fully connected layer: the whole input volume
    uses_per_weight: int  # how many output positions share each weight (1 for dense layers)


def _first(v: int | tuple[int, ...]) -> int:
    value = v if isinstance(v, int) else v[0]
    if not isinstance(v, int) and len(set(v)) != 1:
        raise ValueError(f"only square kernels/strides are supported, got {v}")
    return int(value)


def _spec(name: str, layer: nn.Module, size: int) -> LayerSpec | None:
    if isinstance(layer, nn.Conv2d):
        if isinstance(layer.padding, str):
            raise ValueError(f"{name}: string padding {layer.padding!r} is not supported")
        return LayerSpec(
            name,
            "conv",
            _first(layer.kernel_size),
            _first(layer.stride),
            _first(layer.padding),
            _first(layer.dilation),
        )
    if isinstance(layer, nn.MaxPool2d):
        stride = layer.stride if layer.stride is not None else layer.kernel_size
        return LayerSpec(
            name,
            "pool",
            _first(layer.kernel_size),
            _first(stride),
            _first(layer.padding),
            _first(layer.dilation),
        )
    if isinstance(layer, GlobalAvgPool):
        return LayerSpec(name, "gap", size, size)
    return None


def layer_table(model: nn.Sequential, input_hw: int = 28, in_channels: int = 1) -> list[LayerInfo]:
    """Receptive field, output shape and parameters of every conv, pooling and dense layer.

    Computed from the layers' hyper-parameters alone (no forward pass); square inputs.
    """
    rows: list[LayerInfo] = []
    hw, c = input_hw, in_channels
    flat: int | None = None  # features after a flatten / global pooling
    field = INPUT
    for name, layer in model.named_children():
        spec = _spec(name, layer, hw)
        if spec is not None and flat is None:
            field = step(field, spec)
            in_volume = hw * hw * c
            out_hw = output_size(
                hw, spec.kernel, stride=spec.stride, padding=spec.padding, dilation=spec.dilation
            )
            if isinstance(layer, nn.Conv2d):
                c_out = layer.out_channels
                params = sum(p.numel() for p in layer.parameters())
                fan_in = spec.kernel * spec.kernel * c
                uses = out_hw * out_hw
            else:
                c_out, params, fan_in, uses = c, 0, spec.kernel * spec.kernel, 0
            out_shape: tuple[int, ...] = (out_hw, out_hw, c_out)
            out_volume = out_hw * out_hw * c_out
            kind = {"conv": "Conv2D", "pool": "MaxPooling2D", "gap": "GlobalAveragePooling2D"}
            if spec.kind == "gap":
                out_shape, flat = (c_out,), c_out
                field = Field(name, field.size, 0, field.start)
            rows.append(
                LayerInfo(
                    name,
                    kind[spec.kind],
                    out_shape,
                    field,
                    params,
                    in_volume * out_volume + out_volume,
                    fan_in,
                    in_volume,
                    uses,
                )
            )
            hw, c = out_hw, c_out
        elif isinstance(layer, FlattenHWC):
            flat = hw * hw * c
            # A unit after flattening sees the union of the last map's fields: no grid, jump 0.
            field = Field(name, field.size + (hw - 1) * field.jump, 0, field.start)
        elif isinstance(layer, nn.Linear):
            params = sum(p.numel() for p in layer.parameters())
            rows.append(
                LayerInfo(
                    name,
                    "Dense",
                    (layer.out_features,),
                    Field(name, field.size, 0, field.start),
                    params,
                    params,
                    layer.in_features,
                    layer.in_features,
                    1,
                )
            )
            flat = layer.out_features
    return rows


def markdown(rows: Sequence[LayerInfo]) -> str:
    """The table as Markdown: receptive field and jump, then parameters against dense."""
    head = (
        "| layer | type | output | receptive field | jump | params | dense params "
        "| inputs per unit (dense) | uses per weight |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        rf = f"{r.field.size}x{r.field.size}"
        jump = str(r.field.jump) if r.field.jump else "-"
        dense = f"{r.dense_params:,}" if r.params else "-"
        uses = f"{r.uses_per_weight:,}" if r.params else "-"
        shape = "x".join(str(s) for s in r.out_shape)
        lines.append(
            f"| {r.name} | {r.kind} | {shape} | {rf} | {jump} | {r.params:,} | {dense} "
            f"| {r.fan_in:,} ({r.dense_fan_in:,}) | {uses} |"
        )
    return "\n".join(lines) + "\n"
