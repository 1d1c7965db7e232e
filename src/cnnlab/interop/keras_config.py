"""A Keras 3 ``Sequential`` config (``config.json``) as a cnnlab :class:`ModelDescription`.

Each Keras layer maps to the description layer of the same class and arguments. Keras
arguments that do not change what the network computes (initialisers, regularisers,
constraints, ``trainable``, a float32 dtype policy, ``data_format="channels_last"``,
``keepdims=False`` ...) are accepted and dropped; any other class, argument or value is
refused in one line naming the layer and the argument, e.g.
``layer 3 (Conv2D 'conv2d_1'): groups=2 is not supported``. Nothing here names a layer of
any particular network: the layers come from the file.
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
from cnnlab.models.layers import ACTIVATIONS, CLASS_NAMES, PADDINGS

_INIT = ("kernel_initializer", "bias_initializer")
_REG = ("kernel_regularizer", "bias_regularizer", "activity_regularizer")
_CONSTRAINT = ("kernel_constraint", "bias_constraint")
_BN_EXTRA = tuple(
    f"{w}_{what}"
    for w in ("beta", "gamma", "moving_mean", "moving_variance")
    for what in ("initializer", "regularizer", "constraint")
)
_LAST = (-1, [-1])
_SUPPORTED = (
    "Conv, MaxPooling, AveragePooling, GlobalAveragePooling, GlobalMaxPooling and "
    "ZeroPadding (1D, 2D, 3D), Flatten, Dense, Dropout, BatchNormalization, Activation, ReLU, "
    "Softmax, Rescaling"
)


@dataclass(frozen=True)
class _Rule:
    """How one Keras class maps: arguments kept, arguments pinned to a value, ones dropped."""

    args: tuple[str, ...] = ()
    fixed: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # absent = Keras default
    ignored: tuple[str, ...] = ()


_CHANNELS_LAST = {"data_format": ("channels_last",)}
_RULES: dict[str, _Rule] = {
    "Conv": _Rule(
        ("filters", "kernel_size", "strides", "padding", "dilation_rate", "activation", "use_bias"),
        {"groups": (1,), "lora_rank": (None,), **_CHANNELS_LAST},
        (*_INIT, *_REG, *_CONSTRAINT, "lora_alpha"),
    ),
    "MaxPooling": _Rule(("pool_size", "strides", "padding"), _CHANNELS_LAST),
    "AveragePooling": _Rule(("pool_size", "strides", "padding"), _CHANNELS_LAST),
    "GlobalAveragePooling": _Rule((), {"keepdims": (False,), **_CHANNELS_LAST}),
    "GlobalMaxPooling": _Rule((), {"keepdims": (False,), **_CHANNELS_LAST}),
    "ZeroPadding": _Rule(("padding",), _CHANNELS_LAST),
    "Flatten": _Rule((), _CHANNELS_LAST),
    "Dense": _Rule(
        ("units", "activation", "use_bias"),
        {"lora_rank": (None,), "quantization_config": (None,)},
        (*_INIT, *_REG, *_CONSTRAINT, "lora_alpha"),
    ),
    "Dropout": _Rule(("rate",), {"noise_shape": (None,)}, ("seed",)),
    "BatchNormalization": _Rule(
        ("epsilon", "momentum", "center", "scale"),
        {"renorm": (False,)},  # axis: checked against the input's rank, see _check_axes
        (*_BN_EXTRA, "synchronized", "renorm_clipping", "renorm_momentum", "axis"),
    ),
    "Activation": _Rule(("activation",)),
    "ReLU": _Rule((), {"max_value": (None,), "negative_slope": (0, 0.0), "threshold": (0, 0.0)}),
    "Softmax": _Rule((), {"axis": _LAST}),
    "Rescaling": _Rule(("scale", "offset")),
}
_RANKED = re.compile(
    r"^(Conv|MaxPooling|AveragePooling|GlobalAveragePooling|GlobalMaxPooling|ZeroPadding)[123]D$"
)
_INPUT_KEYS = {"batch_shape", "batch_input_shape", "dtype", "name"}
_INPUT_FIXED = {"sparse": (False,), "ragged": (False,), "optional": (False,)}


@dataclass(frozen=True)
class KerasLayer:
    """Where one description layer came from: its Keras name and its weights' HDF5 group."""

    index: int  # 1-based, as in the description (Keras' InputLayer not counted)
    class_name: str
    keras_name: str
    h5_group: str  # layers/<snake_case class>[_k]: Keras 3 numbers weights by class, in order

    @property
    def where(self) -> str:
        return f"layer {self.index} ({self.class_name} {show(self.keras_name)})"


