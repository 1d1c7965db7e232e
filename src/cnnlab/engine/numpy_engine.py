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
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    return {w.keras: w.shape for w in info.layer.weights(info.in_shapes)}


def _run(
    desc: ModelDescription, weights: Weights, x: Array, layers: Sequence[L.Layer]
) -> Iterator[tuple[str, Array]]:
    """(layer name, output) for each of ``layers`` (in order) on a channels-last batch x;
    a graph keeps each output until its last reader has run."""
    outs: dict[str, Array] = {L.INPUT: x}
    remaining = {name: len(readers) for name, readers in desc.consumers.items()}
    for layer in layers:
        info = desc.by_name[layer.name]
        y = layer.forward_numpy([outs[n] for n in info.inputs], weights.get(layer.name, {}))
        for n in dict.fromkeys(info.inputs):
            remaining[n] -= 1
            if remaining[n] == 0 and n != desc.output:
                del outs[n]
        outs[layer.name] = y
        yield layer.name, y


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
        desc = self.description
        yield from _run(desc, self.weights, self._input(x), desc.layers)

    def logits(self, x: Any) -> Array:
        """(N, *input_shape) -> what the PyTorch Network returns (a final softmax left out)."""
        desc, h = self.description, self._input(x)
        plan = desc.logits
        outs = dict(_run(desc, self.weights, h, plan.layers)) if plan.layers else {}
        return outs.get(plan.output, h)

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
        n = info.layer.name
        arrays = {
            w.keras: w.from_torch(state[f"{n}.{w.torch}"])
            for w in info.layer.weights(info.in_shapes)
        }
        if arrays:
            weights[n] = arrays
    return NumpyModel(desc, weights, dtype)


def to_torch_state(model: NumpyModel) -> dict[str, Array]:
    """The inverse of :func:`from_torch`: a Network state dict (as arrays) of these weights."""
    state: dict[str, Array] = {}
    for info in model.description.info:
        arrays = model.weights.get(info.layer.name, {})
        for w in info.layer.weights(info.in_shapes):
            state[f"{info.layer.name}.{w.torch}"] = w.to_torch(arrays[w.keras])
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
        with fileio.open_regular(path, fileio.NPZ_ARCHIVE) as f:
            with np.load(f, allow_pickle=False) as z:
                meta = json.loads(z["__meta__"].tobytes().decode())
                stored = {k: z[k] for k in z.files if k != "__meta__"}
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
