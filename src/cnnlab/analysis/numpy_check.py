"""The NumPy engine on a run folder: export its best model, check it against PyTorch.

:func:`verify_run` writes ``numpy_check.json`` (float32) or ``numpy_check_float64.json``,
keyed by the SHA-256 of ``best.pt`` (and of the test set it ran on) so that a cache is
trusted only for those weights and that data. A run is checked on its own test set, scaled
as the run recorded, read a chunk at a time; without one (a bare checkpoint, or
``--random-inputs``) on seeded random inputs of the network's shape, which is all the
agreement of two engines needs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab import fileio
from cnnlab.analysis.run_data import RunTestSet, bar_off
from cnnlab.engine.numpy_engine import Agreement, NumpyModel, compare_with_torch, from_torch
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription
from cnnlab.train import checkpoint

TOLERANCE = 1e-5  # largest allowed |p_numpy - p_torch| (float32)
MNIST_SHAPE = (28, 28, 1)
RANDOM_INPUTS = 1000  # for runs checked without their data
RANDOM_SOURCE = "random inputs (uniform [0, 1), seed 0)"
CHUNK, CHUNK_BYTES = 2000, 256 << 20  # inputs compared at a time (bounded memory)
_PLURAL = {1: "series", 2: "images", 3: "clips"}


def from_run(run_dir: Path, which: str = "best") -> NumpyModel:
    """A run folder's checkpoint as a NumPy model (torch is needed only for this step)."""
    model, _ = checkpoint.load_model(run_dir, which)
    return from_torch(model)


def checkpoint_digest(run_dir: Path) -> str:
    """SHA-256 of a run's best.pt: results cached beside it are valid only for these weights."""
    path = Path(run_dir) / "best.pt"
    return hashlib.sha256(fileio.read_bounded(path, fileio.CHECKPOINT)).hexdigest()


def takes_mnist(desc: ModelDescription) -> bool:
    """Whether the network reads 28x28 single-channel images."""
    return tuple(desc.input_shape) == MNIST_SHAPE


def random_inputs(desc: ModelDescription, n: int = RANDOM_INPUTS, seed: int = 0) -> NDArray[Any]:
    """Seeded uniform [0, 1) float32 inputs (n, *input_shape) for any description."""
    return np.random.default_rng(seed).random((n, *desc.input_shape), dtype=np.float32)


def _chunk(desc: ModelDescription, batch_size: int) -> int:
    """Inputs compared at a time: a few batches, at most ~CHUNK_BYTES of float32 inputs."""
    per_input = 4 * math.prod(desc.input_shape)
    return max(batch_size, min(CHUNK, CHUNK_BYTES // max(per_input, 1)))


def _agreement(
    model: Any,
    chunks: Iterable[NDArray[np.floating[Any]]],
    n: int,
    dtype: str,
    batch_size: int,
    progress: bool | None,
    tick: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """compare_with_torch over chunks of the inputs, summed: the largest difference, the
    agreeing predictions and both engines' seconds over all of them. ``tick(done, total)``
    after each chunk (lines for a log, where there is no bar)."""
    from tqdm.auto import tqdm

    parts: list[Agreement] = []
    with tqdm(total=n, unit="input", desc="NumPy vs PyTorch", disable=bar_off(progress)) as bar:
        for x in chunks:
            parts.append(compare_with_torch(model, x, dtype=dtype, batch_size=batch_size))
            bar.update(len(x))
            if tick is not None:
                tick(sum(p.n_images for p in parts), n)
    total = Agreement(
        n_images=sum(p.n_images for p in parts),
        dtype=dtype,
        max_abs_diff=max(p.max_abs_diff for p in parts),
        same_predictions=sum(p.same_predictions for p in parts),
        numpy_seconds=sum(p.numpy_seconds for p in parts),
        torch_seconds=sum(p.torch_seconds for p in parts),
    )
    return total.as_dict()


def verify_run(
    run_dir: Path,
    x: RunTestSet | NDArray[np.floating[Any]] | None,
    *,
    dtype: str = "float32",
    batch_size: int = 1000,
    progress: bool | None = False,
    tick: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The engine against PyTorch on a run's best model; written beside it (see above).

    ``x``: the run's test set (:class:`RunTestSet`, read and scaled chunk by chunk), or
    network inputs already scaled; None (or inputs of another shape) means seeded random
    inputs of the network's own shape. ``progress``: a bar (None: on a terminal only);
    ``tick(done, total)``: inputs checked, after each chunk.
    """
    run_dir = Path(run_dir)
    model, ckpt = checkpoint.load_model(run_dir, "best")
    desc = model.description
    chunk = _chunk(desc, batch_size)
    data: dict[str, Any] = {}
    if isinstance(x, RunTestSet):
        n, source = len(x), f"test {x.plural}"
        chunks: Iterable[NDArray[Any]] = (b for b, _ in x.batches(batch_size=chunk))
        data = {"data": x.spec, "data_sha256": x.digest()}
    elif x is not None and tuple(x.shape[1:]) == tuple(desc.input_shape):
        n, source = len(x), f"test {_PLURAL.get(desc.rank, 'inputs')}"
        chunks = (x[i : i + chunk] for i in range(0, n, chunk))
    else:
        n, source = RANDOM_INPUTS, RANDOM_SOURCE
        chunks = [random_inputs(desc)]
    if not n:
        raise CnnlabError(f"{run_dir}: no inputs to check the NumPy engine on")
    result = _agreement(model, chunks, n, dtype, batch_size, progress, tick)
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
    } | data
    out = "numpy_check.json" if dtype == "float32" else f"numpy_check_{dtype}.json"
    fileio.write_json(run_dir / out, result)
    return result


def cached_check(run_dir: Path, test: RunTestSet) -> dict[str, Any] | None:
    """A fresh float32 ``numpy_check.json`` of these weights on this test set, or None
    (a check from before the data was recorded in it counts for MNIST's own test set)."""
    path = Path(run_dir) / "numpy_check.json"
    if not path.is_file():
        return None
    found = fileio.read_json(path)
    if not isinstance(found, dict) or found.get("dtype") != "float32":
        return None
    if found.get("checkpoint_sha256") != checkpoint_digest(run_dir):
        return None
    if found.get("n_images") != len(test) or found.get("inputs") == RANDOM_SOURCE:
        return None
    if "data_sha256" not in found:
        return found if test.spec == "mnist" else None
    return found if found["data_sha256"] == test.digest() else None
