"""glibc's heap kept between training steps on a CPU: freed maps reused, not handed back.

A training step allocates its feature maps and gradients afresh: PyTorch's CPU allocator
caches nothing and hands each block to malloc. glibc serves a block above its mmap threshold
(128 KiB at first, rising to at most 32 MiB as such blocks are freed) with fresh pages from
the kernel, and gives the free top of its heap back to the kernel past a trim threshold, so
every step pays again for the page faults and the zeroing of its largest tensors. On the
VGG-style network at 64x64x3 that was a quarter of the step (``benchmarks/README.md``:
58 ms a step against 45 ms with the heap kept). Kept here means: blocks up to 32 MiB (the
most glibc takes) come from the heap, and the heap is never trimmed, so its memory is reused
from step to step, as TensorFlow's BFC allocator and PyTorch's CUDA caching allocator keep
theirs. The process's resident memory then stays at its peak instead of falling back
between steps; the peak itself was measured unchanged (``bench_rgb_memory.py``).

Decided once with the engine (:class:`cnnlab.engine.choice.EngineChoice.heap`), applied by
:func:`keep` when the training step is made; a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest glibc accepts (HEAP_MAX_SIZE / 2, 64-bit)
TRIM_THRESHOLD = 2**31 - 1  # the largest int mallopt takes: 2 GiB of free top before a trim


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's mallopt, or None where the C library is another one."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only
        return None
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def available() -> bool:
    """Whether the heap can be kept here (Linux with glibc)."""
    return _mallopt() is not None


@functools.cache
def keep() -> bool:
    """Keep the C heap between steps, once per process; whether it is kept."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    trimmed = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    mapped = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # 0 where glibc refuses a value
    return bool(trimmed and mapped)