@dataclass(frozen=True)
class Translation:
    """A Keras model's description, and where each of its layers came from."""

    description: ModelDescription
    layers: tuple[KerasLayer, ...]


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
    return set(dir(Network)) | set(vars(nn.Module())) | {"description", "n_forward"}


def _layer_name(raw: Any, class_name: str, taken: set[str], reserved: set[str]) -> str:
    """The Keras name, sanitised into a unique module name (``.`` is PyTorch's separator)."""
    name = re.sub(r"[^A-Za-z0-9_\-]", "_", raw if isinstance(raw, str) else "")[:56]
    if not name or not (name[0].isalpha() or name[0] == "_"):
        name = f"{snake_case(class_name)}_{name}".rstrip("_")[:56]
    if name in reserved:
        name += "_"
    base, k = name, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _input_layer(layers: list[Any], fallback: list[Any], path: Path) -> tuple[Any, list[Any]]:
    """The declared batch input shape, and the layers without Keras' InputLayer.

    Without an InputLayer, the first layer's ``batch_shape`` or build config, or the
    model's (``fallback``), records the input.
    """
    first: dict[str, Any] = layers[0] if layers and isinstance(layers[0], dict) else {}
    raw = first.get("config")
    cfg: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if first.get("class_name") == "InputLayer":
        where = f"{path}: the InputLayer"
        for key, value in cfg.items():
            if key in _INPUT_FIXED and value not in _INPUT_FIXED[key]:
                raise CnnlabError(f"{where}: {key}={show(value)} is not supported")
            if key not in _INPUT_KEYS and key not in _INPUT_FIXED:
                raise CnnlabError(f"{where}: argument {show(key)} is not supported")
        if cfg.get("dtype", "float32") != "float32":
            raise CnnlabError(f"{where}: dtype {show(cfg.get('dtype'))} is not supported")
        return cfg.get("batch_shape", cfg.get("batch_input_shape")), layers[1:]
    build = first.get("build_config")
    candidates = [
        cfg.get("batch_shape"),
        cfg.get("batch_input_shape"),
        build.get("input_shape") if isinstance(build, dict) else None,
        *fallback,
    ]
    return next((c for c in candidates if c is not None), None), layers


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


def _layer_args(
    entry: Any, index: int, path: Path, counts: dict[str, int]
) -> tuple[KerasLayer, dict[str, Any]]:
    """One Keras layer entry: where it came from, and its description arguments."""
    if not isinstance(entry, dict):
        raise CnnlabError(f"{path}: layer {index} is not a JSON object")
    cls, cfg = entry.get("class_name"), entry.get("config")
    cls_text = cls if isinstance(cls, str) and re.fullmatch(r"\w{1,40}", cls) else show(cls)
    name = cfg.get("name") if isinstance(cfg, dict) else None
    shown = name[:64] if isinstance(name, str) else "?"
    stem = _RANKED.sub(r"\1", cls_text)
    snake = snake_case(cls_text)
    k = counts.get(snake, -1) + 1
    counts[snake] = k
    layer = KerasLayer(index, cls_text, shown, f"layers/{snake}" + (f"_{k}" if k else ""))
    where = f"{path}: {layer.where}"
    if cls not in CLASS_NAMES:
        raise CnnlabError(f"{where}: layer class {cls_text} is not supported ({_SUPPORTED})")
    if entry.get("module", "keras.layers") != "keras.layers":
        raise CnnlabError(f"{where}: module {show(entry.get('module'))} is not Keras' own")
    if entry.get("registered_name") not in (None, cls):
        raise CnnlabError(f"{where}: a registered custom class is not supported")
    if not isinstance(cfg, dict):
        raise CnnlabError(f"{where}: its config is not a JSON object")
    rule = _RULES[stem]
    args: dict[str, Any] = {}
    for key, value in cfg.items():
        if key == "dtype":
            problem = _dtype_problem(value)
            if problem:
                raise CnnlabError(f"{where}: {problem}")
        elif key in rule.fixed:
            if value not in rule.fixed[key] or isinstance(value, bool) != isinstance(
                rule.fixed[key][0], bool
            ):
                raise CnnlabError(f"{where}: {key}={show(value)} is not supported")
        elif key in rule.args:
            if not _small(value):
                raise CnnlabError(f"{where}: {key}={show(value)} is not supported")
            args[key] = value
        elif key not in rule.ignored and key not in ("name", "trainable"):
            raise CnnlabError(f"{where}: argument {show(key)} is not supported")
    if stem != "ZeroPadding" and "padding" in args and args["padding"] not in PADDINGS:
        raise CnnlabError(f"{where}: padding={show(args['padding'])} is not supported")
    if "activation" in args and args["activation"] not in ACTIVATIONS:
        raise CnnlabError(
            f"{where}: activation={show(args['activation'])} is not supported "
            f"({', '.join(ACTIVATIONS)})"
        )
    return layer, {"class_name": cls, **args}


