"""One check of a layer kind through every consumer: :func:`check_network`.

It takes a small description holding the kind (as a chain or a graph) and checks, with
random weights (biases, BatchNormalization statistics and the like randomised too):

- shapes: each layer's PyTorch output has the shape the description infers, and its
  module holds exactly the parameters the description counts (trainable, non-trainable);
- the NumPy engine (``cnnlab.ops``) against the PyTorch module, both in float64, layer by
  layer, to 1e-10 (relative to the largest value);
- Keras' weight layout: NumPy weights -> PyTorch state -> NumPy weights is the identity,
  and every array has the Keras shape the kind declares;
- the receptive field of every layer whose kind has a rule: the pixels the autograd
  gradient of a unit reaches lie inside its field (``exact=True``: they are its field,
  where it lies inside the input);
- the serialised forms: JSON round trip, the summary row of every layer;
- optionally (``onnx=True``) ONNX export against PyTorch, 1e-5 on probabilities.

:func:`keras_import` reads a Keras 3 Sequential config written by hand (entries from
:func:`keras_entry`), as ``import-keras`` does.

What the kind computes is checked against an independent reference in its own test module
(PyTorch's functional ops in float64, Keras' outputs); this helper checks that every part
of cnnlab agrees with the PyTorch module the kind builds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.analysis.receptive import field_states
from cnnlab.engine.numpy_engine import from_torch, to_torch_state
from cnnlab.models import ModelDescription, Network, build_module, summary
from cnnlab.models import layers as L


def randomised(desc: ModelDescription, seed: int = 0) -> Network:
    """Keras' initialisation, then every 1-D weight (biases, scales, statistics) random."""
    torch.manual_seed(seed)
    model = build_module(desc)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.ndim == 1 or key.endswith(("bias", "running_mean")):
                t.copy_(0.5 * torch.randn(t.shape, generator=g) + (0.8 if "weight" in key else 0))
    return model.double().eval()


def torch_outputs(model: Network, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer's output over the graph, channels-first (a final Dense: its logits)."""
    h = {L.INPUT: x}
    for info in model.description.info:
        name = info.layer.name
        h[name] = model._modules[name](*[h[n] for n in info.inputs])  # type: ignore[misc]
    return h


def _last(t: torch.Tensor) -> np.ndarray:
    return (t.movedim(1, -1) if t.ndim > 2 else t).detach().numpy()


def check_shapes_and_params(desc: ModelDescription, model: Network) -> None:
    x = torch.rand(2, desc.input_shape[-1], *desc.input_shape[:-1], dtype=torch.float64)
    with torch.no_grad():
        outs = torch_outputs(model, x)
    for info in desc.info:
        got = _last(outs[info.layer.name]).shape[1:]
        assert got == info.out_shape, (info.where, got, info.out_shape)
        module = model._modules[info.layer.name]
        assert module is not None
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        fixed = sum(b.numel() for b in module.buffers())
        assert (trainable, fixed) == (info.trainable, info.non_trainable), info.where


def check_numpy(desc: ModelDescription, model: Network, seed: int = 0) -> None:
    engine = from_torch(model)
    assert engine.dtype == "float64"
    x = np.random.default_rng(seed).normal(0.3, 1.0, (5, *desc.input_shape))
    ours = dict(engine.activations(x))
    with torch.no_grad():
        ref = torch_outputs(model, torch.from_numpy(x).movedim(-1, 1))
    folded = set(desc.logits.folded) | {desc.logits.output}
    for info in desc.info:
        if info.layer.name in folded:
            continue  # the torch module gives logits there: compared below
        a, b = ours[info.layer.name], _last(ref[info.layer.name])
        scale = max(1.0, float(np.abs(b).max()))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-10 * scale, info.where
    with torch.no_grad():
        logits = model(torch.from_numpy(x).movedim(-1, 1)).numpy()
    assert np.abs(engine.logits(x) - logits).max() <= 1e-10 * max(1.0, np.abs(logits).max())


def check_weights(desc: ModelDescription, model: Network) -> None:
    engine = from_torch(model)
    for info in desc.info:
        for w in info.layer.weights(info.in_shapes):
            assert engine.weights[info.layer.name][w.keras].shape == w.shape, info.where
    state = to_torch_state(engine)
    own = {k: v.numpy() for k, v in model.state_dict().items()}
    assert set(state) == set(own)
    for key, value in own.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def check_fields(desc: ModelDescription, model: Network, exact: bool) -> int:
    """Autograd support of sampled units against their fields; returns axes compared."""
    states = field_states(desc, strict=False)
    spatial = np.array(desc.input_shape[:-1])
    compared = 0
    if not len(spatial):
        return 0  # a flat input: no positions
    for info in desc.info:
        state = states[info.layer.name]
        if state is None:
            continue
        out = info.out_shape[:-1]
        flat = len(info.out_shape) == 1
        units = [()] if flat else [(0,) * len(out), tuple(n // 2 for n in out)]
        for index in units:
            x = torch.rand(1, desc.input_shape[-1], *spatial, dtype=torch.float64) + 0.5
            x.requires_grad_(True)
            h = torch_outputs(model, x)[info.layer.name]
            h[(0, slice(None), *index)].sum().backward()
            assert x.grad is not None
            nz = np.argwhere(x.grad[0].abs().sum(0).numpy() > 0)
            want = np.array(state.field.interval(index if index else (0,) * len(spatial)))
            clipped = np.stack([np.maximum(want[:, 0], 0), np.minimum(want[:, 1], spatial - 1)], 1)
            where = f"{info.where} unit {index}"
            if not len(nz):
                continue
            got = np.stack([nz.min(0), nz.max(0)], axis=1)
            assert (got[:, 0] >= clipped[:, 0]).all() and (got[:, 1] <= clipped[:, 1]).all(), where
            if exact:
                inside = (want[:, 0] >= 0) & (want[:, 1] <= spatial - 1)
                np.testing.assert_array_equal(got[inside], want[inside], err_msg=where)
                compared += int(inside.sum())
    return compared


def check_forms(desc: ModelDescription) -> None:
    again = ModelDescription.from_dict(desc.to_dict())
    assert again == desc and again.to_dict() == desc.to_dict()
    table = summary(desc)
    for info in desc.info:
        assert f"{info.layer.name} ({info.layer.class_name})" in table


def check_onnx(model: Network, tmp_path: Path) -> None:
    import onnxruntime as ort

    from cnnlab.interop.onnx_export import export_model

    desc = model.description
    model = model.float()
    path = export_model(model, tmp_path / "m.onnx").path
    x = np.random.default_rng(1).normal(0.3, 1.0, (6, desc.input_shape[-1], *desc.input_shape[:-1]))
    x = x.astype(np.float32)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x})
    assert np.abs(got - want).max() <= 1e-5


_F32 = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}


