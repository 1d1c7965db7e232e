"""Time ``cnnlab.ops.conv`` against ``torch.nn.functional.conv2d`` on the chapter's MNIST layers.

Run: ``.venv/bin/python benchmarks/bench_ops.py [--batch 1000] [--repeats 7] [--json PATH]``

Layer 1 (Case 1's first conv): a batch of 28x28x1 float32 images, 16 filters 3x3, valid.
Layer 2: (13, 13, 16) feature maps, 64 filters 3x3, valid (after 2x2 max pooling of layer 1).
The images are real MNIST if ``$CNNLAB_DATA/mnist/train-images-idx3-ubyte.gz`` exists, random
otherwise (timing does not depend on the values). Both libraries get the same data in their own
native layout (channels-last for cnnlab, channels-first for torch; the transposes are not timed),
run in the same process, warm up once and report the best of ``--repeats`` runs. The outputs
are checked to agree before anything is timed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.ops import conv


def load_images(batch: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """(batch, 28, 28, 1) float32 in [0, 1]: real MNIST training images if available."""
    data = os.environ.get("CNNLAB_DATA")
    path = Path(data) / "mnist" / "train-images-idx3-ubyte.gz" if data else None
    if path is not None and path.is_file():
        with gzip.open(path, "rb") as f:
            raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
        images = raw.reshape(-1, 28, 28)[:batch]
        if len(images) == batch:
            return (images[..., None] / np.float32(255)).astype(np.float32), str(path)
    return rng.random((batch, 28, 28, 1), dtype=np.float32), "random"


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time in seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_layer(
    name: str, x: np.ndarray, w: np.ndarray, b: np.ndarray, repeats: int
) -> dict[str, Any]:
    """Time one valid stride-1 conv layer in both libraries; check they agree first."""
    x_t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (N, C_in, H, W)
    w_t = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))  # (C_out, C_in, kh, kw)
    b_t = torch.from_numpy(b)

    def ours() -> np.ndarray:
        return conv(x, w, b)

    def theirs() -> torch.Tensor:
        with torch.inference_mode():
            return F.conv2d(x_t, w_t, b_t)

    expected = theirs().numpy().transpose(0, 2, 3, 1)  # back to (N, H, W, C_out)
    actual = ours()
    assert actual.dtype == np.float32 and actual.shape == expected.shape, (actual, expected)
    max_err = float(np.max(np.abs(actual - expected)))
    assert np.allclose(actual, expected, rtol=1e-4, atol=1e-4), f"{name}: max error {max_err}"
    t_ours = best_time(ours, repeats)
    t_torch = best_time(theirs, repeats)
    return {
        "layer": name,
        "input": list(x.shape),
        "kernel": list(w.shape),
        "output": list(actual.shape),
        "cnnlab_s": t_ours,
        "torch_s": t_torch,
        "ratio": t_ours / t_torch,
        "max_abs_diff": max_err,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="images per batch (1000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs, best kept (7)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images, source = load_images(args.batch, rng)
    w1 = (rng.standard_normal((3, 3, 1, 16)) / 3).astype(np.float32)
    b1 = (rng.standard_normal(16) / 10).astype(np.float32)
    w2 = (rng.standard_normal((3, 3, 16, 64)) / 12).astype(np.float32)
    b2 = (rng.standard_normal(64) / 10).astype(np.float32)
    # Layer 2's input: layer 1 -> relu -> 2x2 max pool, (N, 13, 13, 16), computed once.
    h = np.maximum(conv(images, w1, b1), 0)[:, :26, :26]
    h = h.reshape(args.batch, 13, 2, 13, 2, 16).max(axis=(2, 4))

    results = [
        bench_layer("conv1 28x28x1 -> 26x26x16 (3x3, valid)", images, w1, b1, args.repeats),
        bench_layer("conv2 13x13x16 -> 11x11x64 (3x3, valid)", h, w2, b2, args.repeats),
    ]
    print(
        f"batch {args.batch} ({source}), float32, best of {args.repeats}; "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"numpy {np.__version__}, {os.cpu_count()} CPUs"
    )
    for r in results:
        print(
            f"{r['layer']}: cnnlab {1e3 * r['cnnlab_s']:.2f} ms, "
            f"torch {1e3 * r['torch_s']:.2f} ms, ratio {r['ratio']:.2f}x"
        )
    if args.json is not None:
        report = {
            "batch": args.batch,
            "data": source,
            "repeats": args.repeats,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
