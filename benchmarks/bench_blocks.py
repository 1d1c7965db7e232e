"""Per block kind: cnnlab's C++ kernels against the PyTorch (oneDNN) path, by map size and width.

The numbers behind the engine's choice rule (:mod:`cnnlab.engine.choice`). Each point is a
training step (forward, loss, backward, Adam) at batch 32 of a small network built around
one block, on random inputs::

    Input(S, S, C) Conv2D(C, 1) <block> GlobalAveragePooling2D Dense(10)

(the 1x1 convolution first so that the block needs its input gradient, as a block inside a
network does; ``dense`` is ``Input(S, S, C) Flatten Dense(512, relu) Dense(10)``;
``bn_relu`` and ``max_pool`` are BatchNormalization + ReLU and 2x2 max pooling alone,
after the 1x1 convolution). Three
ways: ``kernels``, the whole step in C++ (``NativeStep``); ``mixed``, autograd with the
block's ``conv_pool_relu`` kernel as an autograd node (that kind only); ``pytorch``, autograd
on PyTorch operations alone (``native=False``). ``ratio``: kernels (or mixed) over pytorch;
above 1 the kernel is slower. Points whose step exceeds ``--max-gflop`` are left out.

Usage: python benchmarks/bench_blocks.py [--sizes 8 16 32 64 128] [--channels 16 64 256]
[--kinds conv_pool_relu conv_bn_relu conv_relu bn_relu max_pool dense] [--out benchmarks/results]
Writes ``bench_blocks.json`` and ``bench_blocks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cnnlab.engine.choice import resolve
from cnnlab.engine.fastpath import Step, make_step
from cnnlab.models import ModelDescription, build_module, parse_compact
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import make_optimizer

HERE = Path(__file__).resolve().parent
BATCH = 32
BLOCKS = {
    "conv_pool_relu": "Conv2D({c},3,relu,name=b) MaxPooling2D(2,name=p)",
    "conv_bn_relu": (
        "Conv2D({c},3,same,name=b) BatchNormalization(name=bn) Activation(relu,name=r) "
        "MaxPooling2D(2,name=p)"
    ),
    "conv_relu": "Conv2D({c},3,same,relu,name=b)",
    # the map layers alone, after the linear 1x1 convolution
    "bn_relu": "BatchNormalization(name=bn) Activation(relu,name=r)",
    "max_pool": "MaxPooling2D(2,name=p)",
}
TAPS = {"conv_pool_relu": 9, "conv_bn_relu": 9, "conv_relu": 9}  # the block's kernel size
WAYS = ("kernels", "mixed", "pytorch")


def network(kind: str, size: int, c: int) -> ModelDescription:
    head = f"Input({size},{size},{c})"
    if kind == "dense":
        line = f"{head} Flatten(name=f) Dense(512,relu,name=b) Dense(10,softmax,name=out)"
    else:
        block = BLOCKS[kind].format(c=c)
        line = (
            f"{head} Conv2D({c},1,name=pre) {block} GlobalAveragePooling2D(name=gap) "
            "Dense(10,softmax,name=out)"
        )
    return parse_compact(line, f"{kind}_{size}_{c}")


def step_gflop(kind: str, size: int, c: int) -> float:
    """Dense multiply-adds of one step (x2 FLOP, x3 for forward + both gradients)."""
    px = BATCH * size * size
    macs = px * c * 512 if kind == "dense" else px * c * c * (TAPS.get(kind, 0) + 1)
    return 6 * macs / 1e9


def timed(step: Step, x: torch.Tensor, y: torch.Tensor, budget: float) -> float:
    """Median seconds per step over five chunks, after a warm-up."""
    for _ in range(3):
        step(x, y, None)
    t = time.perf_counter()
    step(x, y, None)
    n = max(1, min(50, int(budget / 5 / max(time.perf_counter() - t, 1e-6))))
    chunks = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            step(x, y, None)
        chunks.append((time.perf_counter() - t) / n)
    return statistics.median(chunks)


def way_step(desc: ModelDescription, way: str) -> tuple[Step, str] | None:
    """The step of ``desc`` one way, and its class; None where that way does not apply."""
    torch.manual_seed(0)
    model = build_module(desc)
    model.train()
    opt = make_optimizer(model, TrainConfig())
    # every kernel the plan has, whatever the measured rule says: this is what it measures
    choice = resolve(desc, "cpu", native=way != "pytorch", rule=False, whole_step=way != "mixed")
    if way == "mixed" and not choice.blocks:
        return None
    step = make_step(model, opt, choice=choice)
    if way == "kernels" and type(step).__name__ != "NativeStep":
        return None
    return step, type(step).__name__


def point(kind: str, size: int, c: int, budget: float) -> dict[str, Any]:
    desc = network(kind, size, c)
    x = torch.randn(BATCH, c, size, size)
    y = torch.randint(0, 10, (BATCH,))
    row: dict[str, Any] = {"kind": kind, "size": size, "channels": c}
    row["gflop"] = step_gflop(kind, size, c)
    for way in WAYS:
        made = way_step(desc, way)
        if made is not None:
            row[f"{way}_ms"] = timed(made[0], x, y, budget) * 1e3
    base = row["pytorch_ms"]
    for way in ("kernels", "mixed"):
        if f"{way}_ms" in row:
            row[f"{way}_ratio"] = row[f"{way}_ms"] / base
    return row


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"batch {BATCH}, {result['threads']} threads, load {result['load'][0]:.2f} at start, "
        f"{result['load_end'][0]:.2f} at the end",
        "",
        "| block | S | C | GFLOP/step | C++ step ms | mixed ms | PyTorch ms | C++ / PyTorch "
        "| mixed / PyTorch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(r: dict[str, Any], key: str) -> str:
        return f"{r[key]:.2f}" if key in r else "-"

    for r in result["rows"]:
        ratio = r.get("kernels_ratio", math.nan)
        mixed = f"{r['mixed_ratio']:.2f}" if "mixed_ratio" in r else "-"
        lines.append(
            f"| {r['kind']} | {r['size']} | {r['channels']} | {r['gflop']:.2f} | "
            f"{ms(r, 'kernels_ms')} | {ms(r, 'mixed_ms')} | {ms(r, 'pytorch_ms')} | "
            f"**{ratio:.2f}** | {mixed} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=[*BLOCKS, "dense"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 32, 64, 128])
    ap.add_argument("--channels", nargs="+", type=int, default=[16, 32, 64, 128, 256])
    ap.add_argument("--max-gflop", type=float, default=8.0, help="leave out larger steps")
    ap.add_argument("--budget", type=float, default=0.5, help="timed seconds per way")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    result: dict[str, Any] = {"threads": torch.get_num_threads(), "load": os.getloadavg()}
    rows = []
    for kind in args.kinds:
        for size in args.sizes:
            for c in args.channels:
                if step_gflop(kind, size, c) > args.max_gflop:
                    continue
                rows.append(point(kind, size, c, args.budget))
                r = rows[-1]
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                  for k, v in r.items()}), flush=True)  # fmt: skip
    result["rows"] = rows
    result["load_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_blocks.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (args.out / "bench_blocks.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
