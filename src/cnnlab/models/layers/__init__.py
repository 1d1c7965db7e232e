"""The layer kinds of a network description, one class per kind, in Keras' vocabulary.

Importing this package registers every kind (:data:`LAYERS`: Keras class name -> class).
A new kind is one module here with its tests: a class that declares its Keras names and
arguments and answers :class:`Layer`'s questions (shape, weights, PyTorch module, NumPy
forward pass, receptive-field geometry), decorated with :func:`register`. Every module of
this package is imported here, so nothing else lists the kinds.
"""

import importlib
import pkgutil

from cnnlab.models.layers.activations import ACTIVATIONS, activate, activate_numpy
from cnnlab.models.layers.base import (
    INPUT,
    LAYERS,
    NAME_PATTERN,
    REQUIRED,
    RESERVED_NAMES,
    CapabilityError,
    DescriptionError,
    Layer,
    Weight,
    class_names,
    default_name,
    parse_layer,
)
from cnnlab.models.layers.conv import PADDINGS, Conv
from cnnlab.models.layers.core import (
    Activation,
    Dense,
    Dropout,
    Pointwise,
    ReLU,
    Rescaling,
    Softmax,
)
from cnnlab.models.layers.merge import Concatenate, Merge
from cnnlab.models.layers.normalization import BatchNormalization
from cnnlab.models.layers.pooling import GlobalPool, Pool
from cnnlab.models.layers.shaping import Flatten, ZeroPadding

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

CLASS_NAMES: tuple[str, ...] = class_names()

__all__ = [
    "ACTIVATIONS",
    "CLASS_NAMES",
    "INPUT",
    "LAYERS",
    "NAME_PATTERN",
    "PADDINGS",
    "REQUIRED",
    "RESERVED_NAMES",
    "Activation",
    "BatchNormalization",
    "CapabilityError",
    "Concatenate",
    "Conv",
    "Dense",
    "DescriptionError",
    "Dropout",
    "Flatten",
    "GlobalPool",
    "Layer",
    "Merge",
    "Pointwise",
    "Pool",
    "ReLU",
    "Rescaling",
    "Softmax",
    "Weight",
    "ZeroPadding",
    "activate",
    "activate_numpy",
    "default_name",
    "parse_layer",
]
