"""The one-line form of a network description, for the command line.

    Input(28,28,1) Conv2D(16,3,relu) MaxPooling2D Conv2D(64,3,relu) MaxPooling2D
    Flatten Dropout(0.25) Dense(32,relu) Dropout(0.25) Dense(10,softmax)

Layers are separated by spaces (or ``|``, ``->``). Inside the parentheses, arguments are
``key=value`` or positional: the leading numbers fill each class's main arguments in
Keras' order (``Conv2D(filters, kernel_size, strides)``, ``Dense(units)``,
``MaxPooling2D(pool_size, strides)``, ``Dropout(rate)``, ...); a bare activation name
(``relu``) sets ``activation``; ``same``/``valid`` set ``padding``. Per-axis sizes are
written ``1x3x3``. Nothing is evaluated: the text is tokenised and checked like JSON.
"""

from __future__ import annotations

import re
from typing import Any

from cnnlab.errors import MAX_DIGITS, MAX_FLOAT_CHARS, printable
from cnnlab.models.description import ModelDescription
from cnnlab.models.layers import ACTIVATIONS, LAYERS, PADDINGS, DescriptionError, parse_layer

MAX_CHARS = 10_000
_LAYER = re.compile(r"\s*([A-Za-z][A-Za-z0-9]*)\s*(?:\(([^()]*)\))?\s*(?:\||->)?")


def looks_compact(text: str) -> bool:
    """Whether ``text`` is meant as a one-line description rather than a name or a path."""
    return "(" in text or " " in text.strip()


def _bounded(text: str, limit: int) -> None:
    if len(text) > limit:
        raise DescriptionError(
            f"the model line: the number {printable(text, 40)} is longer than {limit} characters"
        )


def _value(token: str) -> Any:
    t = token.strip()
    if re.fullmatch(r"[-\dx]+", t):  # whole numbers: digits bounded before int() reads them
        for part in t.split("x"):
            _bounded(part, MAX_DIGITS + 1)  # and a minus sign
    elif re.fullmatch(r"[-+.\de]+", t):  # a float's repr: 17 digits, zeros and exponent
        _bounded(t, MAX_FLOAT_CHARS)
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    if re.fullmatch(r"\d+(x\d+)+", t):
        return [int(v) for v in t.split("x")]
    if re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)(e-?\d+)?", t):
        return float(t)
    if t in ("true", "True"):
        return True
    if t in ("false", "False"):
        return False
    return t


def _args(class_name: str, body: str, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = LAYERS[class_name]
    slots = list(kind.POSITIONAL)
    for part in [p for p in body.split(",") if p.strip()]:
        if "=" in part:
            key, _, raw = part.partition("=")
            out[key.strip()] = _value(raw)
            continue
        value = _value(part)
        if isinstance(value, str) and value in ACTIVATIONS and "activation" not in slots:
            out["activation"] = value
        elif isinstance(value, str) and value in PADDINGS and "padding" in kind.ARGS:
            out["padding"] = value
        elif slots:
            out[slots.pop(0)] = value
        else:
            raise DescriptionError(f"{where}: cannot place argument {part.strip()!r}")
    return out


def parse_compact(text: str, name: str = "model") -> ModelDescription:
    """A :class:`ModelDescription` from the one-line form; DescriptionError if malformed."""
    if len(text) > MAX_CHARS:
        raise DescriptionError(f"the model line is too long ({len(text):,} characters)")
    layers: list[dict[str, Any]] = []
    shape: list[int] | None = None
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LAYER.match(text, pos)
        if m is None or m.end() == pos:
            raise DescriptionError(f"cannot read the model line at {text[pos : pos + 20]!r}")
        pos = m.end()
        cls_name, body = m.group(1), m.group(2) or ""
        if cls_name == "Input":
            values = [_value(v) for v in body.split(",") if v.strip()]
            if not values or not all(isinstance(v, int) for v in values):
                raise DescriptionError(
                    f"Input needs the input shape, e.g. Input(28,28,1), got {body!r}"
                )
            shape = [int(v) for v in values]
            continue
        where = f"layer {len(layers) + 1} ({cls_name})"
        if cls_name not in LAYERS:
            parse_layer(cls_name, {}, "layer", where)  # raises: unknown layer, with a hint
        args = _args(cls_name, body, where)
        layers.append({"class_name": cls_name, **args})
    if shape is None:
        raise DescriptionError("the model line must start with Input(...), e.g. Input(28,28,1)")
    return ModelDescription.from_dict({"name": name, "input_shape": shape, "layers": layers})
