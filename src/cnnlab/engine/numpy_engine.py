"""A NumPy inference engine: any network description re-computed with :mod:`cnnlab.ops` alone.

A :class:`NumpyModel` is a :class:`~cnnlab.models.ModelDescription` plus its weights in the
layouts Keras (and the chapter) use, channels-last, named as Keras names them: a ConvND
``kernel`` (*k, C_in, C_out) and ``bias``, a Dense ``kernel`` (in, out), BatchNormalization's
``gamma``, ``beta``, ``moving_mean`` and ``moving_variance``. :func:`from_torch` converts a
:class:`~cnnlab.models.Network`'s weights once (conv (out, in, *k) -> (*k, in, out), dense
(out, in) -> (in, out)); from then on only NumPy runs. If its probabilities equal PyTorch's,
the mechanism the chapter describes is the whole story.
"""

from __future__ import annotations

import copy
import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab import fileio, ops
from cnnlab.errors import CnnlabError
from cnnlab.models import layers as L
from cnnlab.models.description import LayerInfo, ModelDescription

NPZ_FORMAT = "cnnlab-numpy-2"
DTYPES = ("float32", "float64")
Array = NDArray[Any]
Weights = dict[str, dict[str, Array]]  # layer name -> Keras weight name -> array


def weight_shapes(info: LayerInfo) -> dict[str, tuple[int, ...]]:
    """The arrays one layer holds, in Keras' order (``model.weights.h5``'s vars/0, 1, ...)."""
    layer = info.layer
    if isinstance(layer, L.Conv):
        out = {"kernel": (*layer.kernel_size, info.in_shape[-1], layer.filters)}
        return out | ({"bias": (layer.filters,)} if layer.use_bias else {})
    if isinstance(layer, L.Dense):
        out = {"kernel": (info.in_shape[0], layer.units)}
        return out | ({"bias": (layer.units,)} if layer.use_bias else {})
    if isinstance(layer, L.BatchNormalization):
        c = (info.in_shape[-1],)
        names = ["gamma"] * layer.scale + ["beta"] * layer.center
        return {n: c for n in [*names, "moving_mean", "moving_variance"]}
    return {}


def activate(x: Array, name: str) -> Array:
    """Keras' activation ``name``; softmax over the last (channel) axis."""
    if name == "linear":
        return x
    if name == "relu":
        return ops.relu(x)
    if name == "elu":
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":  # stable on both sides: exp of a non-positive number only
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    if name == "softmax":
        return ops.softmax(x, axis=-1)
    raise CnnlabError(f"unknown activation {name!r}")


def _apply(layer: L.Layer, w: Mapping[str, Array], x: Array, activation: str | None) -> Array:
    """One layer on a channels-last batch x (N, *spatial, C); ``activation`` overrides its own."""
    if isinstance(layer, L.Conv):
        y = ops.conv(
            x,
            w["kernel"],
            w.get("bias"),
            stride=layer.strides,
            padding=layer.padding,
            dilation=layer.dilation_rate,
        )  # (N, *out_spatial, filters)
        return activate(y, activation or layer.activation)
    if isinstance(layer, L.Dense):
        return activate(ops.dense(x, w["kernel"], w.get("bias")), activation or layer.activation)
    if isinstance(layer, L.Pool):
        pool = ops.max_pool if layer.kind == "max" else ops.avg_pool
        return np.asarray(pool(x, layer.pool_size, strides=layer.strides, padding=layer.padding))
    if isinstance(layer, L.GlobalPool):  # (N, *spatial, C) -> (N, C)
        return np.asarray((ops.global_max_pool if layer.kind == "max" else ops.global_avg_pool)(x))
    if isinstance(layer, L.ZeroPadding):
        return np.pad(x, ((0, 0), *layer.padding, (0, 0)))
    if isinstance(layer, L.Flatten):  # channels-last row-major: Keras' (spatial..., C) order
        return np.asarray(ops.flatten(x))
    if isinstance(layer, L.BatchNormalization):  # inference: the moving statistics
        y = (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + x.dtype.type(layer.epsilon))
        y = y * w["gamma"] if "gamma" in w else y
        return y + w["beta"] if "beta" in w else y
    if isinstance(layer, L.Activation):
        return activate(x, activation or layer.activation)
    if isinstance(layer, L.ReLU):
        return ops.relu(x)
    if isinstance(layer, L.Softmax):
        return activate(x, activation or "softmax")
    if isinstance(layer, L.Rescaling):
        return x * x.dtype.type(layer.scale) + x.dtype.type(layer.offset)
    if isinstance(layer, L.Dropout):
        return x  # inference: the identity
    raise CnnlabError(f"layer {layer.name} ({layer.class_name}) has no NumPy equivalent")


def _logit_plan(desc: ModelDescription) -> tuple[int, bool]:
    """Layers the logits pass through, and whether the last one's softmax is left out.

    As :class:`~cnnlab.models.Network` does: a final Softmax or Activation("softmax") is
    dropped, a final Dense's softmax activation is not applied.
    """
    n, last = len(desc.layers), desc.layers[-1]
    if isinstance(last, L.Softmax) or (
        isinstance(last, L.Activation) and last.activation == "softmax"
    ):
        return n - 1, False
    return n, isinstance(last, L.Dense) and last.activation == "softmax"


