"""Where one training step's time goes, per network, and how far it is from the arithmetic.

For each network (the chapter's three cases and keras-zoo's 2-D networks), on real MNIST
batches of 32 after a warm-up: the fast engine's step as ``cnnlab train`` makes it
(:func:`cnnlab.engine.fastpath.make_step`), timed over many steps, then one
``torch.profiler`` pass grouped by operation (self time: a ``cnnlab::`` row is the C++
kernels' own loops, the ATen rows under it are the calls they make).

The arithmetic limit of a step: the multiply-adds of its convolutions and dense layers,
forward and backward (weight and input gradients; none for the input image), dense, as if
nothing were skipped, at the rate this machine's float32 matrix product reaches in the same
run (``torch.mm`` of 1024 x 1024, the threads the step uses). ``gap`` is the step's time over
that limit: how much of the step is not arithmetic.

Usage: python benchmarks/profile_step.py [--steps 400] [--out benchmarks/results]
Writes ``profile_step.json`` and ``profile_step.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from run_bench import HERE, data_dir

from cnnlab.data.mnist import load_mnist
from cnnlab.engine.fastpath import make_step
from cnnlab.engine.plan import plan
from cnnlab.interop.keras_import import read_keras
from cnnlab.models import ModelDescription, build_module, create_model
from cnnlab.models import layers as L
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import make_optimizer

BATCH = 32
ZOO_2D = ("conv2d_same_strides", "conv2d_bn_dilated")


def networks(folder: Path) -> dict[str, ModelDescription]:
    nets = {f"case {i}": create_model(f"case{i}").description for i in (1, 2, 3)}
    for name in ZOO_2D:
        path = folder / "keras-zoo" / f"{name}.keras"
        if path.is_file():
            nets[name] = read_keras(path).description
    return nets


def step_flops(desc: ModelDescription) -> float:
    """Floating-point operations of one step's convolutions and dense layers (2 per
    multiply-add): forward, weight gradient, and input gradient below the first layer."""
    total = 0.0
    first = True
    for info in desc.info:
        layer = info.layer
        if isinstance(layer, L.Conv):
            macs = math.prod(info.out_shape) * info.in_shape[-1] * math.prod(layer.kernel_size)
        elif isinstance(layer, L.Dense):
            macs = info.in_shape[0] * layer.units
        else:
            continue
        total += 2 * BATCH * macs * (2 if first else 3)
        first = False
    return total


def gemm_rate() -> float:
    """float32 FLOP/s of a 1024 x 1024 matrix product here, the best of five."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        torch.mm(a, b)
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t) / 10)
    return 2 * 1024**3 / best


def profile(desc: ModelDescription, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict:
    torch.manual_seed(42)
    model = build_module(desc)
    model.train()
    step = make_step(model, make_optimizer(model, TrainConfig()))
    order = torch.randperm(len(x))

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order[(i * BATCH) % (len(x) - BATCH) :][:BATCH]
        return x.index_select(0, idx), y.index_select(0, idx)

    for i in range(300):  # warm-up: allocator, MKL-DNN's primitive cache, weights moving
        step(*batch(i), None)
    chunks = []
    for c in range(5):  # the median of five chunks: the machine's drift is not the step's
        t = time.perf_counter()
        for i in range(steps // 5):
            step(*batch(c * steps + i), None)
        chunks.append((time.perf_counter() - t) / (steps // 5))
    per_step = float(np.median(chunks))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(200):
            step(*batch(i), None)
    rows = []
    for ev in prof.key_averages():
        rows.append(
            {"op": ev.key, "self_us": ev.self_cpu_time_total / 200, "calls": ev.count / 200}
        )
    rows.sort(key=lambda r: -r["self_us"])
    profiled = sum(r["self_us"] for r in rows)
    return {
        "step_us": per_step * 1e6,
        "profiled_us": profiled,
        "ops": rows[:10],
        "native": plan(desc).native,
        "kind": type(step).__name__,
    }


def run(steps: int) -> dict[str, Any]:
    folder = data_dir()
    mnist = load_mnist(folder, allow_download=False)
    x = torch.from_numpy(mnist.x_train[:45000].copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8
    y = torch.from_numpy(mnist.y_train[:45000].astype(np.int64))
    rate = gemm_rate()
    out: dict[str, Any] = {"gemm_gflops": rate / 1e9, "threads": torch.get_num_threads()}
    nets = {}
    for name, desc in networks(folder).items():
        r = profile(desc, x, y, steps)
        r["mflop"] = step_flops(desc) / 1e6
        r["limit_us"] = step_flops(desc) / rate * 1e6
        r["gap"] = r["step_us"] / r["limit_us"]
        nets[name] = r
        print(f"{name}: {r['step_us']:.0f} us/step, limit {r['limit_us']:.0f} us", flush=True)
    out["networks"] = nets
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"float32 matrix product here: {result['gemm_gflops']:.1f} GFLOP/s "
        f"({result['threads']} threads).",
        "",
        "| network | step | µs/step | MFLOP/step | arithmetic limit µs | gap |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, r in result["networks"].items():
        lines.append(
            f"| {name} | {r['kind']} | {r['step_us']:.0f} | {r['mflop']:.1f} | "
            f"{r['limit_us']:.0f} | {r['gap']:.1f}x |"
        )
    for name, r in result["networks"].items():
        lines += ["", f"{name}, self time per step (µs), top operations:", ""]
        lines += ["| operation | µs/step | calls/step |", "|---|---:|---:|"]
        lines += [f"| `{o['op']}` | {o['self_us']:.0f} | {o['calls']:.0f} |" for o in r["ops"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    result = run(args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile_step.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (args.out / "profile_step.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
