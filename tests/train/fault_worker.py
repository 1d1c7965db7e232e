"""Runs ``cnnlab train`` with a SIGKILL at a chosen training step (tests only).

Usage::

    python fault_worker.py [--kill-at STEP] [--kill-rank R] [--engine E] [--serial K1,K2,..]
        [--n-train N] -- CNNLAB_ARGS...

The hook is installed here, in the worker, before ``cnnlab.cli.main.main`` runs: it wraps
:meth:`cnnlab.train.position.Schedule.due` (called after every training step) and kills
this process with SIGKILL once the run's global step reaches ``STEP``, on rank ``R``
only, and only in torchrun's first round (a restarted worker runs to the end). Nothing in
cnnlab reads a setting for this. ``--engine`` picks the engine the train command's
config gets; MNIST is replaced by the tests' synthetic stand-in (``--n-train`` images).

``--serial K1,K2,...`` runs one process's whole story: a child (forked before any
computation) trains and is killed at global step K1, the next one continues the run
(``--resume``, or ``--out`` again if no last.pt was written yet) and is killed at K2, ...,
and a last child finishes it. It prints one line per kill and exits 0 if every child
died as planned and the last one succeeded.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for conftest

import torch
from conftest import synthetic_mnist

from cnnlab import data
from cnnlab.cli import core
from cnnlab.cli.main import main
from cnnlab.train.position import Schedule


def install(kill_at: int, kill_rank: int, engine: str | None, n_train: int) -> None:
    """The synthetic data, the engine, and the kill at ``kill_at`` (0: none)."""
    mnist = synthetic_mnist(n_train=n_train, n_test=60)
    data.load_mnist = lambda *_a, **_k: mnist  # type: ignore[assignment]
    if engine is not None:
        settings = core.settings

        def with_engine(kind: str, **given: Any) -> dict[str, Any]:
            return settings(kind, **given) | {"engine": engine}

        core.settings = with_engine  # type: ignore[assignment]
    first_round = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    rank = int(os.environ.get("RANK", "0"))
    if kill_at <= 0 or not first_round or rank != kill_rank:
        return
    due = Schedule.due

    def due_or_die(self: Schedule, epoch: int, step: int) -> bool:
        if self.global_step(epoch, step) >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return due(self, epoch, step)

    Schedule.due = due_or_die  # type: ignore[method-assign]


def serial(kills: list[int], argv: list[str], opts: argparse.Namespace) -> int:
    """Kill one run at each of ``kills`` (global steps), continuing it each time."""
    out = Path(argv[argv.index("--out") + 1])
    for kill_at in [*kills, 0]:
        run = argv
        if (out / "last.pt").exists():
            run = [a for a in argv if a != "--out" and a != str(out)] + ["--resume", str(out)]
        pid = os.fork()
        if pid == 0:
            install(kill_at, 0, opts.engine, opts.n_train)
            os._exit(main(run))
        _, status = os.waitpid(pid, 0)
        if kill_at and not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            print(f"the run was to be killed at step {kill_at}: status {status}")
            return 1
        if not kill_at and os.waitstatus_to_exitcode(status) != 0:
            print(f"the last continuation failed: status {status}")
            return 1
        if kill_at:
            print(f"killed at step {kill_at}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--kill-at", type=int, default=0)
    p.add_argument("--kill-rank", type=int, default=0)
    p.add_argument("--engine", default=None)
    p.add_argument("--serial", default=None)
    p.add_argument("--n-train", type=int, default=240)
    p.add_argument("cnnlab", nargs=argparse.REMAINDER)
    opts = p.parse_args()
    argv = opts.cnnlab[1:] if opts.cnnlab[:1] == ["--"] else opts.cnnlab
    torch.set_num_threads(1)
    if opts.serial is not None:
        sys.exit(serial([int(k) for k in opts.serial.split(",")], argv, opts))
    install(opts.kill_at, opts.kill_rank, opts.engine, opts.n_train)
    sys.exit(main(argv))