def check_weights(desc: ModelDescription, weights: Mapping[str, Mapping[str, Any]]) -> Weights:
    """``weights`` checked against the description (names, shapes, finite); as float arrays."""
    out: Weights = {}
    known = {i.layer.name for i in desc.info}
    extra = sorted(set(weights) - known)
    if extra:
        raise CnnlabError(f"weights for an unknown layer {extra[0]!r}")
    for info in desc.info:
        want, got = weight_shapes(info), dict(weights.get(info.layer.name, {}))
        if set(got) != set(want):
            odd = sorted(set(got) ^ set(want))[0]
            what = "lacks" if odd in want else "has an unexpected"
            raise CnnlabError(f"{info.where} {info.layer.name}: {what} weight {odd!r}")
        arrays = {}
        for key, shape in want.items():
            a = np.asarray(got[key])
            if a.shape != shape or not np.issubdtype(a.dtype, np.floating):
                raise CnnlabError(
                    f"{info.where} {info.layer.name}: {key} must be a float array of shape "
                    f"{shape}, got {a.dtype} {a.shape}"
                )
            if not np.isfinite(a).all():
                raise CnnlabError(f"{info.where} {info.layer.name}: {key} is not finite")
            arrays[key] = a
        if arrays:
            out[info.layer.name] = arrays
    return out


class NumpyModel:
    """A description and its channels-last weights, run with ``cnnlab.ops`` in ``dtype``."""

    def __init__(
        self,
        description: ModelDescription,
        weights: Mapping[str, Mapping[str, Any]],
        dtype: str = "float32",
    ) -> None:
        if dtype not in DTYPES:
            raise CnnlabError(f"dtype must be float32 or float64, got {dtype!r}")
        self.description, self.dtype = description, dtype
        checked = check_weights(description, weights)
        self.weights: Weights = {
            name: {k: v.astype(dtype) for k, v in arrays.items()}
            for name, arrays in checked.items()
        }
        self._n_logits, self._drop_softmax = _logit_plan(description)

    @property
    def name(self) -> str:
        return self.description.name

    def astype(self, dtype: str) -> NumpyModel:
        """The same model computing in ``dtype`` ("float32" like PyTorch, or "float64")."""
        return NumpyModel(self.description, self.weights, dtype)

    def _input(self, x: Any) -> Array:
        h = np.asarray(x, dtype=self.dtype)
        want = self.description.input_shape
        if h.shape[1:] != want:
            shape, need = "x".join(map(str, h.shape[1:])), "x".join(map(str, want))
            raise CnnlabError(f"{self.name} takes inputs of {need} (channels last), got {shape}")
        return h  # (N, *input_shape)

    def activations(self, x: Any) -> Iterator[tuple[str, Array]]:
        """(layer name, output) for every description layer, Keras' view (the last gives
        probabilities if it is a softmax); x is (N, *input_shape) channels-last."""
        h = self._input(x)
        for info in self.description.info:
            h = _apply(info.layer, self.weights.get(info.layer.name, {}), h, None)
            yield info.layer.name, h

    def logits(self, x: Any) -> Array:
        """(N, *input_shape) -> what the PyTorch Network returns (a final softmax left out)."""
        h = self._input(x)
        for i, info in enumerate(self.description.info[: self._n_logits]):
            last = self._drop_softmax and i == self._n_logits - 1
            h = _apply(
                info.layer, self.weights.get(info.layer.name, {}), h, "linear" if last else None
            )
        return h

    def predict_proba(self, x: Any, batch_size: int = 1000) -> Array:
        """Softmax of the logits (N, classes), ``batch_size`` inputs at a time."""
        parts = [
            ops.softmax(self.logits(x[i : i + batch_size]), axis=-1)
            for i in range(0, len(x), batch_size)
        ]
        if not parts:
            return np.zeros((0, *self.description.output_shape), dtype=self.dtype)
        return np.concatenate(parts)


def from_torch(model: Any, dtype: str | None = None) -> NumpyModel:
    """A cnnlab :class:`~cnnlab.models.Network` (its description and weights) in NumPy.

    ``dtype`` defaults to the network's own (float64 after ``model.double()``, else float32).
    """
    desc = getattr(model, "description", None)
    if not isinstance(desc, ModelDescription):
        raise CnnlabError(f"{type(model).__name__} is not a cnnlab Network (it has no description)")
    params = [p for p in model.parameters() if p.is_floating_point()]
    if dtype is None:
        dtype = "float64" if params and str(params[0].dtype) == "torch.float64" else "float32"
    state = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
    weights: Weights = {}
    for info in desc.info:
        layer, n = info.layer, info.layer.name
        get = {k[len(n) + 1 :]: v for k, v in state.items() if k.startswith(n + ".")}
        if isinstance(layer, L.Conv | L.Dense) and "weight" in get:
            w = get["weight"]  # conv (out, in, *k) -> (*k, in, out); dense (out, in) -> (in, out)
            weights[n] = {"kernel": w.transpose(*range(2, w.ndim), 1, 0)}
            weights[n] |= {"bias": get["bias"]} if "bias" in get else {}
        elif isinstance(layer, L.BatchNormalization):
            names = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean"}
            names["running_var"] = "moving_variance"
            weights[n] = {names[k]: v for k, v in get.items() if k in names}
    return NumpyModel(desc, weights, dtype)


