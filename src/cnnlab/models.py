"""The chapter's three MNIST CNNs, chosen by name from a plain registry.

Layer for layer as the chapter's Keras code, with Keras' defaults where they shape the
result: Glorot-uniform kernels, zero biases, and a Flatten in channels-last (H, W, C)
order, so Keras weights copy across unchanged. The networks return logits; the
chapter's final softmax is applied by :func:`predict_proba` and, stably, inside the loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class FlattenHWC(nn.Module):
    """Keras' Flatten on channels-last maps: (N, C, H, W) -> (N, H*W*C) in (H, W, C) order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


class GlobalAvgPool(nn.Module):
    """Keras' GlobalAveragePooling2D: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _features(c1: int, c2: int) -> list[tuple[str, nn.Module]]:
    # Conv2D(c1, 3, relu) -> MaxPooling2D -> Conv2D(c2, 3, relu) -> MaxPooling2D
    return [
        ("conv1", nn.Conv2d(1, c1, 3)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(c1, c2, 3)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
    ]


def case1() -> nn.Sequential:
    """Case 1: flattened feature maps into two Dense layers, with dropout 0.25."""
    return _sequential(
        _features(16, 64)
        + [
            ("flatten", FlattenHWC()),
            ("dropout1", nn.Dropout(0.25)),
            ("dense1", nn.Linear(5 * 5 * 64, 32)),
            ("relu3", nn.ReLU()),
            ("dropout2", nn.Dropout(0.25)),
            ("dense2", nn.Linear(32, 10)),
        ]
    )


def case2() -> nn.Sequential:
    """Case 2: the last conv has 10 filters, then global average pooling (then softmax)."""
    return _sequential(_features(32, 10) + [("gap", GlobalAvgPool())])


def case3() -> nn.Sequential:
    """Case 3: global average pooling of 64 maps, then a Dense layer of 10."""
    return _sequential(_features(16, 64) + [("gap", GlobalAvgPool()), ("dense", nn.Linear(64, 10))])


def _sequential(layers: list[tuple[str, nn.Module]]) -> nn.Sequential:
    model = nn.Sequential()
    for name, layer in layers:
        model.add_module(name, layer)
    keras_init_(model)
    return model


def keras_init_(model: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases (fans as Keras counts them)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


MODELS: dict[str, Callable[[], nn.Sequential]] = {"case1": case1, "case2": case2, "case3": case3}


def case_name(case: str | int) -> str:
    """Normalise ``1``, ``"1"`` or ``"case1"`` to a registry name; ValueError otherwise."""
    name = f"case{case}" if str(case).isdigit() else str(case)
    if name not in MODELS:
        raise ValueError(f"unknown case {case!r}; choose one of 1, 2, 3")
    return name


def create_model(case: str | int) -> nn.Sequential:
    """A freshly initialised model for ``case`` (uses torch's global RNG for the weights)."""
    return MODELS[case_name(case)]()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities, as the chapter's softmax output: (N, 1, 28, 28) -> (N, 10)."""
    return torch.softmax(model(x), dim=1)


_KERAS_NAMES = {
    nn.Conv2d: "Conv2D",
    nn.MaxPool2d: "MaxPooling2D",
    FlattenHWC: "Flatten",
    nn.Dropout: "Dropout",
    nn.Linear: "Dense",
    GlobalAvgPool: "GlobalAveragePooling2D",
}


def summary(model: nn.Sequential, input_shape: tuple[int, int, int] = (1, 28, 28)) -> str:
    """A Keras-like table: layer, output shape (channels-last), parameters, totals.

    ReLU modules are folded into the layer before them, as Keras' ``activation="relu"``;
    so is the final softmax of a Dense output layer.
    """
    rows: list[tuple[str, str, int]] = []
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                continue
            shape = (None, *x.shape[2:], x.shape[1]) if x.ndim == 4 else (None, *x.shape[1:])
            kind = _KERAS_NAMES.get(type(layer), type(layer).__name__)
            rows.append((f"{name} ({kind})", str(shape), count_params(layer)))
    if not isinstance(model[-1], nn.Linear):  # Case 2: softmax is a layer of its own
        rows.append(("softmax (Softmax)", str((None, 10)), 0))
    w0 = max(len(r[0]) for r in rows) + 2
    w1 = max(len(r[1]) for r in rows) + 2
    line = "-" * (w0 + w1 + 10)
    out = [line, f"{'Layer (type)':<{w0}}{'Output Shape':<{w1}}{'Param #':>10}", line]
    out += [f"{a:<{w0}}{b:<{w1}}{c:>10,}" for a, b, c in rows]
    total = sum(p.numel() for p in model.parameters())
    out += [
        line,
        f"Total params: {total:,}",
        f"Trainable params: {count_params(model):,}",
        f"Non-trainable params: {total - count_params(model):,}",
        line,
    ]
    return "\n".join(out)
