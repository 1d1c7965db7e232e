"""Runs ``cnnlab train`` (as tests/train/fault_worker.py does) and, at a chosen training
step, kills a whole node: the torchrun agent that does not host the rendezvous store,
and its worker, both with SIGKILL (tests only).

Usage::

    python elastic_worker.py --kill-at STEP --host-pid FILE -- CNNLAB_ARGS...

``FILE`` holds the pid of the agent that hosts the c10d store (the test writes it once the
store listens); the worker whose agent is another one kills that agent and then itself
once the run's global step reaches ``STEP``, in torchrun's first round only. Each worker
prints its rank, group size and restart count when it starts. Nothing in cnnlab reads a
setting for this.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch
from fault_worker import install  # this folder: the script's own, first on sys.path

from cnnlab.cli.main import main
from cnnlab.train.position import Schedule


def kill_node_at(kill_at: int, host_pid: Path) -> None:
    """Wrap Schedule.due (called after every step) to kill this node at ``kill_at``."""
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    due = Schedule.due

    def due_or_die(self: Schedule, epoch: int, step: int) -> bool:
        # the file is read here, steps after the rendezvous, long after the test wrote it
        if self.global_step(epoch, step) >= kill_at and os.getppid() != int(host_pid.read_text()):
            # the agent first, so that it never sees its worker die and restarts nothing
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        return due(self, epoch, step)

    Schedule.due = due_or_die  # type: ignore[method-assign]


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--kill-at", type=int, required=True)
    p.add_argument("--host-pid", type=Path, required=True)
    p.add_argument("cnnlab", nargs=argparse.REMAINDER)
    opts = p.parse_args()
    argv = opts.cnnlab[1:] if opts.cnnlab[:1] == ["--"] else opts.cnnlab
    torch.set_num_threads(1)
    group = ("RANK", "WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT")
    rank, size, restarts = (os.environ.get(name, "?") for name in group)
    print(f"elastic_worker: rank {rank} of {size}, restart {restarts}", flush=True)
    install(0, 0, None, 240)  # the synthetic MNIST stand-in, as fault_worker's runs
    kill_node_at(opts.kill_at, opts.host_pid)
    sys.exit(main(argv))