def to_torch_state(model: NumpyModel) -> dict[str, Array]:
    """The inverse of :func:`from_torch`: a Network state dict (as arrays) of these weights."""
    names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean"}
    names |= {"moving_variance": "running_var", "bias": "bias"}
    state: dict[str, Array] = {}
    for name, arrays in model.weights.items():
        for key, a in arrays.items():
            if key == "kernel":  # (*k, in, out) -> (out, in, *k)
                state[f"{name}.weight"] = a.transpose(a.ndim - 1, a.ndim - 2, *range(a.ndim - 2))
            else:
                state[f"{name}.{names[key]}"] = a
    return state


def save_npz(model: NumpyModel, path: Path) -> None:
    """The arrays and the description (JSON in ``__meta__``) in one ``.npz``; atomic, no pickles."""
    meta = {"format": NPZ_FORMAT, "description": model.description.to_dict()}
    arrays: dict[str, Array] = {
        f"{name}/{k}": v for name, ws in model.weights.items() for k, v in ws.items()
    }
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    fileio.write_bytes(Path(path), buf.getvalue())


def load_npz(path: Path) -> NumpyModel:
    """Read a file written by :func:`save_npz`: description validated, arrays checked."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["__meta__"].tobytes().decode())
            stored = {k: z[k] for k in z.files if k != "__meta__"}
    except FileNotFoundError as exc:
        raise CnnlabError(f"{path} not found") from exc
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CnnlabError(f"{path} is not a cnnlab NumPy model ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != NPZ_FORMAT:
        old = isinstance(meta, dict) and meta.get("format") == "cnnlab-numpy-1"
        hint = " (an older export: run cnnlab export-numpy again)" if old else ""
        raise CnnlabError(f"{path} is not a cnnlab NumPy model{hint}")
    try:
        desc = ModelDescription.from_dict(meta.get("description"))
    except CnnlabError as exc:
        raise CnnlabError(f"{path}: bad description: {exc}") from None
    weights: dict[str, dict[str, Array]] = {}
    for key, value in stored.items():
        layer, _, name = key.partition("/")
        weights.setdefault(layer, {})[name] = value
    try:
        return NumpyModel(desc, weights, "float32")
    except CnnlabError as exc:
        raise CnnlabError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class Agreement:
    """The NumPy engine against PyTorch on the same inputs."""

    n_images: int
    dtype: str
    max_abs_diff: float  # largest |p_numpy - p_torch| over all inputs and classes
    same_predictions: int  # inputs whose argmax agrees
    numpy_seconds: float
    torch_seconds: float

    @property
    def numpy_images_per_s(self) -> float:
        return self.n_images / self.numpy_seconds

    @property
    def torch_images_per_s(self) -> float:
        return self.n_images / self.torch_seconds

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__) | {
            "numpy_images_per_s": self.numpy_images_per_s,
            "torch_images_per_s": self.torch_images_per_s,
        }


def _timed(fn: Callable[[], Array]) -> tuple[Array, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare_with_torch(
    model: Any, x: Array, *, dtype: str = "float32", batch_size: int = 1000
) -> Agreement:
    """Run the torch Network and its NumPy export on x (N, *input_shape) channels-last; time both.

    Both see the same batches; each is warmed up on a small batch first so that one-off
    costs (thread pools, allocator) are not timed. With ``dtype="float64"`` the torch model
    runs in float64 too (on a copy), so the comparison isolates the engine from rounding.
    """
    import torch

    engine = from_torch(model, dtype)
    tmodel = copy.deepcopy(model).to(torch.float64 if dtype == "float64" else torch.float32)
    tmodel.eval()
    xd = np.ascontiguousarray(engine._input(x))  # (N, *spatial, C): the engine's layout
    xt = torch.from_numpy(xd).movedim(-1, 1).contiguous()  # (N, C, *spatial): torch's

    def run_torch(xs: torch.Tensor) -> Array:
        with torch.no_grad():
            parts = [
                torch.softmax(tmodel(xs[i : i + batch_size]), dim=1)
                for i in range(0, len(xs), batch_size)
            ]
        return torch.cat(parts).numpy()

    run_torch(xt[:8])
    engine.predict_proba(xd[:8])
    p_np, t_np = _timed(lambda: engine.predict_proba(xd, batch_size))
    p_t, t_t = _timed(lambda: run_torch(xt))
    return Agreement(
        n_images=len(x),
        dtype=dtype,
        max_abs_diff=float(np.abs(p_np.astype(np.float64) - p_t.astype(np.float64)).max()),
        same_predictions=int((p_np.argmax(1) == p_t.argmax(1)).sum()),
        numpy_seconds=t_np,
        torch_seconds=t_t,
    )
