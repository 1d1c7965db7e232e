"""The description zoo that the engine, receptive-field, layer-walk and shift tests share.

The chapter's cases, speedrun, the four keras-zoo architectures (their layers as Keras
saved them), a dozen chains drawn at random over the core vocabulary, 1-D to 3-D, a dozen
random graphs (residual blocks and branches joined by every merge, 1-D to 3-D), and a chain
through every activation. Layer kinds beyond the core have their own tests
(``tests/models/layers/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.models import DescriptionError, ModelDescription, Network, get
from cnnlab.models import layers as L
from cnnlab.models.compact import parse_compact

KERAS_ZOO_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "keras-zoo"
KERAS_ZOO = {  # the layers of /work/shared/data/keras-zoo/*.keras (config.json), Keras' names
    "conv2d_same_strides": "Input(28,28,1) Conv2D(8,5,2,same,relu) Conv2D(16,3,same,tanh) "
    "AveragePooling2D(2) Flatten Dense(10,softmax)",
    "conv1d_timeseries": "Input(100,6) Conv1D(16,7,same,relu) MaxPooling1D(2) "
    "Conv1D(32,5,2,relu) GlobalAveragePooling1D Dense(4,softmax)",
    "conv3d_video": "Input(8,16,16,1) Conv3D(4,3,relu) MaxPooling3D(2) "
    "Conv3D(8,1x3x3,same,relu) Flatten Dense(5,softmax)",
    "conv2d_bn_dilated": "Input(28,28,1) Conv2D(8,3,relu,dilation_rate=2) BatchNormalization "
    "MaxPooling2D(3,2,same) Conv2D(12,3,use_bias=false) Activation(relu) GlobalMaxPooling2D "
    "Dropout(0.3) Dense(10,softmax)",
}
ACTIVATIONS = ("relu", "elu", "tanh", "sigmoid", "softmax", "linear")
N_RANDOM = 12


def _axes(rng: np.random.Generator, rank: int, low: int, high: int) -> list[int]:
    """Per-axis sizes: all equal or (half the time) drawn per axis."""
    if rng.random() < 0.5:
        return [int(rng.integers(low, high + 1))] * rank
    return [int(v) for v in rng.integers(low, high + 1, rank)]


def _draw(rng: np.random.Generator, rank: int, name: str) -> ModelDescription:
    """One attempt; DescriptionError where the layers do not fit the shapes."""
    spatial = {1: [int(rng.integers(16, 41))], 2: _axes(rng, 2, 12, 20), 3: _axes(rng, 3, 7, 10)}
    layers: list[dict[str, Any]] = []
    add = layers.append
    if rng.random() < 0.4:
        add({"class_name": "Rescaling", "scale": float(rng.uniform(-2, 2)), "offset": 0.3})
    if rng.random() < 0.4:
        pad = [[int(v) for v in rng.integers(0, 3, 2)] for _ in range(rank)]
        add({"class_name": f"ZeroPadding{rank}D", "padding": pad})
    for block in range(int(rng.integers(1, 4 if rank < 3 else 3))):
        mode = rng.choice(["plain", "stride", "dilation"])
        add(
            {
                "class_name": f"Conv{rank}D",
                "filters": int(rng.integers(1, 7)),
                "kernel_size": _axes(rng, rank, 1, 4),
                "strides": _axes(rng, rank, 1, 2) if mode == "stride" else 1,
                "dilation_rate": _axes(rng, rank, 1, 2) if mode == "dilation" else 1,
                "padding": str(rng.choice(["same", "valid"])),
                "activation": str(rng.choice(ACTIVATIONS)),
                "use_bias": bool(rng.random() < 0.7),
            }
        )
        if rng.random() < 0.4:
            eps = float(rng.choice([1e-3, 1e-5, 0.1]))
            center, scale_ = [(True, True), (False, True), (True, False)][(len(name) + block) % 3]
            add({"class_name": "BatchNormalization", "epsilon": eps, "center": center})
            layers[-1]["scale"] = scale_
        r = rng.random()
        if r < 0.15:
            add({"class_name": "ReLU"})
        elif r < 0.35:
            add({"class_name": "Activation", "activation": str(rng.choice(ACTIVATIONS))})
        if rng.random() < 0.7:
            add(
                {
                    "class_name": f"{rng.choice(['Max', 'Average'])}Pooling{rank}D",
                    "pool_size": _axes(rng, rank, 1, 3),
                    "strides": _axes(rng, rank, 1, 3) if rng.random() < 0.5 else None,
                    "padding": str(rng.choice(["same", "valid"])),
                }
            )
        if rng.random() < 0.2:
            add({"class_name": "Dropout", "rate": 0.3})
    head = rng.choice(["Flatten", f"GlobalMaxPooling{rank}D", f"GlobalAveragePooling{rank}D"])
    add({"class_name": str(head)})
    if rng.random() < 0.4:
        add({"class_name": "Dense", "units": int(rng.integers(3, 9))})
        layers[-1]["activation"] = str(rng.choice(ACTIVATIONS))
    classes, end = int(rng.integers(2, 6)), rng.random()
    if end < 0.6:
        add({"class_name": "Dense", "units": classes, "activation": "softmax"})
    elif end < 0.8:
        add({"class_name": "Dense", "units": classes})
        add({"class_name": "Softmax"})
    elif end < 0.9:
        add({"class_name": "Dense", "units": classes})
        add({"class_name": "Activation", "activation": "softmax"})
    else:
        add({"class_name": "Dense", "units": classes, "use_bias": False})
    for layer in layers:
        if layer.get("strides", 0) is None:
            del layer["strides"]
    shape = [*spatial[rank], int(rng.integers(1, 4))]
    return ModelDescription.from_dict({"name": name, "input_shape": shape, "layers": layers})


def random_description(seed: int) -> ModelDescription:
    """A valid description drawn over the whole vocabulary; rank 1, 2, 3 by ``seed % 3``."""
    rng = np.random.default_rng(seed)
    for _ in range(200):
        try:
            return _draw(rng, seed % 3 + 1, f"random{seed}")
        except DescriptionError:  # e.g. a map pooled below a kernel's size: draw again
            continue
    raise AssertionError(f"no valid description drawn for seed {seed}")


MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate")
N_GRAPHS = 12


class _Graph:
    """A graph being drawn: layers as description dicts, named, each with its inputs."""

    def __init__(self, rank: int) -> None:
        self.rank, self.layers, self.width = rank, [], {}

    def add(self, cls: str, inputs: list[str], width: int | None = None, **args: Any) -> str:
        name = f"{cls.lower()}_{len(self.layers)}"
        self.layers.append({"class_name": cls, "name": name, "inputs": inputs, **args})
        self.width[name] = width if width is not None else self.width[inputs[0]]
        return name

    def conv(self, rng: np.random.Generator, src: str, width: int, **args: Any) -> str:
        args = {"kernel_size": int(rng.integers(1, 4)), "padding": "same", **args}
        act = str(rng.choice(["relu", "tanh", "linear", "elu"]))
        return self.add(f"Conv{self.rank}D", [src], width, filters=width, activation=act, **args)


def _residual(g: _Graph, rng: np.random.Generator, src: str, op: str) -> str:
    """conv-conv on the main path, the input (or a 1x1 conv) as the shortcut, merged."""
    width = int(rng.integers(2, 6))
    strides = int(rng.integers(1, 3))
    a = g.conv(rng, src, width, strides=strides)
    if rng.random() < 0.5:
        a = g.add("BatchNormalization", [a])
    b = g.conv(rng, a, width)
    short = src
    if strides > 1 or g.width[src] != width or rng.random() < 0.3:
        short = g.conv(rng, src, width, kernel_size=1, strides=strides)
    merged = g.add(op, [b, short])
    return g.add("Activation", [merged], activation="relu")


def _branches(g: _Graph, rng: np.random.Generator, src: str, op: str) -> str:
    """Two or three branches from one map (convolutions, a pooling one), then merged."""
    n = 2 if op == "Subtract" else int(rng.integers(2, 4))
    width = int(rng.integers(2, 5))
    outs = []
    for i in range(n):
        if i == n - 1 and rng.random() < 0.5:
            kind = str(rng.choice(["Max", "Average"]))
            pool = g.add(f"{kind}Pooling{g.rank}D", [src], pool_size=3, strides=1, padding="same")
            outs.append(g.conv(rng, pool, width, kernel_size=1))
        else:
            outs.append(g.conv(rng, src, int(rng.integers(2, 5)) if op == "Concatenate" else width))
    total = sum(g.width[o] for o in outs) if op == "Concatenate" else width
    return g.add(op, outs, total)


def random_graph(seed: int) -> ModelDescription:
    """A valid random graph of rank 1 + seed % 3: a stem, residual blocks and branches joined
    by the merge ``MERGES[seed % 7]`` (and others drawn), pooling, a head."""
    rng = np.random.default_rng(1000 + seed)
    rank = seed % 3 + 1
    spatial = {1: [int(rng.integers(16, 33))], 2: _axes(rng, 2, 8, 14), 3: _axes(rng, 3, 5, 8)}
    for _ in range(200):
        g = _Graph(rank)
        g.width["input"] = int(rng.integers(1, 4))
        h = g.conv(rng, "input", int(rng.integers(2, 6)))
        ops = [MERGES[seed % len(MERGES)]] + [str(rng.choice(MERGES)) for _ in range(2)]
        for op in ops[: int(rng.integers(1, 4 if rank < 3 else 3))]:
            h = (_residual if op != "Concatenate" and rng.random() < 0.5 else _branches)(
                g, rng, h, op
            )
            if rng.random() < 0.4:
                h = g.add(f"MaxPooling{rank}D", [h], pool_size=2, padding="same")
        head = str(
            rng.choice(["Flatten", f"GlobalMaxPooling{rank}D", f"GlobalAveragePooling{rank}D"])
        )
        h = g.add(head, [h])
        g.add("Dense", [h], units=int(rng.integers(2, 6)), activation="softmax")
        shape = [*spatial[rank], g.width["input"]]
        data = {"name": f"graph{seed}", "input_shape": shape, "layers": g.layers}
        try:
            return ModelDescription.from_dict(data)
        except DescriptionError:  # a map too small for a later window: draw again
            continue
    raise AssertionError(f"no valid graph drawn for seed {seed}")


def every_activation() -> ModelDescription:
    """A chain through each of Keras' activations, as a Conv1D's and an Activation layer's."""
    acts = [a for a in L.ACTIVATIONS if a not in ("softmax", "exponential")]  # (both below)
    line = " ".join(
        f"Conv1D(3,1,{a}) Activation({b})" for a, b in zip(acts, acts[::-1], strict=True)
    )
    return parse_compact(
        f"Input(9,2) {line} Conv1D(3,1,tanh) Activation(exponential) Conv1D(3,2,softmax) "
        "Activation(softmax) Conv1D(3,1,exponential) GlobalAveragePooling1D Dense(3,softmax)",
        "activations",
    )


