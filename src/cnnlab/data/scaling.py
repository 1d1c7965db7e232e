"""How stored values become network inputs: the one place that knows it.

- uint8 pixels (0-255) are divided by 255, as the chapter does: float32 in [0, 1];
- unless the network begins with a ``Rescaling`` layer, which takes the raw 0-255 values
  (as Keras feeds them) and scales them itself;
- float data (series, an ``.npz`` of floats) is used as it is.

Division, not multiplication by 1/255: ``x.astype(float32) / 255`` is the chapter's value
bit for bit (``255 * float32(1/255)`` is not exactly 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class InputScale:
    """Network input = stored value / ``divisor``; ``reason`` is one line for the log."""

    divisor: float
    reason: str

    @property
    def factor(self) -> float:
        """The multiplier the division amounts to (1/255 or 1)."""
        return 1.0 / self.divisor

    def to_dict(self) -> dict[str, Any]:
        return {"divide_by": self.divisor, "reason": self.reason}


def input_scale(dataset_pixels: bool, network_takes_raw_pixels: bool) -> InputScale:
    """How a dataset's stored values reach a network.

    ``dataset_pixels``: the data is uint8 0-255 pixels (:attr:`Dataset.pixels`).
    ``network_takes_raw_pixels``: the network's first layer is a ``Rescaling``.
    """
    if not dataset_pixels:
        return InputScale(1.0, "inputs are float values, used as stored")
    if network_takes_raw_pixels:
        return InputScale(
            1.0, "uint8 pixels passed raw (0-255): the network begins with a Rescaling layer"
        )
    return InputScale(255.0, "uint8 pixels divided by 255 (float32 in [0, 1]), as the chapter")


def to_inputs(x: Any, scale: InputScale) -> np.ndarray:
    """A batch (or a whole split) of stored values as float32 network inputs.

    ``x``: an array or a :class:`~cnnlab.data.rows.RowView` (read whole: use it on batches
    or on splits that fit in memory).
    """
    arr = np.asarray(x)
    if scale.divisor == 1.0:
        return arr.astype(np.float32, copy=False)
    if arr.dtype != np.uint8:
        raise CnnlabError(f"pixel scaling expects uint8 values, not {arr.dtype}")
    return arr.astype(np.float32) / np.float32(scale.divisor)


def iterate_batches(
    x: Any,
    y: np.ndarray,
    order: np.ndarray | None = None,
    batch_size: int = 32,
    *,
    prefetch: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(xb, yb)`` mini-batches in ``order`` (a permutation of the rows; None: as stored).

    ``x`` is an array or a lazy :class:`~cnnlab.data.rows.RowView`: each batch is read on
    its own (with ``prefetch``, the next one in a background thread while the caller
    computes), so memory holds a couple of batches, not the split. Batches keep the stored
    dtype (uint8 pixels stay uint8: scale them on the device with :func:`to_inputs`'s
    rule); labels are int64.
    """
    n = len(x)
    if len(y) != n:
        raise CnnlabError(f"{n} inputs but {len(y)} labels")
    if batch_size < 1:
        raise CnnlabError(f"batch_size must be positive, not {batch_size}")
    idx = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n)):
        raise CnnlabError(f"order must index the {n} rows")
    labels = np.asarray(y).astype(np.int64, copy=False)
    starts = range(0, len(idx), batch_size)

    def read(start: int) -> tuple[np.ndarray, np.ndarray]:
        rows = idx[start : start + batch_size]
        return np.ascontiguousarray(x[rows]), labels[rows]

    if not prefetch or math.ceil(len(idx) / batch_size) < 2:
        for start in starts:
            yield read(start)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="cnnlab-batches") as pool:
        ahead = pool.submit(read, 0)
        for start in starts:
            batch = ahead.result()
            if start + batch_size < len(idx):
                ahead = pool.submit(read, start + batch_size)
            yield batch
