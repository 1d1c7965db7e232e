"""A Keras 3 model config (``config.json``) as a cnnlab :class:`ModelDescription`.

Both of Keras' ways to write a network read here: a ``Sequential`` (a chain) and a functional
model (``keras.Input``, layers called on tensors: residual ``Add``, branches joined by
``Concatenate``, ...). Nested ``Sequential`` or functional blocks are flattened into the one
graph. Each Keras layer maps to the description layer of the same class: the layer kind
(:mod:`cnnlab.models.layers`) says which Keras arguments it reads, which do not change what
the network computes (initialisers, regularisers, constraints, ``trainable``, a float32 dtype
policy ...) and which it accepts at one value only (``data_format="channels_last"`` ...);
any other class, argument or value is refused in one line naming the layer and the argument,
e.g. ``layer 3 (Conv2D 'conv2d_1'): groups=2 is not supported``. So are a layer called twice
(shared weights) and several inputs or outputs. Nothing here names a layer of any particular
network: the layers come from the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import DescriptionError, ModelDescription, Network
from cnnlab.models.description import MAX_LAYERS
from cnnlab.models.layers import INPUT, LAYERS, RESERVED_NAMES

MODELS = ("Sequential", "Functional", "Model")
MODULES = ("keras", "keras.models", "keras.src.models.functional")  # where Keras' models live
_INPUT_KEYS = {"batch_shape", "batch_input_shape", "dtype", "name"}
_INPUT_FIXED = {"sparse": (False,), "ragged": (False,), "optional": (False,)}
_CALL_KWARGS = {"mask": (None,), "training": (None, False)}  # Keras' call arguments accepted


@dataclass(frozen=True)
class KerasLayer:
    """Where one description layer came from: its Keras name, config and weights' group."""

    index: int  # 1-based, in the order the layers are read (Keras' InputLayer not counted)
    class_name: str
    keras_name: str
    h5_group: str  # layers/<snake_case class>[_k]: Keras 3 numbers weights by class, in order
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"layer {self.index} ({self.class_name} {show(self.keras_name)})"


@dataclass(frozen=True)
class Translation:
    """A Keras model's description, and where each of its layers came from (by the
    description's layer name)."""

    description: ModelDescription
    sources: dict[str, KerasLayer]

    @property
    def layers(self) -> tuple[KerasLayer, ...]:
        """The sources in the description's layer order."""
        return tuple(self.sources[x.name] for x in self.description.layers)


def show(value: Any, limit: int = 40) -> str:
    """A hostile value as a short one-line repr (newlines escaped, long values cut)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def snake_case(class_name: str) -> str:
    """Keras' ``to_snake_case``: ``MaxPooling2D`` -> ``max_pooling2d``, ``ReLU`` -> ``re_lu``."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _small(value: Any, depth: int = 0) -> bool:
    """A plain JSON value short enough to be an argument (so every message stays short)."""
    if value is None or isinstance(value, bool | float):
        return True
    if isinstance(value, int):
        return abs(value) <= 1 << 30
    if isinstance(value, str):
        return len(value) <= 64
    if isinstance(value, list):
        return depth < 2 and len(value) <= 8 and all(_small(v, depth + 1) for v in value)
    return False


def _dtype_problem(value: Any) -> str | None:
    """Why a layer's ``dtype`` is refused (None: float32, Keras' default)."""
    name = value
    if isinstance(value, dict):
        cfg = value.get("config")
        ok = value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy")
        name = cfg.get("name") if ok and isinstance(cfg, dict) else value.get("class_name")
    if value is None or name == "float32":
        return None
    return f"dtype policy {show(name)} is not supported (float32 only)"


def _reserved() -> set[str]:
    """Names a child module cannot have: the Network's own attributes (forward, training ...)."""
    return set(dir(Network)) | set(vars(nn.Module())) | set(RESERVED_NAMES)


def _spatial_shape(batch_shape: Any, path: Path) -> list[int]:
    if batch_shape is None:
        raise CnnlabError(f"{path}: config.json declares no input shape (no InputLayer)")
    if not isinstance(batch_shape, list) or not 2 <= len(batch_shape) <= 5:
        raise CnnlabError(f"{path}: the input shape {show(batch_shape)} is not supported")
    shape = batch_shape[1:]
    if not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 1 << 24 for s in shape):
        raise CnnlabError(
            f"{path}: the input shape {show(batch_shape)} is not supported "
            "(every size but the batch's must be fixed)"
        )
    return shape


