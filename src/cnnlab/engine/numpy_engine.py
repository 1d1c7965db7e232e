"""A NumPy inference engine: a trained cnnlab model re-computed with :mod:`cnnlab.ops` alone.

The PyTorch checkpoint is exported once into plain arrays in the layouts the chapter (and
Keras) uses, channels-last: a Conv2d weight (C_out, C_in, kh, kw) becomes (kh, kw, C_in, C_out),
a Linear weight (out, in) becomes (in, out). Case 1's flatten already follows the (H, W, C)
order, so its first dense kernel needs no permutation. From then on only NumPy runs: if its
probabilities equal PyTorch's, the mechanism the chapter describes is the whole story.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab import fileio, ops
from cnnlab.errors import CnnlabError
from cnnlab.train import checkpoint

NPZ_FORMAT = "cnnlab-numpy-1"
KINDS = ("conv", "relu", "max_pool", "flatten", "dropout", "dense", "global_avg_pool")


@dataclass
class Layer:
    """One step of the forward pass: its kind, hyper-parameters and arrays (channels-last)."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, NDArray[np.floating]] = field(default_factory=dict)


def _apply(layer: Layer, x: NDArray[np.floating]) -> NDArray[np.floating]:
    p, a = layer.params, layer.arrays
    if layer.kind == "conv":
        return ops.conv(
            x,
            a["w"],
            a.get("b"),
            stride=tuple(p["stride"]),
            padding=tuple(p["padding"]),
            dilation=tuple(p["dilation"]),
        )
    if layer.kind == "relu":
        return ops.relu(x)
    if layer.kind == "max_pool":
        return np.asarray(ops.max_pool(x, tuple(p["pool_size"]), strides=tuple(p["strides"])))
    if layer.kind == "flatten":
        return np.asarray(ops.flatten(x))
    if layer.kind == "dropout":
        return x  # inference: dropout is the identity
    if layer.kind == "dense":
        return ops.dense(x, a["w"], a.get("b"))
    if layer.kind == "global_avg_pool":
        return ops.global_avg_pool(x)
    raise CnnlabError(f"layer {layer.name}: unknown kind {layer.kind!r}")


@dataclass
class NumpyModel:
    """A feed-forward stack of :class:`Layer` run with ``cnnlab.ops``; computes in ``dtype``."""

    case: str
    layers: list[Layer]
    dtype: str = "float32"

    def astype(self, dtype: str) -> NumpyModel:
        """The same model computing in ``dtype`` ("float32" like PyTorch, or "float64")."""
        if dtype not in ("float32", "float64"):
            raise CnnlabError(f"dtype must be float32 or float64, got {dtype!r}")
        layers = [
            Layer(
                ly.name,
                ly.kind,
                dict(ly.params),
                {k: v.astype(dtype) for k, v in ly.arrays.items()},
            )
            for ly in self.layers
        ]
        return NumpyModel(self.case, layers, dtype)

    def activations(self, x: NDArray[np.floating]) -> Iterator[tuple[str, NDArray[np.floating]]]:
        """(layer name, output) after every layer, for x (N, H, W, C) channels-last."""
        h = np.asarray(x, dtype=self.dtype)
        for layer in self.layers:
            h = _apply(layer, h)
            yield layer.name, h

    def logits(self, x: NDArray[np.floating]) -> NDArray[np.floating]:
        """(N, H, W, C) -> (N, classes)."""
        h = np.asarray(x, dtype=self.dtype)
        for layer in self.layers:
            h = _apply(layer, h)
        return h

    def predict_proba(
        self, x: NDArray[np.floating], batch_size: int = 1000
    ) -> NDArray[np.floating]:
        """Softmax probabilities (N, classes), computed ``batch_size`` images at a time."""
        parts = [
            ops.softmax(self.logits(x[i : i + batch_size]), axis=-1)
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=self.dtype)


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(t) for t in v]


def from_torch(model: Any, case: str = "") -> NumpyModel:
    """Export an ``nn.Sequential`` cnnlab model (in eval semantics) to a :class:`NumpyModel`."""
    from torch import nn

    from cnnlab.models import FlattenHWC, GlobalAvgPool

    layers: list[Layer] = []
    for name, m in model.named_children():
        if isinstance(m, nn.Conv2d):
            if isinstance(m.padding, str) or m.groups != 1 or m.padding_mode != "zeros":
                raise CnnlabError(f"{name}: only zero-padded, ungrouped, int-padded Conv2d")
            arrays = {"w": m.weight.detach().cpu().numpy().transpose(2, 3, 1, 0).copy()}
            if m.bias is not None:
                arrays["b"] = m.bias.detach().cpu().numpy().copy()
            params = {
                "stride": _pair(m.stride),
                "padding": _pair(m.padding),
                "dilation": _pair(m.dilation),
            }
            layers.append(Layer(name, "conv", params, arrays))
        elif isinstance(m, nn.ReLU):
            layers.append(Layer(name, "relu"))
        elif isinstance(m, nn.MaxPool2d):
            if _pair(m.padding) != [0, 0] or _pair(m.dilation) != [1, 1] or m.ceil_mode:
                raise CnnlabError(f"{name}: only unpadded, undilated, floor-mode MaxPool2d")
            stride = m.stride if m.stride is not None else m.kernel_size
            params = {"pool_size": _pair(m.kernel_size), "strides": _pair(stride)}
            layers.append(Layer(name, "max_pool", params))
        elif isinstance(m, FlattenHWC):
            layers.append(Layer(name, "flatten"))  # channels-last row-major = (H, W, C) order
        elif isinstance(m, nn.Dropout):
            layers.append(Layer(name, "dropout"))
        elif isinstance(m, nn.Linear):
            arrays = {"w": m.weight.detach().cpu().numpy().T.copy()}  # (in, out)
            if m.bias is not None:
                arrays["b"] = m.bias.detach().cpu().numpy().copy()
            layers.append(Layer(name, "dense", {}, arrays))
        elif isinstance(m, GlobalAvgPool):
            layers.append(Layer(name, "global_avg_pool"))
        else:
            raise CnnlabError(f"layer {name} ({type(m).__name__}) has no NumPy equivalent")
    return NumpyModel(case, layers, "float32")


