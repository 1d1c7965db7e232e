"""BatchNormalization: Keras' formulas (biased variance, moving statistics with Keras'
momentum) written out in NumPy here; LayerNormalization: Keras 3.15's (its axes, weights'
shapes and broadcasting) written out in NumPy and PyTorch's layer_norm in float64; both
through every consumer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.analysis.receptive import receptive_fields
from cnnlab.models import DescriptionError, ModelDescription, build_module, parse_compact
from cnnlab.models import layers as L
from cnnlab.models.layers.normalization import LayerNormalization, LayerNormModule

from .helpers import (
    check_network,
    check_numpy,
    check_weights,
    keras_entry,
    keras_import,
    randomised,
)

CASES = [
    "Input(9,3) BatchNormalization(epsilon=0.01) Conv1D(2,3) BatchNormalization(center=false) "
    "Flatten Dense(2,softmax)",
    "Input(5,6,2) BatchNormalization(scale=false,momentum=0.5) GlobalAveragePooling2D "
    "Dense(2,softmax)",
]


@pytest.mark.parametrize("line", CASES)
def test_every_consumer(line: str) -> None:
    check_network(parse_compact(line), exact_fields=True)


def test_training_step_as_keras_defines_it() -> None:
    model = build_module(parse_compact("Input(4,5,3) BatchNormalization(momentum=0.9)")).double()
    bn = model.batch_normalization
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 0.3], dtype=torch.float64))
    x = np.random.default_rng(2).normal(1, 2, (6, 4, 5, 3))
    y = model.train()(torch.from_numpy(x).movedim(-1, 1)).detach().movedim(1, -1).numpy()
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))  # the biased variance, as Keras
    want = (x - mean) / np.sqrt(var + 1e-3) * [1.0, 2.0, 0.5] + [0.0, -1.0, 0.3]
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * var, rtol=1e-12)


def test_keras_axis_must_be_the_channels() -> None:
    layer = L.parse_layer("BatchNormalization", {}, "bn", "here")
    desc = parse_compact("Input(4,4,2) BatchNormalization")
    assert layer.check_keras({"axis": -1}, desc.info[0]) is None
    assert layer.check_keras({"axis": 3}, desc.info[0]) is None
    assert "axis=1 is not supported" in str(layer.check_keras({"axis": 1}, desc.info[0]))


# ---------------------------------------------------------------- LayerNormalization

LN_CASES = [
    "Input(10) Dense(6) LayerNormalization Dense(2,softmax)",
    "Input(9,3) Conv1D(4,3) LayerNormalization(epsilon=0.01) Flatten Dense(2,softmax)",
    "Input(6,5,2) LayerNormalization(center=false) Conv2D(3,3) LayerNormalization(scale=false) "
    "GlobalAveragePooling2D Dense(2,softmax)",
    "Input(4,4,3,2) Conv3D(2,2) LayerNormalization(axis=4) Flatten Dense(2)",
    "Input(6,5,3) Conv2D(4,3) LayerNormalization(axis=1x2x3) Flatten Dense(2,softmax)",
    "Input(7,4) LayerNormalization(axis=1,rms_scaling=true) Conv1D(2,3) Flatten Dense(2)",
    "Input(5,4,3,2) LayerNormalization(axis=2x4) Conv3D(2,2) GlobalAveragePooling3D Dense(2)",
]


def _ln_desc(input_shape: tuple[int, ...], **args: object) -> ModelDescription:
    layer = {"class_name": "LayerNormalization", "name": "ln", **args}
    return ModelDescription.from_dict(
        {"name": "ln", "input_shape": list(input_shape), "layers": [layer]}
    )


def _random_affine(model: torch.nn.Module, seed: int) -> None:
    """gamma and beta random (Keras starts them at ones and zeros), whatever their rank."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LayerNormModule):
                for p in (module.weight, module.bias):
                    if p is not None:
                        p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) + 0.5)


@pytest.mark.parametrize("line", LN_CASES)
def test_layer_norm_through_every_consumer(line: str) -> None:
    desc = parse_compact(line)
    check_network(desc, exact_fields=True)  # a field stops at a LayerNormalization over positions
    model = randomised(desc)
    _random_affine(model, 4)
    check_numpy(desc, model)
    check_weights(desc, model)


def keras_layer_norm(
    x: np.ndarray, axes: list[int], gamma: np.ndarray | None, beta: np.ndarray | None, eps: float
) -> np.ndarray:
    """Keras 3.15's LayerNormalization written out on (N, *spatial, C): the axes sorted as
    written, gamma and beta reshaped onto them (ops.layer_normalization's _broadcast)."""
    axes = sorted(axes)
    shape = [1] * x.ndim
    for a in axes:
        shape[a] = x.shape[a]
    mean = x.mean(axis=tuple(axes), keepdims=True)
    var = x.var(axis=tuple(axes), keepdims=True)  # biased, as ops.moments
    y = (x - mean) / np.sqrt(var + eps)
    y = y * gamma.reshape(shape) if gamma is not None else y
    return y + beta.reshape(shape) if beta is not None else y


LN_AXES = [  # (input without the batch axis, Keras' axis, the weights' shape)
    ((7,), -1, (7,)),
    ((7,), [1], (7,)),
    ((9, 3), -1, (3,)),
    ((9, 3), [1, 2], (9, 3)),
    ((9, 3), 1, (9,)),
    ((20, 30, 4), [1, 2, 3], (20, 30, 4)),  # Keras' docstring: gamma (20, 30, 40) there
    ((6, 5, 4), [3, 1], (6, 4)),  # sorted: [1, 3]
    ((6, 5, 4), [1, -1], (4, 6)),  # sorted as written: [-1, 1]
    ((6, 5, 4), [-2, -1], (5, 4)),
    ((4, 3, 5, 2), [2, 3], (3, 5)),
]