def _check_input_layer(cfg: Mapping[str, Any], path: Path) -> Any:
    """An InputLayer's batch shape, its other arguments checked."""
    where = f"{path}: the InputLayer"
    for key, value in cfg.items():
        if key in _INPUT_FIXED and value not in _INPUT_FIXED[key]:
            raise CnnlabError(f"{where}: {key}={show(value)} is not supported")
        if key not in _INPUT_KEYS and key not in _INPUT_FIXED:
            raise CnnlabError(f"{where}: argument {show(key)} is not supported")
    if cfg.get("dtype", "float32") != "float32":
        raise CnnlabError(f"{where}: dtype {show(cfg.get('dtype'))} is not supported")
    return cfg.get("batch_shape", cfg.get("batch_input_shape"))


def layer_args(entry: dict[str, Any], layer: KerasLayer, path: Path) -> dict[str, Any]:
    """A Keras layer's description arguments, as its layer kind reads them."""
    cls, cfg = entry.get("class_name"), entry.get("config")
    where = f"{path}: {layer.where}"
    kind = LAYERS.get(cls) if isinstance(cls, str) else None
    if kind is None:
        raise CnnlabError(
            f"{where}: layer class {layer.class_name} is not supported ({', '.join(LAYERS)})"
        )
    if entry.get("module", "keras.layers") != "keras.layers":
        raise CnnlabError(f"{where}: module {show(entry.get('module'))} is not Keras' own")
    if entry.get("registered_name") not in (None, cls):
        raise CnnlabError(f"{where}: a registered custom class is not supported")
    if not isinstance(cfg, dict):
        raise CnnlabError(f"{where}: its config is not a JSON object")
    kept: dict[str, Any] = {}
    for key, value in cfg.items():
        if key == "dtype":
            problem = _dtype_problem(value)
            if problem:
                raise CnnlabError(f"{where}: {problem}")
        elif key in kind.KERAS_FIXED:
            allowed = kind.KERAS_FIXED[key]
            if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
                raise CnnlabError(f"{where}: {key}={show(value)} is not supported")
        elif key in kind.ARGS or key in kind.KERAS_LEGACY:
            if not _small(value):
                raise CnnlabError(f"{where}: {key}={show(value)} is not supported")
            kept[key] = value
        elif key not in kind.KERAS_IGNORED and key not in ("name", "trainable"):
            raise CnnlabError(f"{where}: argument {show(key)} is not supported")
    try:
        return kind.from_keras(str(cls), kept)
    except ValueError as exc:
        raise CnnlabError(f"{where}: {exc}") from None


