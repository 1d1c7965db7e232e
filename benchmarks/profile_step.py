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
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from run_bench import HERE, KERAS_PY, data_dir

from cnnlab.data.mnist import load_mnist
from cnnlab.data.scaling import InputScale
from cnnlab.engine.choice import EngineChoice, resolve
from cnnlab.engine.fastpath import Step, make_step
from cnnlab.interop.keras_import import read_keras
from cnnlab.models import ModelDescription, build_module, create_model, parse_compact
from cnnlab.models import layers as L
from cnnlab.models.zoo import resnet1d, resnet_small
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import make_optimizer

BATCH = 32
ZOO_2D = ("conv2d_same_strides", "conv2d_bn_dilated")


def rgb_networks() -> dict[str, ModelDescription]:
    """The RGB rows: Keras' CIFAR-10 CNN (32x32x3), the VGG-style BN network (64x64x3) and
    the residual template at 32x32x3, ten classes each (``keras_rgb.py`` builds the same)."""
    vgg = " ".join(
        f"Conv2D({f},3,same) BatchNormalization Activation(relu) MaxPooling2D(2)"
        for f in (32, 64, 128)
    )
    return {
        "cifar_cnn": parse_compact(
            "Input(32,32,3) Conv2D(32,3,same,relu) Conv2D(32,3,relu) MaxPooling2D(2) "
            "Dropout(0.25) Conv2D(64,3,same,relu) Conv2D(64,3,relu) MaxPooling2D(2) "
            "Dropout(0.25) Flatten Dense(512,relu) Dropout(0.5) Dense(10,softmax)",
            "cifar_cnn",
        ),
        "vgg_bn": parse_compact(
            f"Input(64,64,3) {vgg} GlobalAveragePooling2D Dense(10,softmax)", "vgg_bn"
        ),
        "resnet_small": resnet_small((32, 32, 3), 10),
    }


RGB_NAMES = ("cifar_cnn", "vgg_bn", "resnet_small")


def series_networks() -> dict[str, ModelDescription]:
    """Issue 23's series row: ``resnet1d`` on JapaneseVowels' shape (29 steps of 12
    channels, 9 classes); its Keras step is ``bench_fcn1d.py``'s (an epoch, not a step)."""
    return {"resnet1d": resnet1d((29, 12), 9)}


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


def gemm_rate(device: torch.device) -> float:
    """float32 FLOP/s of a square matrix product on ``device`` (1024 on a CPU, 4096 on a
    GPU), the best of five."""
    n = 1024 if device.type == "cpu" else 4096
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        torch.mm(a, b)
    best = math.inf
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / 10)
    return 2 * n**3 / best


def batches(x: torch.Tensor, y: torch.Tensor) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """Batch ``i`` of 32 from (x, y), in a fixed shuffled order."""
    order = torch.randperm(len(x), device=x.device)

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order[(i * BATCH) % (len(x) - BATCH) :][:BATCH]
        return x.index_select(0, idx), y.index_select(0, idx)

    return batch


PIXELS = InputScale(255.0, "uint8 pixels divided by 255")  # MNIST's batches stay uint8


def make(desc: ModelDescription, choice: EngineChoice, device: torch.device) -> Step:
    torch.manual_seed(42)
    model = build_module(desc).to(device)
    model.train()
    opt = make_optimizer(model, TrainConfig())
    return make_step(model, opt, scale=PIXELS, choice=choice)