@pytest.mark.parametrize(("shape", "axis", "weight_shape"), LN_AXES)
@pytest.mark.parametrize(("center", "scale"), [(True, True), (False, True), (True, False)])
def test_layer_norm_against_keras_and_torch(
    shape: tuple[int, ...], axis: int | list[int], weight_shape: tuple[int, ...],
    center: bool, scale: bool,
) -> None:  # fmt: skip
    desc = _ln_desc(shape, axis=axis, center=center, scale=scale, epsilon=0.01)
    info = desc.info[0]
    weights = info.layer.weights(info.in_shapes)
    assert [w.keras for w in weights] == ["gamma"] * scale + ["beta"] * center
    assert all(w.shape == weight_shape for w in weights)
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 2.0, (3, *shape))
    w = {v.keras: rng.normal(0.5, 1.0, weight_shape) for v in weights}
    axes = [axis] if isinstance(axis, int) else axis
    want = keras_layer_norm(x, axes, w.get("gamma"), w.get("beta"), 0.01)
    np.testing.assert_allclose(info.layer.forward_numpy([x], w), want, rtol=1e-12, atol=1e-12)
    module = info.layer.module(info).double()
    with torch.no_grad():
        for v in weights:
            getattr(module, v.torch).copy_(torch.from_numpy(v.to_torch(w[v.keras])))
        t = torch.from_numpy(x)
        got = module(t.movedim(-1, 1) if x.ndim > 2 else t)
    got = got.movedim(1, -1) if x.ndim > 2 else got
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    canonical = sorted(a % (len(shape) + 1) for a in axes)
    if canonical == list(range(len(shape) + 1 - len(axes), len(shape) + 1)):
        # trailing axes, in order: PyTorch's own layer_norm on the channels-last tensor
        normalised = tuple(shape[a - 1] for a in canonical)
        gamma, beta = (torch.from_numpy(w[k]).reshape(normalised) if k in w else None
                       for k in ("gamma", "beta"))  # fmt: skip
        ref = F.layer_norm(torch.from_numpy(x), normalised, gamma, beta, eps=0.01)
        np.testing.assert_allclose(ref.numpy(), want, rtol=1e-12, atol=1e-12)


def test_layer_norm_rms_scaling_as_keras_defines_it() -> None:
    desc = _ln_desc((6, 4), axis=-1, rms_scaling=True, center=True)
    info = desc.info[0]
    assert [w.keras for w in info.layer.weights(info.in_shapes)] == ["gamma"]
    x = np.random.default_rng(6).normal(1.0, 2.0, (3, 6, 4))
    gamma = np.array([1.0, 2.0, 0.5, -1.0])
    want = x / np.sqrt(x.var(-1, keepdims=True) + 1e-3) * gamma  # the variance, not centred
    np.testing.assert_allclose(info.layer.forward_numpy([x], {"gamma": gamma}), want, rtol=1e-12)


def test_layer_norm_is_per_example_in_training_too() -> None:
    model = build_module(parse_compact("Input(5,3) LayerNormalization(axis=1x2)")).double()
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    both = model.train()(x)
    alone = model.eval()(x[:1])
    np.testing.assert_allclose(both[:1].detach().numpy(), alone.detach().numpy(), rtol=1e-13)


def test_layer_norm_fields() -> None:
    channels = parse_compact("Input(8,8,2) Conv2D(3,3) LayerNormalization MaxPooling2D")
    fields = receptive_fields(channels)
    assert fields[1] == fields[0]  # pointwise over the channels
    spatial = parse_compact("Input(8,8,2) Conv2D(3,3) LayerNormalization(axis=1x2x3)")
    with pytest.raises(L.CapabilityError, match="every unit reads every position") as e:
        receptive_fields(spatial)
    assert "layer 'layer_normalization' (LayerNormalization) has no receptive-field rule" in str(
        e.value
    )


def test_layer_norm_keras_config_imports() -> None:
    init = {"module": "keras.initializers", "class_name": "Ones", "config": {}}
    common = {"epsilon": 0.001, "center": True, "scale": True, "rms_scaling": False,
              "beta_initializer": init | {"class_name": "Zeros"}, "gamma_initializer": init,
              "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
              "gamma_constraint": None}  # fmt: skip
    desc = keras_import(
        (6, 5, 3),
        keras_entry("LayerNormalization", "ln", axis=[-1], **common),  # as Keras 3.15 writes it
        keras_entry("LayerNormalization", "ln2", axis=[1, 2, 3], **common),
    )
    assert [x.layer.weights(x.in_shapes)[0].shape for x in desc.info] == [(3,), (6, 5, 3)]
    assert desc.layers[1] == LayerNormalization(
        name="ln2", axis=(1, 2, 3), epsilon=0.001, center=True, scale=True, rms_scaling=False
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"axis": 0}, "axis 0 is the batch axis"),
        ({"axis": [1, 0]}, "axis 0 is the batch axis"),
        ({"axis": 4}, "axis 4 is not an axis of its 6x5x3 input"),
        ({"axis": -4}, "axis -4 is not an axis"),
        ({"axis": [3, -1]}, "names one axis twice"),
        ({"axis": []}, "axis needs at least one axis"),
        ({"axis": "x"}, "axis must be a whole number"),
        ({"epsilon": 0}, "epsilon must be in"),
        ({"rms_scaling": 1}, "rms_scaling must be true or false"),
    ],
)
def test_layer_norm_bad_arguments(args: dict[str, object], words: str) -> None:
    with pytest.raises(DescriptionError, match=r"^layer 1 \(LayerNormalization\): ") as e:
        _ln_desc((6, 5, 3), **args)
    assert "\n" not in str(e.value) and words in str(e.value)