def zoo() -> dict[str, ModelDescription]:
    """Every description the engine is checked on, by name."""
    out = {name: get(name) for name in ("case1", "case2", "case3", "speedrun")}
    out |= {name: parse_compact(line, name) for name, line in KERAS_ZOO.items()}
    out |= {f"random{s}": random_description(s) for s in range(N_RANDOM)}
    out |= {f"graph{s}": random_graph(s) for s in range(N_GRAPHS)}
    return out | {"activations": every_activation()}


ZOO = zoo()


def torch_outputs(model: Network, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer's output (channels-last) from the torch module on x (N, *spatial, C),
    over the graph; a final layer whose softmax the loss takes gives its logits."""
    desc = model.description
    h = {L.INPUT: torch.from_numpy(x).movedim(-1, 1)}
    with torch.no_grad():
        for info in desc.info:
            name = info.layer.name
            h[name] = model._modules[name](*[h[n] for n in info.inputs])  # type: ignore[misc]
    return {k: v.movedim(1, -1).numpy() if v.ndim > 2 else v.numpy() for k, v in h.items()}


def randomize(model: Network, seed: int) -> Network:
    """Random biases, BN parameters and moving statistics (Glorot kernels kept): no zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.copy_(0.5 + 1.5 * torch.rand(t.shape, generator=g))
            elif key.endswith(("running_mean", "bias")):
                t.copy_(0.3 * torch.randn(t.shape, generator=g))
            elif t.ndim == 1:  # BatchNormalization's gamma
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
    return model
