"""Network descriptions: typed layers in Keras' vocabulary, the registry, and what derives.

>>> from cnnlab.models import resolve, build_module, summary
>>> desc = resolve("case1")  # or a .json/.yaml file, or "Input(28,28,1) Conv2D(8,3,relu) ..."
>>> model = build_module(desc)  # the PyTorch module, Keras' initialisers and semantics
"""

from cnnlab.models import zoo  # noqa: F401  (it registers the templates)
from cnnlab.models.compact import parse_compact
from cnnlab.models.description import LayerInfo, ModelDescription
from cnnlab.models.files import load_description, save_description
from cnnlab.models.layers import DescriptionError
from cnnlab.models.registry import CASES, REGISTRY, case_name, get, resolve
from cnnlab.models.summary import summary
from cnnlab.models.torch_module import (
    Network,
    build_module,
    count_params,
    keras_init_,
    predict_proba,
)


def create_model(model: str | int | ModelDescription) -> Network:
    """A freshly initialised network: a description, a registry name, or a case (1, 2, 3)."""
    if isinstance(model, ModelDescription):
        return build_module(model)
    name = case_name(model) if str(model).isdigit() else str(model)
    return build_module(get(name))


__all__ = [
    "CASES",
    "REGISTRY",
    "DescriptionError",
    "LayerInfo",
    "ModelDescription",
    "Network",
    "build_module",
    "case_name",
    "count_params",
    "create_model",
    "get",
    "keras_init_",
    "load_description",
    "parse_compact",
    "predict_proba",
    "resolve",
    "save_description",
    "summary",
]
