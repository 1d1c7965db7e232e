"""Where a split's batches come from: tensors on the device, or rows read from the disk.

A split that fits in memory moves to the device once and each batch is gathered there
(the chapter's MNIST, series, clips). A folder of images larger than memory stays in its
disk cache (:class:`cnnlab.data.rows.RowView`): each batch's rows are read as it is needed,
the next one in a background thread while the current one computes, so memory holds a few
batches, not the split. Either way a batch leaves here as it is stored: uint8 pixels stay
uint8 (the step scales them by the run's input scale), and the memory stays channels-last,
seen through PyTorch's channels-first shape (:func:`cnnlab.engine.device.channels_first`):
no copy of the split, and no transpose of a batch on its way to channels-last kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from cnnlab.engine.device import channels_first, to_tensors

Batch = tuple[torch.Tensor, torch.Tensor, int]  # inputs (B, C, ...), labels, global batch size
Shard = Callable[[torch.Tensor], torch.Tensor]


def in_memory(x: Any) -> bool:
    """Whether ``x`` is an array in memory (else rows read from the disk on demand)."""
    return isinstance(x, np.ndarray)


class Feed:
    """One split's inputs and labels, as batches on ``device``."""

    def __init__(self, x: Any, y: np.ndarray, device: torch.device) -> None:
        self.device = device
        self.lazy = not in_memory(x)
        self.n = len(y)
        if self.lazy:
            self.rows, self.labels = x, np.asarray(y, dtype=np.int64)
            self.y = torch.from_numpy(self.labels).to(device)
        else:
            self.x, self.y = to_tensors(x, y, device)

    def __len__(self) -> int:
        return self.n

    def _read(self, idx: torch.Tensor) -> torch.Tensor:
        rows = idx.cpu().numpy()
        # sorted reads are sequential on the disk; the batch keeps its shuffled order
        order = np.argsort(rows, kind="stable")
        got = np.empty((len(rows), *self.rows.shape[1:]), dtype=self.rows.dtype)
        got[order] = self.rows[rows[order]]
        return channels_first(torch.from_numpy(got)).to(self.device, non_blocking=True)

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        # gathered whole rows of the stored (N, *spatial, C) memory, seen channels-first
        return channels_first(self.x.movedim(1, -1).index_select(0, idx))

    def batches(
        self, order: torch.Tensor, batch_size: int, shard: Shard | None = None
    ) -> Iterator[Batch]:
        """(inputs, labels, global batch size) for each batch of ``order``; ``shard`` picks
        this process's share of each global batch (data parallel)."""
        steps: list[tuple[torch.Tensor, int]] = []
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            steps.append((shard(idx) if shard is not None else idx, len(idx)))
        if not self.lazy:
            for idx, denom in steps:
                yield self._gather(idx), self.y.index_select(0, idx), denom
            return
        yield from self._ahead([idx for idx, _ in steps], [d for _, d in steps])

    def _ahead(self, steps: Sequence[torch.Tensor], denoms: Sequence[int]) -> Iterator[Batch]:
        """Read each batch from the disk while the one before it computes."""
        if not steps:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="cnnlab-feed") as pool:
            ahead = pool.submit(self._read, steps[0])
            for k, (idx, denom) in enumerate(zip(steps, denoms, strict=True)):
                xb = ahead.result()
                if k + 1 < len(steps):
                    ahead = pool.submit(self._read, steps[k + 1])
                yield xb, self.y.index_select(0, idx.to(self.device)), denom

    def chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, labels) in stored order, ``size`` at a time (evaluation)."""
        order = torch.arange(self.n, device=self.device if not self.lazy else "cpu")
        for xb, yb, _ in self.batches(order, size):
            yield xb, yb

    def float_inputs(self, convert: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Convert the in-memory inputs once (the plain reference loop takes float inputs)."""
        if not self.lazy:
            self.x = convert(self.x)