def from_run(run_dir: Path, which: str = "best") -> NumpyModel:
    """Export a run folder's checkpoint (torch is needed only for this step)."""

    model, ckpt = checkpoint.load_model(run_dir, which)
    return from_torch(model, ckpt["case"])


def save_npz(model: NumpyModel, path: Path) -> None:
    """Write the arrays and a JSON description of the layers into one ``.npz`` (atomic)."""

    spec = [{"name": ly.name, "kind": ly.kind, "params": ly.params} for ly in model.layers]
    meta = {"format": NPZ_FORMAT, "case": model.case, "layers": spec}
    arrays: dict[str, NDArray[Any]] = {
        f"{ly.name}/{k}": v for ly in model.layers for k, v in ly.arrays.items()
    }
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    fileio.write_bytes(Path(path), buf.getvalue())


def load_npz(path: Path) -> NumpyModel:
    """Read a file written by :func:`save_npz`; no pickles are loaded."""
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
        raise CnnlabError(f"{path} is not a cnnlab NumPy model")
    layers = []
    for spec in meta["layers"]:
        if spec["kind"] not in KINDS:
            raise CnnlabError(f"{path}: unknown layer kind {spec['kind']!r}")
        prefix = spec["name"] + "/"
        arrays = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
        layers.append(Layer(spec["name"], spec["kind"], spec["params"], arrays))
    return NumpyModel(meta["case"], layers, "float32")


@dataclass(frozen=True)
class Agreement:
    """The NumPy engine against PyTorch on the same images."""

    n_images: int
    dtype: str
    max_abs_diff: float  # largest |p_numpy - p_torch| over all images and classes
    same_predictions: int  # images whose argmax agrees
    numpy_seconds: float
    torch_seconds: float

    @property
    def numpy_images_per_s(self) -> float:
        return self.n_images / self.numpy_seconds

    @property
    def torch_images_per_s(self) -> float:
        return self.n_images / self.torch_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "dtype": self.dtype,
            "max_abs_diff": self.max_abs_diff,
            "same_predictions": self.same_predictions,
            "numpy_seconds": self.numpy_seconds,
            "torch_seconds": self.torch_seconds,
            "numpy_images_per_s": self.numpy_images_per_s,
            "torch_images_per_s": self.torch_images_per_s,
        }


def _timed(fn: Callable[[], NDArray[np.floating]]) -> tuple[NDArray[np.floating], float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare_with_torch(
    model: Any, x: NDArray[np.floating], *, dtype: str = "float32", batch_size: int = 1000
) -> Agreement:
    """Run the torch ``model`` and its NumPy export on x (N, H, W, 1); time both.

    Both see the same batches; each is warmed up on one small batch first so that one-off
    costs (thread pools, allocator) are not timed. With ``dtype="float64"`` the torch model
    runs in float64 too (on a copy), so the comparison isolates the engine from rounding.
    """
    import copy

    import torch

    engine = from_torch(model).astype(dtype)
    tmodel = copy.deepcopy(model).to(torch.float64 if dtype == "float64" else torch.float32)
    tmodel.eval()
    xd = np.ascontiguousarray(x, dtype=dtype)  # (N, H, W, C): the engine's native layout
    xt = torch.from_numpy(xd).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W): torch's

    def run_torch(xs: torch.Tensor) -> NDArray[np.floating]:
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


TOLERANCE = 1e-5  # largest allowed |p_numpy - p_torch| on the test set


def checkpoint_digest(run_dir: Path) -> str:
    """SHA-256 of a run's best.pt: results cached beside it are valid only for these weights."""
    import hashlib

    path = Path(run_dir) / "best.pt"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from exc


def verify_run(
    run_dir: Path, x: NDArray[np.floating], *, dtype: str = "float32", batch_size: int = 1000
) -> dict[str, Any]:
    """The engine against PyTorch on a run's best model.

    Written to ``numpy_check.json`` (float32) or ``numpy_check_float64.json``.
    """

    run_dir = Path(run_dir)
    model, ckpt = checkpoint.load_model(run_dir, "best")
    result = compare_with_torch(model, x, dtype=dtype, batch_size=batch_size).as_dict()
    result |= {
        "case": ckpt["case"],
        "epoch": ckpt["epoch"],
        "batch_size": batch_size,
        "tolerance": TOLERANCE,
        "passed": result["max_abs_diff"] <= TOLERANCE,
        "checkpoint_sha256": checkpoint_digest(run_dir),
    }
    name = "numpy_check.json" if dtype == "float32" else f"numpy_check_{dtype}.json"
    fileio.write_json(run_dir / name, result)
    return result
