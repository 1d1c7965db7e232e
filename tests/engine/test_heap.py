"""glibc's heap kept between training steps (cnnlab.engine.heap): decided with the engine,
and what it changes: a freed map's pages are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cnnlab.engine import heap
from cnnlab.engine.choice import resolve
from cnnlab.engine.fastpath import make_step
from cnnlab.models import build_module, parse_compact
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import make_optimizer

NET = "Input(8,8,3) Conv2D(4,3,same) BatchNormalization ReLU GlobalAveragePooling2D Dense(3)"

# Minor page faults of a training step (a VGG block pair at 64x64x3, batch 32: 17 MiB maps)
# with the choice as resolved and with the heap left as glibc has it, in a fresh process
# each (the setting is the process's); its time for the record, not the test
FAULTS = """
import dataclasses, resource, sys, time, torch
from cnnlab.engine.choice import resolve
from cnnlab.engine.fastpath import make_step
from cnnlab.models import build_module, parse_compact
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import make_optimizer

desc = parse_compact(
    "Input(64,64,3) Conv2D(32,3,same) BatchNormalization ReLU MaxPooling2D(2) "
    "Conv2D(64,3,same) BatchNormalization ReLU MaxPooling2D(2) GlobalAveragePooling2D "
    "Dense(10,softmax)", "m")
choice = resolve(desc, "cpu")
choice = dataclasses.replace(choice, heap=choice.heap and sys.argv[1] == "kept")
model = build_module(desc)
step = make_step(model, make_optimizer(model, TrainConfig()), choice=choice)
x, y = torch.rand(32, 3, 64, 64), torch.randint(0, 10, (32,))
for _ in range(3):
    step(x, y, None)
faults, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for _ in range(5):
    step(x, y, None)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(faults / 5, (time.perf_counter() - t) / 5)
"""


def step_faults(how: str) -> float:
    run = subprocess.run(
        [sys.executable, "-c", FAULTS, how], capture_output=True, text=True, check=True
    )
    return float(run.stdout.split()[0])


@pytest.mark.skipif(not heap.available(), reason="not glibc")
def test_a_kept_heap_reuses_a_steps_pages() -> None:
    """Measured: about 8,500 page faults a step with glibc's own settings (each step's
    largest maps come back from the kernel as fresh pages), 40-100 with the heap kept."""
    plain, kept = step_faults("glibc"), step_faults("kept")
    assert plain > 2000, plain
    assert kept < plain / 10, (plain, kept)


def test_the_choice_keeps_the_heap_on_a_cpu_for_the_fast_engine_only() -> None:
    desc = parse_compact(NET, "m")
    fast = resolve(desc, "cpu", available=True)
    assert fast.heap == heap.available() and fast.to_dict()["heap_kept"] == fast.heap
    assert resolve(desc, "cpu", native=False).heap == heap.available()  # PyTorch ops: too
    assert not resolve(desc, "cpu", engine="plain").heap  # the reference loop as PyTorch's
    assert not resolve(desc, "cuda", available=False).heap  # the GPU's memory is its own


def test_making_a_step_keeps_the_heap_as_the_choice_says(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(heap, "keep", lambda: calls.append(True) or True)
    desc = parse_compact(NET, "m")
    for engine, want in (("plain", []), ("fast", [True] if heap.available() else [])):
        calls.clear()
        model = build_module(desc)
        make_step(model, make_optimizer(model, TrainConfig()), choice=resolve(desc, "cpu",
                  engine=engine, available=False))  # fmt: skip
        assert calls == want, engine