def _check_axes(
    config_layers: list[Any], desc: ModelDescription, tr: list[KerasLayer], path: Path
) -> None:
    """BatchNormalization must normalise over the channel (last) axis."""
    for entry, info, layer in zip(config_layers, desc.info, tr, strict=True):
        if layer.class_name != "BatchNormalization":
            continue
        axis = entry["config"].get("axis", -1)
        last = len(info.in_shape)  # the channel axis, counting the batch axis
        if axis not in (-1, [-1], last, [last]) or isinstance(axis, bool):
            raise CnnlabError(
                f"{path}: {layer.where}: axis={show(axis)} is not supported "
                "(the channel axis, -1, only)"
            )


def translate(config: Any, path: Path, name: str) -> Translation:
    """The description of a Keras 3 ``Sequential`` config; CnnlabError (one line) if not one."""
    path = Path(path)
    if not isinstance(config, dict):
        raise CnnlabError(f"{path}: config.json does not describe a Keras model")
    kind = config.get("class_name")
    if kind != "Sequential" or config.get("module", "keras") not in ("keras", "keras.models"):
        raise CnnlabError(f"{path} holds a {show(kind)} model; only a Keras Sequential imports")
    raw = config.get("config")
    body: dict[str, Any] = raw if isinstance(raw, dict) else {}
    layers = body.get("layers")
    if not isinstance(layers, list):
        raise CnnlabError(f"{path}: config.json has no list of layers")
    if len(layers) > MAX_LAYERS + 1:
        raise CnnlabError(f"{path}: the model has {len(layers):,} layers (at most {MAX_LAYERS})")
    build = config.get("build_config")
    fallback = [
        body.get("build_input_shape"),
        build.get("input_shape") if isinstance(build, dict) else None,
    ]
    batch_shape, layers = _input_layer(layers, fallback, path)
    shape = _spatial_shape(batch_shape, path)
    if not layers:
        raise CnnlabError(f"{path}: the model has no layers")
    counts: dict[str, int] = {}
    taken: set[str] = set()
    reserved = _reserved()
    sources: list[KerasLayer] = []
    items: list[dict[str, Any]] = []
    for i, entry in enumerate(layers, start=1):
        layer, item = _layer_args(entry, i, path, counts)
        raw_name = entry["config"].get("name")
        item["name"] = _layer_name(raw_name, layer.class_name, taken, reserved)
        taken.add(item["name"])
        sources.append(layer)
        items.append(item)
    try:
        desc = ModelDescription.from_dict({"name": name, "input_shape": shape, "layers": items})
    except DescriptionError as exc:
        raise CnnlabError(f"{path}: {_with_names(str(exc), sources)}") from None
    _check_axes(layers, desc, sources, path)
    return Translation(desc, tuple(sources))


def _with_names(message: str, layers: list[KerasLayer]) -> str:
    """A description error's ``layer 3 (Dense):`` as ``layer 3 (Dense 'dense_1'):``."""
    m = re.match(r"^layer (\d+) \((\w+)\): ", message)
    if m and 1 <= int(m.group(1)) <= len(layers):
        return f"{layers[int(m.group(1)) - 1].where}: {message[m.end() :]}"
    return message
