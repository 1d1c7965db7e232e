"""Import a ``.keras`` file saved by the chapter's code into a cnnlab run folder.

A Keras 3 ``.keras`` file is a zip holding ``config.json`` (the architecture, as JSON) and
``model.weights.h5`` (the weights, at ``layers/<name>/vars/<i>``). Both are read as data
only: the config with :func:`json.loads`, the weights with h5py as plain arrays. No Keras
deserialisation, no pickle, nothing in the file is ever executed. The architecture must
be exactly one of the chapter's three cases; the kernels are then moved from Keras'
channels-last layout to PyTorch's, and the run folder is written like a trained one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import platform
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from cnnlab import fileio
from cnnlab.errors import CnnlabError
from cnnlab.models import case_name, count_params, create_model
from cnnlab.train import checkpoint, runs

# Upper bounds, checked before anything is decompressed: the chapter's largest model
# (case 1) is a 0.8 MB file, so these leave room while refusing a zip bomb.
MAX_FILE_BYTES = 64 << 20
MAX_MEMBER_BYTES = {"config.json": 1 << 20, "metadata.json": 64 << 10, "model.weights.h5": 64 << 20}
REQUIRED_MEMBERS = ("config.json", "model.weights.h5")

_CONV = {
    "kernel_size": [3, 3],
    "strides": [1, 1],
    "padding": "valid",
    "data_format": "channels_last",
    "dilation_rate": [1, 1],
    "groups": 1,
    "activation": "relu",
    "use_bias": True,
}
_POOL = {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid", "data_format": "channels_last"}


@dataclass(frozen=True)
class LayerSpec:
    """One layer the case expects: Keras class, config values, and the cnnlab layer it fills."""

    class_name: str
    config: dict[str, Any]
    torch_name: str | None = None  # the nn.Sequential child holding its weights


def _conv(filters: int, torch_name: str) -> LayerSpec:
    return LayerSpec("Conv2D", {"filters": filters, **_CONV}, torch_name)


def _dense(units: int, activation: str, torch_name: str) -> LayerSpec:
    return LayerSpec(
        "Dense", {"units": units, "activation": activation, "use_bias": True}, torch_name
    )


_POOLING = LayerSpec("MaxPooling2D", _POOL)
_GAP = LayerSpec("GlobalAveragePooling2D", {"data_format": "channels_last", "keepdims": False})

# The chapter's Keras code, layer for layer (section 14.3, cases 1-3).
CASES: dict[str, list[LayerSpec]] = {
    "case1": [
        _conv(16, "conv1"),
        _POOLING,
        _conv(64, "conv2"),
        _POOLING,
        LayerSpec("Flatten", {"data_format": "channels_last"}),
        LayerSpec("Dropout", {"rate": 0.25}),
        _dense(32, "relu", "dense1"),
        LayerSpec("Dropout", {"rate": 0.25}),
        _dense(10, "softmax", "dense2"),
    ],
    "case2": [
        _conv(32, "conv1"),
        _POOLING,
        _conv(10, "conv2"),
        _POOLING,
        _GAP,
        LayerSpec("Softmax", {"axis": -1}),
    ],
    "case3": [
        _conv(16, "conv1"),
        _POOLING,
        _conv(64, "conv2"),
        _POOLING,
        _GAP,
        _dense(10, "softmax", "dense"),
    ],
}
INPUT_SHAPE = [None, 28, 28, 1]


@dataclass
class KerasModel:
    """What was read from a ``.keras`` file: cnnlab weights plus where they came from."""

    case: str
    state_dict: dict[str, torch.Tensor]
    source: dict[str, Any]


def _snake(class_name: str) -> str:
    """Keras' ``to_snake_case`` for the class names above: ``MaxPooling2D`` -> ``max_pooling2d``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _read_members(path: Path) -> tuple[dict[str, bytes], str]:
    """The needed zip members' bytes (sizes checked first) and the file's SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path} not found")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CnnlabError(f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB: not a chapter model")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise CnnlabError(f"{path} is not a .keras file (not a zip archive)")
    out: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            missing = [m for m in REQUIRED_MEMBERS if m not in infos]
            if missing:
                raise CnnlabError(
                    f"{path} is not a Keras 3 .keras file: it lacks {', '.join(missing)}"
                )
            for name, limit in MAX_MEMBER_BYTES.items():
                if name not in infos:
                    continue
                if infos[name].file_size > limit:
                    raise CnnlabError(
                        f"{path}: {name} would unpack to {infos[name].file_size:,} bytes "
                        f"(limit {limit:,}); refusing it"
                    )
                # Read at most limit + 1 bytes: a header that lies about the size cannot
                # make us inflate more than the limit.
                with zf.open(infos[name]) as f:
                    data = f.read(limit + 1)
                if len(data) > limit:
                    raise CnnlabError(f"{path}: {name} unpacks to more than {limit:,} bytes")
                out[name] = data
    except CnnlabError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        raise CnnlabError(f"{path} is a damaged or unsupported zip archive ({exc})") from exc
    return out, hashlib.sha256(raw).hexdigest()


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a hostile config may hold anything)."""
    return value if isinstance(value, dict) else {}