def keras_entry(class_name: str, name: str, **config: Any) -> dict[str, Any]:
    """One layer of a Keras 3 config.json, as Keras 3.15 writes it (name, trainable, dtype)."""
    config = {"name": name, "trainable": True, "dtype": _F32, **config}
    return {"module": "keras.layers", "class_name": class_name, "config": config}


def keras_import(input_shape: tuple[int, ...], *entries: dict[str, Any]) -> ModelDescription:
    """The description ``import-keras`` reads from a Sequential of these layer entries."""
    from cnnlab.interop.keras_config import translate

    inp = {"class_name": "InputLayer", "config": {"batch_shape": [None, *input_shape]}}
    config = {"module": "keras", "class_name": "Sequential", "config": {"layers": [inp, *entries]}}
    return translate(config, Path("by_hand.keras"), "by_hand").description


def keras_sequential(shape: list[int], *layers: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A Sequential's config.json as Keras 3.15 writes it (every argument explicit)."""
    inp = {"class_name": "InputLayer", "config": {"batch_shape": [None, *shape]}}
    inp["config"] |= {"dtype": "float32", "sparse": False, "ragged": False, "name": "input_layer"}
    entries = [
        {"module": "keras.layers", "class_name": cls, "registered_name": None,
         "config": {"name": f"layer_{i}", "trainable": True, "dtype": _F32, **cfg}}
        for i, (cls, cfg) in enumerate(layers)
    ]  # fmt: skip
    return {"module": "keras", "class_name": "Sequential", "config": {"layers": [inp, *entries]}}


def one_line_error(line: str, message: str, kinds: tuple[str, ...]) -> None:
    """The one-line description ``line`` is refused with one line that names a layer of one
    of ``kinds`` (its Keras class names) and holds ``message``."""
    from cnnlab.models import parse_compact

    try:
        parse_compact(line)
    except L.DescriptionError as exc:
        text = str(exc)
    else:
        raise AssertionError(f"{line!r} was accepted")
    assert re.match(rf"^layer \d+ \(({'|'.join(kinds)})", text), text
    assert message in text and "\n" not in text, text


def check_network(
    desc: ModelDescription,
    *,
    seed: int = 0,
    exact_fields: bool = False,
    onnx_dir: Path | None = None,
    **_: Any,
) -> Network:
    """Every check above on ``desc`` (see the module docstring); returns the float64 network."""
    model = randomised(desc, seed)
    check_shapes_and_params(desc, model)
    check_numpy(desc, model, seed)
    check_weights(desc, model)
    check_fields(desc, model, exact_fields)
    check_forms(desc)
    if onnx_dir is not None:
        check_onnx(randomised(desc, seed), onnx_dir)
    return model
