"""The feature-map layers of a network description, as a user sees them (Keras' view).

A *feature-map layer* is a convolution or a pooling layer (a kind with ``MAPS``). What it
shows is its output after the element-wise layers that directly follow it (each the only
reader of the one before): ``Conv2D(activation="relu")`` outputs post-ReLU maps, and so does
a linear ``Conv2D`` followed by a separate ``ReLU``, ``Activation`` or ``BatchNormalization``
(``Dropout`` is the identity at inference). Each comes with a label computed from the layer
itself, e.g. ``conv2 (Conv2D 5x5 stride 2, same, tanh): 8 feature maps of 14x14``; explain,
shift and the web page all walk a network, chain or graph, through :func:`feature_map_layers`
and name its maps by layer name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cnnlab.analysis.receptive import field_states
from cnnlab.models import ModelDescription
from cnnlab.models import layers as L
from cnnlab.models.fields import POINTWISE, Field


def _x(values: Sequence[int]) -> str:
    return "x".join(str(v) for v in values)


def describe(layer: L.Layer, followers: Iterable[L.Layer] = ()) -> str:
    """``Conv2D 5x5 stride 2, same, tanh``: the class, window and what follows it."""
    head = getattr(layer, "describe", None)
    parts = [head() if callable(head) else layer.class_name]
    return ", ".join(parts + [t for t in (f.label() for f in followers) if t])


@dataclass(frozen=True)
class MapLayer:
    """A convolution or pooling layer and the feature maps it shows."""

    layer: L.Layer
    index: int  # of the conv/pool layer in the description's layers (0-based)
    output: str  # the description layer whose output the maps are (the last follower)
    followers: tuple[L.Layer, ...]  # the element-wise layers folded into the maps
    shape: tuple[int, ...]  # (*spatial, channels): the maps, channels-last
    field: Field | None  # receptive field of the maps' units (None: no rule reaches it)
    source: str  # the layer it reads ("input": the network's input)

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def kind(self) -> str:
        return "conv" if isinstance(self.layer, L.Conv) else "pool"

    @property
    def jump(self) -> tuple[int, ...]:
        """Input pixels between neighbouring units, per axis: the cumulative stride."""
        if self.field is None:
            raise L.CapabilityError(
                self.layer, "receptive-field rule", "a layer before it has none"
            )
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
            "jump": None if self.field is None else list(self.field.jump),
            "receptive_field": None if self.field is None else list(self.field.size),
            "label": self.label,
        }


def _followers(desc: ModelDescription, name: str) -> list[L.Layer]:
    """The element-wise layers after ``name``, each the only reader of the one before."""
    out: list[L.Layer] = []
    while len(readers := desc.consumers[name]) == 1:
        info = desc.by_name[readers[0]]
        if len(info.inputs) != 1 or name == desc.output:
            break
        try:
            if info.layer.geometry(info) is not POINTWISE:
                break
        except L.CapabilityError:
            break
        out.append(info.layer)
        name = info.layer.name
    return out


def feature_map_layers(desc: ModelDescription) -> list[MapLayer]:
    """Every convolution and pooling layer of ``desc``, in order, with its followers."""
    states = field_states(desc, strict=False)
    out: list[MapLayer] = []
    for i, info in enumerate(desc.info):
        layer = info.layer
        if not layer.MAPS:
            continue
        followers = _followers(desc, layer.name)
        last = followers[-1].name if followers else layer.name
        state = states[layer.name]
        out.append(
            MapLayer(
                layer, i, last, tuple(followers), desc.by_name[last].out_shape,
                None if state is None else state.field, info.inputs[0],
            )
        )  # fmt: skip
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