def _dtype_name(cfg: dict[str, Any]) -> str | None:
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        dtype = _dict(dtype.get("config")).get("name")
    return dtype if isinstance(dtype, str) else None


def _model_layers(config: Any, path: Path) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """The Sequential's layers (InputLayer removed) and the declared input shape."""
    if not isinstance(config, dict) or config.get("class_name") != "Sequential":
        kind = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise CnnlabError(f"{path} holds a {kind!s} model; the chapter's models are Sequential")
    layers = _dict(config.get("config")).get("layers")
    if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise CnnlabError(f"{path}: config.json has no list of layers")
    input_shape = None
    if layers and layers[0].get("class_name") == "InputLayer":
        input_shape = _dict(layers[0].get("config")).get("batch_shape")
        layers = layers[1:]
    elif layers:  # built without an InputLayer: the first layer records its input
        input_shape = _dict(layers[0].get("build_config")).get("input_shape")
    return layers, input_shape


def _mismatches(layers: list[dict[str, Any]], specs: list[LayerSpec]) -> list[str]:
    """Every way ``layers`` differs from ``specs`` (empty when they agree)."""
    if len(layers) != len(specs):
        names = ", ".join(str(x.get("class_name")) for x in layers)
        return [f"{len(layers)} layers ({names}), expected {len(specs)}"]
    problems = []
    for i, (layer, spec) in enumerate(zip(layers, specs, strict=True)):
        cls = layer.get("class_name")
        if cls != spec.class_name:
            problems.append(f"layer {i + 1} is {cls}, expected {spec.class_name}")
            continue
        cfg = _dict(layer.get("config"))
        for key, want in spec.config.items():
            # keepdims and axis may be omitted when left at their defaults
            got: Any = cfg.get(key, want if key in ("keepdims", "axis") else None)
            if cls == "MaxPooling2D" and key == "strides" and got is None:
                got = cfg.get("pool_size")  # Keras' default: strides = pool_size
            if got != want:
                problems.append(f"layer {i + 1} ({cls}) has {key}={got!r}, expected {want!r}")
        dtype = _dtype_name(cfg)
        if dtype not in (None, "float32"):
            problems.append(f"layer {i + 1} ({cls}) computes in {dtype}, expected float32")
    return problems


def check_architecture(config: Any, case: str, path: Path) -> list[dict[str, Any]]:
    """The config's layers, if they are exactly ``case``'s; a CnnlabError saying why not."""
    layers, input_shape = _model_layers(config, path)
    if input_shape is not None and input_shape != INPUT_SHAPE:
        raise CnnlabError(f"{path}: the model takes input {input_shape}, expected {INPUT_SHAPE}")
    problems = _mismatches(layers, CASES[case])
    if problems:
        others = [c for c in CASES if c != case and not _mismatches(layers, CASES[c])]
        hint = f"; it is {others[0]}'s architecture (use --case {others[0][-1]})" if others else ""
        raise CnnlabError(
            f"{path} is not the chapter's {case}: {'; '.join(problems[:3])}"
            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
            + hint
        )
    return layers