def timed(step: Step, batch: Callable[[int], tuple], steps: int, warm: int) -> float:
    """Seconds per step: the median of five chunks after ``warm`` steps (the allocator,
    MKL-DNN's primitive cache, the weights moving); the machine's drift is not the step's."""
    cuda = next(step.model.parameters()).is_cuda  # type: ignore[attr-defined]
    for i in range(warm):
        step(*batch(i), None)
    chunks = []
    for c in range(5):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(steps // 5):
            step(*batch(c * steps + i), None)
        if cuda:
            torch.cuda.synchronize()
        chunks.append((time.perf_counter() - t) / (steps // 5))
    return float(np.median(chunks))


def top_ops(step: Step, batch: Callable[[int], tuple], n: int) -> list[dict[str, Any]]:
    """Self CPU time per step of the ten costliest operations over ``n`` steps."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(n):
            step(*batch(i), None)
    rows = [
        {"op": ev.key, "self_us": ev.self_cpu_time_total / n, "calls": ev.count / n}
        for ev in prof.key_averages()
    ]
    rows.sort(key=lambda r: -r["self_us"])
    return rows[:10]


def same(a: EngineChoice, b: EngineChoice) -> bool:
    return (a.whole is None) == (b.whole is None) and dict(a.blocks) == dict(b.blocks)


def profile(
    desc: ModelDescription, batch: Callable[[int], tuple], steps: int, warm: int,
    device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    """The step ``cnnlab train`` chooses (:func:`cnnlab.engine.choice.resolve`), profiled;
    the PyTorch path (``native=False``) and every kernel (the rule off) timed beside it."""
    chosen = resolve(desc, device)
    step = make(desc, chosen, device)
    r: dict[str, Any] = {
        "kind": type(step).__name__,
        "step_us": timed(step, batch, steps, warm) * 1e6,
    }
    r["ops"] = top_ops(step, batch, min(200, steps)) if device.type == "cpu" else []
    r["native"] = chosen.whole is not None
    r["reasons"] = list(chosen.reasons)
    for name, other in (
        ("pytorch", resolve(desc, device, native=False)),
        ("kernels", resolve(desc, device, rule=False)),
    ):
        if same(other, chosen):
            r[f"{name}_us"] = r["step_us"]
        else:
            r[f"{name}_us"] = timed(make(desc, other, device), batch, steps, warm) * 1e6
    return r


def keras_steps(names: list[str], batches: int) -> dict[str, Any]:
    """ms per step of the RGB networks in Keras/TensorFlow (keras_rgb.py, its own venv)."""
    if not KERAS_PY.exists():
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "keras.json"
        cmd = [str(KERAS_PY), str(HERE / "keras_rgb.py"), "--json", str(out)]
        subprocess.run([*cmd, "--nets", *names, "--batches", str(batches)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        return dict(json.loads(out.read_text()))


def run(steps: int, rgb_steps: int, only: str, device: torch.device, keras: bool) -> dict:
    rate = gemm_rate(device)
    out: dict[str, Any] = {"gemm_gflops": rate / 1e9, "threads": torch.get_num_threads()}
    out["load_start"] = os.getloadavg()
    out["device"] = str(device)
    todo: list[tuple[str, ModelDescription, Callable[[int], tuple], int, int]] = []
    if only in ("all", "mnist"):
        folder = data_dir()
        mnist = load_mnist(folder, allow_download=False)
        x = torch.from_numpy(mnist.x_train[:45000].copy()).unsqueeze(1).to(device)
        y = torch.from_numpy(mnist.y_train[:45000].astype(np.int64)).to(device)
        todo += [(n, d, batches(x, y), steps, 300) for n, d in networks(folder).items()]
    if only in ("all", "rgb"):
        for name, desc in {**rgb_networks(), **series_networks()}.items():
            g = torch.Generator().manual_seed(0)
            x = torch.rand(8 * BATCH, *desc.input_shape, generator=g).movedim(-1, 1)
            y = torch.randint(0, desc.info[-1].out_shape[-1], (8 * BATCH,), generator=g)
            todo.append((name, desc, batches(x.contiguous().to(device), y.to(device)),
                         rgb_steps, 20))  # fmt: skip
    nets = {}
    for name, desc, batch, n, warm in todo:
        r = profile(desc, batch, n, warm, device)
        r["mflop"] = step_flops(desc) / 1e6
        r["limit_us"] = step_flops(desc) / rate * 1e6
        r["gap"] = r["step_us"] / r["limit_us"]
        r["params"] = sum(q.numel() for q in build_module(desc).parameters())
        nets[name] = r
        print(f"{name}: {r['step_us']:.0f} us/step, limit {r['limit_us']:.0f} us", flush=True)
    rgb = [n for n in RGB_NAMES if n in nets]
    k = keras_steps(rgb, max(30, rgb_steps)) if keras and rgb and device.type == "cpu" else {}
    for name in rgb:
        if name in k.get("nets", {}):
            nets[name]["keras_us"] = k["nets"][name]["step_ms"] * 1e3
    out["keras_stack"] = k.get("stack")
    out["networks"] = nets
    out["load_end"] = os.getloadavg()
    return out


def markdown(result: dict[str, Any], ops: bool = True) -> str:
    """The table of steps, then (``ops``) each network's costliest operations."""
    start, end = result["load_start"][0], result["load_end"][0]
    lines = [
        f"float32 matrix product on {result['device']}: {result['gemm_gflops']:.1f} GFLOP/s "
        f"({result['threads']} threads); load average {start:.2f} at the start, {end:.2f} at "
        "the end.",
        "",
        "| network | step chosen | µs/step | PyTorch path µs | every kernel µs | Keras µs | "
        "MFLOP/step | arithmetic limit µs | gap |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["networks"].items():
        keras = f"{r['keras_us']:.0f}" if "keras_us" in r else "-"
        lines.append(
            f"| {name} | {r['kind']} | {r['step_us']:.0f} | {r['pytorch_us']:.0f} | "
            f"{r['kernels_us']:.0f} | {keras} | {r['mflop']:.1f} | {r['limit_us']:.0f} | "
            f"{r['gap']:.1f}x |"
        )
    for name, r in result["networks"].items():
        if not (ops and r["ops"]):
            continue
        lines += ["", f"{name}, self time per step (µs), top operations:", ""]
        lines += ["| operation | µs/step | calls/step |", "|---|---:|---:|"]
        lines += [f"| `{o['op']}` | {o['self_us']:.0f} | {o['calls']:.0f} |" for o in r["ops"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400, help="timed steps, MNIST networks")
    ap.add_argument("--rgb-steps", type=int, default=60, help="timed steps, RGB networks")
    ap.add_argument("--only", choices=("all", "mnist", "rgb"), default="all")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--no-keras", action="store_true", help="leave out the Keras steps")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    device = torch.device(args.device)
    result = run(args.steps, args.rgb_steps, args.only, device, not args.no_keras)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile_step.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (args.out / "profile_step.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
