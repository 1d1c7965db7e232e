"""The feature-map layers of a network description, as a user sees them (Keras' view).

A *feature-map layer* is a convolution or a pooling layer. What it shows is its output
after the element-wise layers that directly follow it: ``Conv2D(activation="relu")``
outputs post-ReLU maps, and so does a linear ``Conv2D`` followed by a separate ``ReLU``,
``Activation`` or ``BatchNormalization`` (``Dropout`` is the identity at inference). Each
comes with a label computed from the layer itself, e.g.
``conv2 (Conv2D 5x5 stride 2, same, tanh): 8 feature maps of 14x14``; explain, shift and
the web page all walk a network through :func:`feature_map_layers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cnnlab.analysis.receptive import Field, receptive_fields
from cnnlab.models import ModelDescription
from cnnlab.models import layers as L

FOLLOWERS = (L.Activation, L.ReLU, L.BatchNormalization, L.Softmax, L.Dropout)


def _x(values: Sequence[int]) -> str:
    return "x".join(str(v) for v in values)


def _per_axis(word: str, values: Sequence[int]) -> str:
    """`` stride 2`` (or `` stride 2x1``), nothing when every value is 1."""
    if all(v == 1 for v in values):
        return ""
    return f" {word} {values[0] if len(set(values)) == 1 else _x(values)}"


def _follower(layer: L.Layer) -> str:
    """How a following element-wise layer reads in a label ("" for the identity)."""
    if isinstance(layer, L.Activation):
        return "" if layer.activation == "linear" else layer.activation
    if isinstance(layer, L.ReLU):
        return "relu"
    if isinstance(layer, L.Softmax):
        return "softmax"
    if isinstance(layer, L.BatchNormalization):
        return "BatchNormalization"
    return ""


def describe(layer: L.Conv | L.Pool, followers: Iterable[L.Layer] = ()) -> str:
    """``Conv2D 5x5 stride 2, same, tanh``: the class, window and what follows it."""
    if isinstance(layer, L.Conv):
        head = f"{layer.class_name} {_x(layer.kernel_size)}" + _per_axis("stride", layer.strides)
        head += _per_axis("dilation", layer.dilation_rate)
        activation = [] if layer.activation == "linear" else [layer.activation]
    else:
        head = f"{layer.class_name} {_x(layer.pool_size)}"
        if layer.strides != layer.pool_size:
            head += _per_axis("stride", layer.strides) or " stride 1"
        activation = []
    parts = [head, *(["same"] if layer.padding == "same" else []), *activation]
    return ", ".join(parts + [t for t in map(_follower, followers) if t])


@dataclass(frozen=True)
class MapLayer:
    """A convolution or pooling layer and the feature maps it shows."""

    layer: L.Conv | L.Pool
    index: int  # of the conv/pool layer in the description's layers (0-based)
    output: str  # the description layer whose output the maps are (the last follower)
    followers: tuple[L.Layer, ...]  # the element-wise layers folded into the maps
    shape: tuple[int, ...]  # (*spatial, channels): the maps, channels-last
    field: Field  # receptive field of the maps' units

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def kind(self) -> str:
        return "conv" if isinstance(self.layer, L.Conv) else "pool"

    @property
    def jump(self) -> tuple[int, ...]:
        """Input pixels between neighbouring units, per axis: the cumulative stride."""
        return self.field.jump

    @property
    def what(self) -> str:
        return describe(self.layer, self.followers)

    @property
    def maps_text(self) -> str:
        """``8 feature maps of 14x14`` (``of length 50`` for 1-D maps)."""
        *spatial, channels = self.shape
        size = f"length {spatial[0]}" if len(spatial) == 1 else _x(spatial)
        return f"{channels} feature map{'s' if channels != 1 else ''} of {size}"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.what}): {self.maps_text}"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values, for the web page."""
        return {
            "name": self.name,
            "kind": self.kind,
            "output": self.output,
            "shape": list(self.shape),
            "jump": list(self.jump),
            "receptive_field": list(self.field.size),
            "label": self.label,
        }


def feature_map_layers(desc: ModelDescription) -> list[MapLayer]:
    """Every convolution and pooling layer of ``desc``, in order, with its followers."""
    fields = receptive_fields(desc)
    out: list[MapLayer] = []
    layers = desc.layers
    for i, layer in enumerate(layers):
        if not isinstance(layer, L.Conv | L.Pool):
            continue
        end = i
        while end + 1 < len(layers) and isinstance(layers[end + 1], FOLLOWERS):
            end += 1
        shape = desc.info[end].out_shape
        out.append(
            MapLayer(layer, i, layers[end].name, tuple(layers[i + 1 : end + 1]), shape, fields[i])
        )
    return out


def map_outputs(
    walk: Sequence[MapLayer], activations: Iterable[tuple[str, Any]]
) -> Iterator[tuple[MapLayer, Any]]:
    """Pair each feature-map layer with its maps from an engine's (name, output) stream."""
    wanted = {m.output: m for m in walk}
    for name, out in activations:
        if name in wanted:
            yield wanted.pop(name), out
        if not wanted:
            return
