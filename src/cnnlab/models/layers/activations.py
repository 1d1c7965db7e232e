"""Keras' activation functions by name, each in PyTorch and in NumPy, defined once.

The definitions are Keras 3's (``keras.activations``): ``gelu`` is the exact one (erf;
Keras' default ``approximate=False``), ``hard_sigmoid`` is ``relu6(x + 3) / 6``,
``leaky_relu`` has slope 0.2, ``selu`` uses Keras' constants. ``swish`` is ``silu`` and
``hard_swish`` is ``hard_silu``, as in Keras. ``softmax`` is over the channel axis: the last
axis in the channels-last NumPy layout, axis 1 in PyTorch's channels-first one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from cnnlab import ops

Array = NDArray[Any]
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
LEAKY_SLOPE = 0.2  # keras.activations.leaky_relu's default


def _sigmoid(x: Array) -> Array:
    e = np.exp(-np.abs(x))  # stable on both sides: exp of a non-positive number only
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: Array) -> Array:
    return np.logaddexp(x.dtype.type(0), x)


def _elu(x: Array) -> Array:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _erf(x: Array) -> Array:
    # torch's erf (a core dependency, CPU, the array's own precision): SciPy is no longer
    # installed with cnnlab's core, and NumPy has no erf.
    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x))).numpy().astype(x.dtype)


def _relu6(x: Array) -> Array:
    return np.clip(x, 0, 6)


def _hard_sigmoid(x: Array) -> Array:
    return _relu6(x + 3) / x.dtype.type(6)


TORCH: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "relu": torch.relu,
    "relu6": lambda x: F.hardtanh(x, 0.0, 6.0),
    "elu": F.elu,
    "selu": lambda x: SELU_SCALE * F.elu(x, SELU_ALPHA),
    "gelu": lambda x: F.gelu(x, approximate="none"),
    "silu": F.silu,
    "swish": F.silu,
    "mish": lambda x: x * torch.tanh(F.softplus(x)),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": lambda x: F.hardtanh(x + 3, 0.0, 6.0) / 6,
    "hard_silu": lambda x: x * (F.hardtanh(x + 3, 0.0, 6.0) / 6),
    "hard_swish": lambda x: x * (F.hardtanh(x + 3, 0.0, 6.0) / 6),
    "softplus": F.softplus,
    "softsign": F.softsign,
    "leaky_relu": lambda x: F.leaky_relu(x, LEAKY_SLOPE),
    "exponential": torch.exp,
    "softmax": lambda x: torch.softmax(x, dim=1),
}

NUMPY: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": ops.relu,
    "relu6": _relu6,
    "elu": _elu,
    "selu": lambda x: (
        x.dtype.type(SELU_SCALE)
        * np.where(x > 0, x, x.dtype.type(SELU_ALPHA) * np.expm1(np.minimum(x, 0)))
    ),
    "gelu": lambda x: x * (1 + _erf(x / x.dtype.type(np.sqrt(2)))) / 2,
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),
    "softplus": _softplus,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "leaky_relu": lambda x: np.where(x >= 0, x, x * x.dtype.type(LEAKY_SLOPE)),
    "exponential": np.exp,
    "softmax": lambda x: ops.softmax(x, axis=-1),
}

ACTIVATIONS: tuple[str, ...] = tuple(TORCH)
assert set(TORCH) == set(NUMPY)


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    """Keras' activation ``name`` on a channels-first tensor (softmax over axis 1)."""
    return TORCH[name](x)


def activate_numpy(x: Array, name: str) -> Array:
    """Keras' activation ``name`` on a channels-last array (softmax over the last axis)."""
    return NUMPY[name](x)