def _dataset(h5: h5py.File, key: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """A float32 copy of dataset ``key``, if it is a plain in-file array of ``shape``."""
    # Follow hard links only, one step at a time: an external link (or external or
    # virtual storage) would make HDF5 open other files on this machine.
    node: h5py.Group | h5py.Dataset = h5
    for part in key.split("/"):
        link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
        if not isinstance(link, h5py.HardLink):
            raise CnnlabError(f"{path}: model.weights.h5 has no array at {key}")
        node = node[part]
    ds = node
    if not isinstance(ds, h5py.Dataset) or ds.is_virtual or ds.external:
        raise CnnlabError(f"{path}: {key} in model.weights.h5 is not a plain array")
    if tuple(ds.shape) != shape:
        raise CnnlabError(f"{path}: {key} has shape {tuple(ds.shape)}, expected {shape}")
    if ds.dtype.kind != "f":
        raise CnnlabError(f"{path}: {key} holds {ds.dtype}, expected floating-point weights")
    arr = np.asarray(ds[()], dtype=np.float32)
    if not np.isfinite(arr).all():
        raise CnnlabError(f"{path}: {key} holds NaN or infinite weights")
    return arr


def convert_weights(weights_h5: bytes, case: str, path: Path) -> dict[str, torch.Tensor]:
    """cnnlab's state_dict from Keras 3's ``model.weights.h5`` of a checked ``case`` model."""
    target = {k: tuple(v.shape) for k, v in create_model(case).state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    used: dict[str, int] = {}
    try:
        with h5py.File(io.BytesIO(weights_h5), "r") as h5:
            for spec in CASES[case]:
                # Keras 3 names a layer's weights by class, in order: conv2d, conv2d_1, ...
                # (not by the layer's own name, which varies between sessions).
                stem = _snake(spec.class_name)
                used[stem] = used.get(stem, -1) + 1
                h5_name = stem if used[stem] == 0 else f"{stem}_{used[stem]}"
                if spec.torch_name is None:
                    continue
                w_shape = target[f"{spec.torch_name}.weight"]
                # torch conv (out, in, kh, kw) <- Keras (kh, kw, in, out)
                if spec.class_name == "Conv2D":
                    k_shape: tuple[int, ...] = (w_shape[2], w_shape[3], w_shape[1], w_shape[0])
                else:  # Linear (out, in) <- Dense (in, out)
                    k_shape = (w_shape[1], w_shape[0])
                kernel = _dataset(h5, f"layers/{h5_name}/vars/0", k_shape, path)
                bias = _dataset(h5, f"layers/{h5_name}/vars/1", (w_shape[0],), path)
                perm = (3, 2, 0, 1) if kernel.ndim == 4 else (1, 0)
                state[f"{spec.torch_name}.weight"] = torch.from_numpy(
                    np.ascontiguousarray(kernel.transpose(perm))
                )
                state[f"{spec.torch_name}.bias"] = torch.from_numpy(bias)
                if h5.get(f"layers/{h5_name}/vars/2", getlink=True) is not None:
                    raise CnnlabError(f"{path}: {h5_name} has more weights than {case} expects")
    except CnnlabError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CnnlabError(f"{path}: model.weights.h5 is not a readable HDF5 file ({exc})") from exc
    missing = sorted(set(target) - set(state))
    if missing:  # cannot happen while CASES and models.py agree; a guard for edits
        raise CnnlabError(f"{path}: no weights found for {', '.join(missing)}")
    return state


def read_keras(path: Path, case: str | int) -> KerasModel:
    """Read, check and convert the chapter's ``.keras`` file for ``case``."""
    path = Path(path)
    try:
        name = case_name(case)
    except ValueError as exc:
        raise CnnlabError(str(exc)) from exc
    members, sha256 = _read_members(path)
    try:
        config = json.loads(members["config.json"])
    except (UnicodeDecodeError, ValueError) as exc:
        raise CnnlabError(f"{path}: config.json is not valid JSON ({exc})") from exc
    check_architecture(config, name, path)
    state = convert_weights(members["model.weights.h5"], name, path)
    keras_version = None
    if "metadata.json" in members:
        try:
            meta = json.loads(members["metadata.json"])
            keras_version = meta.get("keras_version") if isinstance(meta, dict) else None
        except (UnicodeDecodeError, ValueError):
            keras_version = None  # informative only; the model itself is already checked
    source = {
        "format": "keras",
        "file": path.name,
        "sha256": sha256,
        "keras_version": keras_version if isinstance(keras_version, str) else None,
    }
    return KerasModel(case=name, state_dict=state, source=source)


def import_keras(path: Path, case: str | int, out_dir: Path) -> dict[str, Any]:
    """Write a cnnlab run folder for the ``.keras`` file; returns its metrics.json content.

    Nothing is written unless the file is fully valid. ``config.json`` is written last,
    so an interrupted import leaves a folder that a new import may still use.
    """
    from cnnlab.train.loop import TrainConfig  # heavy import kept off the CLI's start-up path

    km = read_keras(path, case)
    model = create_model(km.case)
    model.load_state_dict(km.state_dict)  # strict: every tensor present, every shape right
    out = runs.prepare_out_dir(Path(out_dir))
    ckpt = {"format": checkpoint.FORMAT, "case": km.case, "epoch": 0, "model": km.state_dict}
    runs.save_torch(out / "best.pt", ckpt)
    metrics = {"case": km.case, "params": count_params(model), "imported_from": km.source}
    fileio.write_json(out / "metrics.json", metrics)
    run_config = {
        "config": dataclasses.asdict(TrainConfig(case=km.case)),
        "imported_from": km.source,
        "resolved": {
            "note": "weights imported from a .keras file; not trained by cnnlab, "
            "so there is no history.csv or last.pt (best_epoch 0 means unknown)",
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    fileio.write_json(out / "config.json", run_config)
    return metrics