class _Reader:
    """Walks a model config, nested models included, into description layer entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[dict[str, Any]] = []
        self.sources: dict[str, KerasLayer] = {}
        self.taken: set[str] = set()
        self.reserved = _reserved()

    def _name(self, raw: Any, class_name: str) -> str:
        """The Keras name, sanitised into a unique module name (``.`` is PyTorch's separator)."""
        name = re.sub(r"[^A-Za-z0-9_\-]", "_", raw if isinstance(raw, str) else "")[:56]
        if not name or not (name[0].isalpha() or name[0] == "_"):
            name = f"{snake_case(class_name)}_{name}".rstrip("_")[:56]
        if name in self.reserved:
            name += "_"
        base, k = name, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def _source(self, entry: Any, group: str, counts: dict[str, int]) -> KerasLayer:
        if len(self.items) >= MAX_LAYERS:
            raise CnnlabError(f"{self.path}: the model has more than {MAX_LAYERS} layers")
        if not isinstance(entry, dict):
            raise CnnlabError(f"{self.path}: layer {len(self.items) + 1} is not a JSON object")
        cls, cfg = entry.get("class_name"), entry.get("config")
        cls_text = cls if isinstance(cls, str) and re.fullmatch(r"\w{1,40}", cls) else show(cls)
        name = cfg.get("name") if isinstance(cfg, dict) else None
        shown = name[:64] if isinstance(name, str) else "?"
        snake = snake_case(cls_text)
        k = counts.get(snake, -1) + 1
        counts[snake] = k
        h5 = f"{group}/{snake}" + (f"_{k}" if k else "")
        return KerasLayer(
            len(self.items) + 1, cls_text, shown, h5, cfg if isinstance(cfg, dict) else {}
        )

    def _add(self, entry: dict[str, Any], layer: KerasLayer, inputs: list[str]) -> str:
        item = {"class_name": entry.get("class_name"), **layer_args(entry, layer, self.path)}
        item["name"] = self._name(
            layer.keras_name if layer.keras_name != "?" else None, layer.class_name
        )
        item["inputs"] = inputs
        self.items.append(item)
        self.sources[item["name"]] = layer
        return str(item["name"])

    def model(
        self, config: dict[str, Any], group: str, source: str | None, label: str = "the model"
    ) -> tuple[Any, str]:
        """Read a (possibly nested) model; ``source``: the layer feeding it (None: the top
        level, which declares the input shape). Returns (batch shape, output layer name)."""
        kind = config.get("class_name")
        body = config.get("config")
        if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
            raise CnnlabError(f"{self.path}: {label} has no list of layers in config.json")
        if not body["layers"]:
            raise CnnlabError(f"{self.path}: {label} has no layers")
        if len(body["layers"]) > MAX_LAYERS + 1:
            raise CnnlabError(
                f"{self.path}: the model has {len(body['layers']):,} layers (at most {MAX_LAYERS})"
            )
        if kind == "Sequential":
            return self._sequential(config, body, group, source, label)
        return self._functional(body, group, source)

    def _nested(self, entry: dict[str, Any], layer: KerasLayer, inputs: list[str]) -> str:
        if entry.get("module", "keras") not in MODULES:
            raise CnnlabError(
                f"{self.path}: {layer.where}: module {show(entry.get('module'))} is not Keras' own"
            )
        if len(inputs) != 1:
            raise CnnlabError(
                f"{self.path}: {layer.where}: a nested model with several inputs is not supported"
            )
        return self.model(entry, f"{layer.h5_group}/layers", inputs[0], layer.where)[1]

    def _sequential(
        self,
        config: dict[str, Any],
        body: dict[str, Any],
        group: str,
        source: str | None,
        label: str,
    ) -> tuple[Any, str]:
        layers = list(body["layers"])
        batch_shape = None
        first: dict[str, Any] = layers[0] if layers and isinstance(layers[0], dict) else {}
        raw = first.get("config")
        cfg: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if first.get("class_name") == "InputLayer":
            batch_shape = _check_input_layer(cfg, self.path)
            layers = layers[1:]
        elif source is None:
            build = first.get("build_config")
            outer = config.get("build_config")
            candidates = [
                cfg.get("batch_shape"),
                cfg.get("batch_input_shape"),
                build.get("input_shape") if isinstance(build, dict) else None,
                body.get("build_input_shape"),
                outer.get("input_shape") if isinstance(outer, dict) else None,
            ]
            batch_shape = next((c for c in candidates if c is not None), None)
        if not layers:
            raise CnnlabError(f"{self.path}: {label} has no layers")
        previous = source or INPUT
        counts: dict[str, int] = {}
        for entry in layers:
            layer = self._source(entry, group, counts)
            if entry.get("class_name") in MODELS:
                previous = self._nested(entry, layer, [previous])
            else:
                previous = self._add(entry, layer, [previous])
        return batch_shape, previous

    def _inbound(
        self, entry: dict[str, Any], layer: KerasLayer, names: dict[str, str]
    ) -> list[str]:
        """The description names of the layers a functional layer is called on."""
        where = f"{self.path}: {layer.where}"
        nodes = entry.get("inbound_nodes")
        if not isinstance(nodes, list) or not nodes:
            raise CnnlabError(f"{where}: it is called on nothing (no inbound nodes)")
        if len(nodes) > 1:
            raise CnnlabError(
                f"{where}: the layer is called {len(nodes)} times (shared weights); "
                "shared layers are not supported"
            )
        node = nodes[0]
        history: list[Any] = []
        if isinstance(node, list):  # Keras 2's form: [[name, node, tensor, kwargs], ...]
            history = [t[:3] for t in node if isinstance(t, list) and len(t) >= 3]
        elif isinstance(node, dict):
            kwargs = node.get("kwargs") or {}
            for key, value in kwargs.items() if isinstance(kwargs, dict) else []:
                if key not in _CALL_KWARGS or value not in _CALL_KWARGS[key]:
                    raise CnnlabError(
                        f"{where}: the call argument {show(key)}={show(value)} is not supported"
                    )
            args = node.get("args") or []
            tensors = args[0] if len(args) == 1 and isinstance(args[0], list) else args
            for t in tensors:
                cfg = t.get("config") if isinstance(t, dict) else None
                hist = cfg.get("keras_history") if isinstance(cfg, dict) else None
                history.append(hist)
        out = []
        for hist in history:
            if not (isinstance(hist, list) and len(hist) >= 3 and isinstance(hist[0], str)):
                raise CnnlabError(f"{where}: cannot read the tensors it is called on")
            if hist[1] != 0 or hist[2] != 0:
                raise CnnlabError(
                    f"{where}: it reads output {show(hist[1:3])} of {show(hist[0])}; layers "
                    "called twice or with several outputs are not supported"
                )
            if hist[0] not in names:
                raise CnnlabError(f"{where}: it reads {show(hist[0])}, which no layer before it is")
            out.append(names[hist[0]])
        if not out:
            raise CnnlabError(f"{where}: cannot read the tensors it is called on")
        return out

    def _functional(self, body: dict[str, Any], group: str, source: str | None) -> tuple[Any, str]:
        ins, outs = (
            _one_end(body.get("input_layers"), "input", self.path),
            _one_end(body.get("output_layers"), "output", self.path),
        )
        names: dict[str, str] = {}  # Keras name -> description name
        batch_shape = None
        counts: dict[str, int] = {}
        for entry in body["layers"]:
            layer = self._source(entry, group, counts)
            if isinstance(entry, dict) and entry.get("class_name") == "InputLayer":
                if layer.keras_name != ins:
                    raise CnnlabError(f"{self.path}: a model with several inputs is not supported")
                batch_shape = _check_input_layer(layer.config, self.path)
                names[layer.keras_name] = source or INPUT
                continue
            inputs = self._inbound(entry, layer, names)
            if entry.get("class_name") in MODELS:
                names[layer.keras_name] = self._nested(entry, layer, inputs)
            else:
                names[layer.keras_name] = self._add(entry, layer, inputs)
        if outs not in names:
            raise CnnlabError(f"{self.path}: the output layer {show(outs)} is not among its layers")
        return batch_shape, names[outs]


def _one_end(value: Any, what: str, path: Path) -> str:
    """The one input (output) layer's name from ``input_layers`` (``output_layers``)."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        return _one_end(value[0], what, path)
    if isinstance(value, list) and len(value) > 1 and all(isinstance(v, list) for v in value):
        raise CnnlabError(f"{path}: a model with {len(value)} {what}s is not supported (one only)")
    raise CnnlabError(f"{path}: config.json names no {what} layer")


def translate(config: Any, path: Path, name: str) -> Translation:
    """The description of a Keras 3 model config; CnnlabError (one line) if it is not one
    cnnlab reads."""
    path = Path(path)
    if not isinstance(config, dict):
        raise CnnlabError(f"{path}: config.json does not describe a Keras model")
    kind = config.get("class_name")
    module = config.get("module", "keras")
    if kind not in MODELS or module not in MODULES:
        raise CnnlabError(
            f"{path} holds a {show(kind)} model; a Keras Sequential or functional model imports"
        )
    reader = _Reader(path)
    batch_shape, output = reader.model(config, "layers", None)
    shape = _spatial_shape(batch_shape, path)
    if not reader.items:
        raise CnnlabError(f"{path}: the model has no layers")
    data = {"name": name, "input_shape": shape, "layers": reader.items, "outputs": [output]}
    try:
        desc = ModelDescription.from_dict(data)
    except DescriptionError as exc:
        raise CnnlabError(f"{path}: {_with_names(str(exc), reader)}") from None
    for info in desc.info:
        src = reader.sources[info.layer.name]
        problem = info.layer.check_keras(src.config, info)
        if problem:
            raise CnnlabError(f"{path}: {src.where}: {problem}")
    return Translation(desc, reader.sources)


def _with_names(message: str, reader: _Reader) -> str:
    """A description error's ``layer 3 (Dense):`` as ``layer 3 (Dense 'dense_1'):``."""
    m = re.match(r"^layer (\d+) \((\w+)(?: '[^']*')?\): ", message)
    by_index = {s.index: s for s in reader.sources.values()}
    if m and int(m.group(1)) in by_index:
        return f"{by_index[int(m.group(1))].where}: {message[m.end() :]}"
    return message
