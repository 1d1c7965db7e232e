"""The NumPy engine on a run folder: export its best model, check it against PyTorch.

:func:`verify_run` writes ``numpy_check.json`` (float32) or ``numpy_check_float64.json``,
keyed by the SHA-256 of ``best.pt`` so that a cache is trusted only for those weights. A
network that takes MNIST's 28x28x1 images is checked on the inputs given (the test set);
any other is checked on seeded random inputs of its own shape, which is all the agreement
of two engines needs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab import fileio
from cnnlab.engine.numpy_engine import NumpyModel, compare_with_torch, from_torch
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription
from cnnlab.train import checkpoint

TOLERANCE = 1e-5  # largest allowed |p_numpy - p_torch| (float32)
MNIST_SHAPE = (28, 28, 1)
RANDOM_INPUTS = 1000  # for networks that do not take MNIST images


def from_run(run_dir: Path, which: str = "best") -> NumpyModel:
    """A run folder's checkpoint as a NumPy model (torch is needed only for this step)."""
    model, _ = checkpoint.load_model(run_dir, which)
    return from_torch(model)


def checkpoint_digest(run_dir: Path) -> str:
    """SHA-256 of a run's best.pt: results cached beside it are valid only for these weights."""
    path = Path(run_dir) / "best.pt"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from exc


def takes_mnist(desc: ModelDescription) -> bool:
    """Whether the network reads 28x28 single-channel images."""
    return tuple(desc.input_shape) == MNIST_SHAPE


def random_inputs(desc: ModelDescription, n: int = RANDOM_INPUTS, seed: int = 0) -> NDArray[Any]:
    """Seeded uniform [0, 1) float32 inputs (n, *input_shape) for any description."""
    return np.random.default_rng(seed).random((n, *desc.input_shape), dtype=np.float32)


def verify_run(
    run_dir: Path,
    x: NDArray[np.floating[Any]] | None,
    *,
    dtype: str = "float32",
    batch_size: int = 1000,
) -> dict[str, Any]:
    """The engine against PyTorch on a run's best model; written beside it (see above).

    ``x``: MNIST-shaped inputs, used when the network takes them; None (or another
    network) means seeded random inputs of the network's own shape.
    """
    run_dir = Path(run_dir)
    model, ckpt = checkpoint.load_model(run_dir, "best")
    desc = model.description
    if x is not None and takes_mnist(desc) and tuple(x.shape[1:]) == MNIST_SHAPE:
        inputs, source = x, "test images"
    else:
        inputs, source = random_inputs(desc), "random inputs (uniform [0, 1), seed 0)"
    result = compare_with_torch(model, inputs, dtype=dtype, batch_size=batch_size).as_dict()
    name = checkpoint.run_name(ckpt)
    result |= {
        "model": name,
        "case": name,  # the key's name before model descriptions, for older readers
        "inputs": source,
        "epoch": ckpt["epoch"],
        "batch_size": batch_size,
        "tolerance": TOLERANCE,
        "passed": result["max_abs_diff"] <= TOLERANCE,
        "checkpoint_sha256": checkpoint_digest(run_dir),
    }
    out = "numpy_check.json" if dtype == "float32" else f"numpy_check_{dtype}.json"
    fileio.write_json(run_dir / out, result)
    return result


def cached_check(run_dir: Path, n_images: int) -> dict[str, Any] | None:
    """A fresh float32 ``numpy_check.json`` of these weights over ``n_images``, or None."""
    path = Path(run_dir) / "numpy_check.json"
    if not path.is_file():
        return None
    found = fileio.read_json(path)
    if not isinstance(found, dict) or found.get("dtype") != "float32":
        return None
    if found.get("checkpoint_sha256") != checkpoint_digest(run_dir):
        return None
    return found if found.get("n_images") == n_images else None
