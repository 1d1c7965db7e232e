"""Does channels-last memory pay on the PyTorch path of a training step? Interleaved A/B.

Four ways of the same autograd step (PyTorch operations only: the engine choice with
``native=False``), batch 32, fused Adam, on random inputs:

- ``nchw``: the network's own modules on NCHW inputs and NCHW weights (``model(x)``);
- ``plain_cl``: the same modules on channels-last inputs (the memory format alone);
- ``cl_in`` (what :func:`cnnlab.engine.fastpath.make_step` runs today): :func:`fast_forward`,
  which makes every 4-D input channels-last, with the weights left NCHW;
- ``cl_all``: ``cl_in`` with the weights channels-last too
  (``model.to(memory_format=torch.channels_last)``).

The ways run in turn, a chunk of steps each (at least 0.3 s), over several rounds (the 2
cores are shared, so only ratios from the same round mean anything); the medians of the
per-round ratios to ``cl_in`` are printed, with the load average (``os.getloadavg``) at the
start and the end.
A 1-D network (fcn1d) has 3-D maps: ``torch.channels_last`` does not apply to them, so
``plain_cl`` is ``nchw`` there and ``cl_all`` is ``cl_in``: its ratios show the noise.

``--no-mkldnn`` runs the same with oneDNN off (PyTorch's own convolutions), to see whether
oneDNN is the faster way here.

Usage: python benchmarks/bench_memory_format.py [--rounds 5] [--steps 4] [--nets vgg_bn ...]
[--no-mkldnn]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from profile_step import rgb_networks

from cnnlab.engine.choice import resolve
from cnnlab.engine.fastpath import AutogradStep
from cnnlab.engine.tensors import CL
from cnnlab.models import ModelDescription, build_module, create_model
from cnnlab.models.zoo import fcn1d
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import make_optimizer

BATCH = 32
CHUNK_S = 0.3
WAYS = ("nchw", "plain_cl", "cl_in", "cl_all")


def descriptions() -> dict[str, ModelDescription]:
    nets = dict(rgb_networks())
    nets.update({f"case{i}": create_model(f"case{i}").description for i in (1, 2, 3)})
    nets["fcn1d"] = fcn1d((152, 1), 2)  # a long UCR-sized series
    return nets


def make_way(desc: ModelDescription, way: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step of ``desc`` in ``way`` (same seed, same weights for every way)."""
    torch.manual_seed(0)
    model = build_module(desc)
    model.train()
    if way == "cl_all":
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, TrainConfig())
    step = AutogradStep(model, opt, choice=resolve(desc, native=False))
    if way not in ("nchw", "plain_cl"):
        return lambda x, y: (step(x, y), None)[1]
    cl = way == "plain_cl"

    def plain(x: torch.Tensor, y: torch.Tensor) -> None:
        # the same fused Adam as the fast step, on the modules' own forward pass
        loss = F.cross_entropy(
            model(x.contiguous(memory_format=CL) if cl and x.ndim == 4 else x), y
        )
        for p in step.params:
            p.grad = None
        loss.backward()
        step.adam.step([p.grad if p.grad is not None else torch.zeros_like(p) for p in step.params])

    return plain


def bench(desc: ModelDescription, rounds: int, steps: int) -> dict[str, float]:
    """Median per-round ratio of each way's step time to ``cl_in``'s, and cl_in's ms."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, *desc.input_shape, generator=g).movedim(-1, 1).contiguous()
    y = torch.randint(0, desc.output_shape[-1], (BATCH,), generator=g)
    ways = {w: make_way(desc, w) for w in WAYS}
    for f in ways.values():  # warm-up: oneDNN's primitive cache, the allocator
        for _ in range(2):
            f(x, y)
    t = time.perf_counter()
    ways["cl_in"](x, y)
    # at least CHUNK_S seconds a chunk: a 3 ms step timed alone is the scheduler's noise
    steps = max(steps, math.ceil(CHUNK_S / (time.perf_counter() - t)))
    times: dict[str, list[float]] = {w: [] for w in WAYS}
    for r in range(rounds):
        order = WAYS if r % 2 == 0 else WAYS[::-1]  # alternate, so drift is not one way's
        for w in order:
            t = time.perf_counter()
            for _ in range(steps):
                ways[w](x, y)
            times[w].append((time.perf_counter() - t) / steps)
    out = {w: statistics.median(a / b for a, b in zip(times[w], times["cl_in"], strict=True))
           for w in WAYS}  # fmt: skip
    out["cl_in_ms"] = statistics.median(times["cl_in"]) * 1e3
    return out


def main() -> None:
    nets = descriptions()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="least steps per way per round")
    ap.add_argument("--nets", nargs="*", choices=sorted(nets), default=list(nets))
    ap.add_argument(
        "--no-mkldnn",
        action="store_true",
        help="torch.backends.mkldnn off: PyTorch's own convolutions, not oneDNN's",
    )
    args = ap.parse_args()
    torch.backends.mkldnn.enabled = not args.no_mkldnn
    print(f"load average at the start: {os.getloadavg()[0]:.2f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, mkldnn {torch.backends.mkldnn.enabled}")  # fmt: skip
    print("| network | cl_in ms/step | nchw / cl_in | plain_cl / cl_in | cl_all / cl_in |")
    print("|---|---:|---:|---:|---:|")
    for name in args.nets:
        r = bench(nets[name], args.rounds, args.steps)
        print(f"| {name} | {r['cl_in_ms']:.0f} | {r['nchw']:.2f} | {r['plain_cl']:.2f} | "
              f"{r['cl_all']:.2f} |",
              flush=True)  # fmt: skip
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
