"""The PyTorch module of a network description, with Keras' semantics where they decide a result.

One child module per description layer, named as the layer (so a checkpoint's keys read
``conv1.weight``, ``dense2.bias``), each made by its layer kind (:meth:`Layer.module`) with
Keras' initialisers (:meth:`Layer.init_`). Tensors are channels-first inside,
``(N, C, *spatial)``, as PyTorch's kernels want. The network returns logits: the final
softmax is left to :func:`predict_proba` and, stably, to the loss
(:attr:`ModelDescription.logits` says how).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from cnnlab.models.description import LayerInfo, ModelDescription
from cnnlab.models.layers import INPUT, activate
from cnnlab.models.layers.conv import same_pads
from cnnlab.models.layers.core import DenseModule as Dense
from cnnlab.models.layers.normalization import BatchNormModule as BatchNorm
from cnnlab.models.layers.pooling import GlobalPoolModule as GlobalPool
from cnnlab.models.layers.pooling import PoolModule as Pool

__all__ = [
    "BatchNorm",
    "Dense",
    "GlobalPool",
    "Network",
    "Pool",
    "activate",
    "build_module",
    "count_params",
    "keras_init_",
    "predict_proba",
    "same_pads",
]


def layer_module(info: LayerInfo) -> nn.Module:
    """The child module of one described layer (before Keras' initialisation)."""
    return info.layer.module(info)


class Network(nn.Sequential):
    """A description's network: children in layer order; ``forward`` returns logits.

    A chain runs its children one after the other (as ``nn.Sequential``, but for a final
    softmax); a graph keeps each output until the last layer that reads it has run.
    """

    def __init__(self, description: ModelDescription) -> None:
        super().__init__()
        self.description = description
        plan = description.logits
        computed = {layer.name: layer for layer in plan.layers}
        for info in description.info:
            layer = computed.get(info.layer.name, info.layer)  # the linear copy, if any
            self.add_module(info.layer.name, layer.module(info))
        self.n_forward = len(plan.layers)  # a chain computes its first n_forward layers
        # a graph: (layer, inputs, outputs to drop after it) per computed layer, the output
        program = _program(description, [x.name for x in plan.layers], plan.output)
        self.forward_plan = None if description.is_chain else (program, plan.output)

    def __getitem__(self, idx: Any) -> Any:
        """A child by position, or a slice of the children as a plain ``nn.Sequential``."""
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.forward_plan is None:  # a chain: its first n_forward children in order
            for i, module in enumerate(self):
                if i >= self.n_forward:
                    break
                x = module(x)
            return x
        program, output = self.forward_plan
        outs = {INPUT: x}
        for name, inputs, done in program:
            outs[name] = self._modules[name](*[outs[i] for i in inputs])
            for gone in done:
                del outs[gone]
        return outs[output]


def _program(
    desc: ModelDescription, computed: list[str], output: str
) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(layer, its inputs, outputs no longer needed after it) for each computed layer."""
    last_use: dict[str, int] = {}
    for step, name in enumerate(computed):
        for source in desc.by_name[name].inputs:
            last_use[source] = step
    last_use[output] = len(computed)  # kept to the end
    out = []
    for step, name in enumerate(computed):
        inputs = desc.by_name[name].inputs
        done = tuple(s for s in dict.fromkeys(inputs) if last_use.get(s) == step)
        out.append((name, inputs, done))
    return out


def keras_init_(model: nn.Module) -> None:
    """Keras' initialisers, layer by layer in description order (Glorot-uniform kernels,
    zero biases, BatchNormalization's ones and zeros, ...)."""
    desc = getattr(model, "description", None)
    if not isinstance(desc, ModelDescription):
        raise TypeError(f"{type(model).__name__} is not a cnnlab Network")
    for info in desc.info:
        info.layer.init_(model._modules[info.layer.name])  # type: ignore[arg-type]


def build_module(description: ModelDescription) -> Network:
    """A freshly initialised network (draws from torch's global RNG, in layer order)."""
    model = Network(description)
    keras_init_(model)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities, as the chapter's softmax output: (N, C, *spatial) -> (N, classes)."""
    return torch.softmax(model(x), dim=1)
