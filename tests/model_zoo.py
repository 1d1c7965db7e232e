"""The description zoo that the engine, receptive-field, layer-walk and shift tests share.

The chapter's cases, speedrun, the four keras-zoo architectures (their layers as Keras
saved them) and a dozen descriptions drawn at random over the whole vocabulary, 1-D to 3-D.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.models import DescriptionError, ModelDescription, Network, get
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


def zoo() -> dict[str, ModelDescription]:
    """Every description the engine is checked on, by name."""
    out = {name: get(name) for name in ("case1", "case2", "case3", "speedrun")}
    out |= {name: parse_compact(line, name) for name, line in KERAS_ZOO.items()}
    return out | {f"random{s}": random_description(s) for s in range(N_RANDOM)}


ZOO = zoo()


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
