"""Launch ``cnnlab train`` (through tests/train/fault_worker.py) as one process, or under
two torchrun agents on localhost: ``--nnodes=2``, c10d rendezvous, one gloo worker each,
as two machines of a cluster would run it (docs/cluster.md)."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.train import checkpoint, runs

WORKER = Path(__file__).with_name("fault_worker.py")
ELASTIC_WORKER = Path(__file__).with_name("elastic_worker.py")
SRC = Path(__file__).parents[2] / "src"
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def environment() -> dict[str, str]:
    """One thread per process (two cores, four processes), this checkout's cnnlab first,
    and torchrun's fresh store per round. The user's cache stays (a fresh one would build
    the C++ kernels again, a minute); a folder's image cache there is keyed by its files."""
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return os.environ | {
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": path,
        # torchrun's own setting (docs/cluster.md): each rendezvous round its own store, so
        # a restarted round never reads the keys of the round before
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }


CLUSTER_DOC = Path(__file__).parents[2] / "docs" / "cluster.md"


def documented_launch(
    port: int, run_id: str, max_restarts: int, elastic: bool = False
) -> list[str]:
    """The torchrun flags of docs/cluster.md's batch script (``elastic``: of its elastic
    line, ``--nnodes=1:...``), for two agents here: its variables given local values (2
    nodes, 1 process each, the head 127.0.0.1), its port and restart count the test's. The
    tests launch exactly these."""
    line = next(
        t
        for t in CLUSTER_DOC.read_text(encoding="utf-8").splitlines()
        if "srun torchrun" in t and ("--nnodes=1:" in t) == elastic
    )
    words = shlex.split(line)
    flags = words[words.index("torchrun") + 1 : words.index("-m")]
    local = {"$SLURM_NNODES": "2", "$PROCS_PER_NODE": "1", "$HEAD": "127.0.0.1"}
    local |= {"$SLURM_JOB_ID": run_id, ":29500": f":{port}"}
    out = []
    for flag in flags:
        for name, value in local.items():
            flag = flag.replace(name, value)
        if flag.startswith("--max-restarts="):
            flag = f"--max-restarts={max_restarts}"
        out.append(flag)
    return out


def documented_environment() -> dict[str, str]:
    """The ``export NAME=VALUE`` lines of the batch script with a constant value."""
    found = re.findall(r"^export (\w+)=(\w+)\b", CLUSTER_DOC.read_text(), flags=re.M)
    return dict(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_process(cwd: Path, worker: list[str], train: list[str]) -> str:
    """The worker as one plain process; its output (it must succeed)."""
    cmd = [sys.executable, str(WORKER), *worker, "--", *train]
    proc = subprocess.run(
        cmd, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def two_agents(
    cwd: Path, worker: list[str], train: list[str], max_restarts: int = 0
) -> tuple[list[int], str]:
    """Two torchrun agents on 127.0.0.1 (as two nodes), one worker each; their exit codes
    and their joined output."""
    port = free_port()
    launch = [sys.executable, "-m", "torch.distributed.run"]
    launch += documented_launch(port, f"cnnlab-{port}", max_restarts)
    # checks its workers 5 times a second, not 10 times slower (torchrun's default): a
    # test's restart comes sooner
    launch += ["--monitor-interval=0.2", str(WORKER), *worker, "--", *train]
    logs = [cwd / f"agent{i}.log" for i in range(2)]
    env = environment()
    procs = []
    for log in logs:
        with log.open("w") as f:
            procs.append(
                subprocess.Popen(launch, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
            )
    deadline = time.monotonic() + 240
    try:
        return _wait_all(procs, logs, deadline)
    finally:
        _kill_all(procs)


def _wait_all(
    procs: list[subprocess.Popen[bytes]], logs: list[Path], deadline: float
) -> tuple[list[int], str]:
    """Every agent's exit code, waited for until ``deadline``, and their logs together."""
    codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    return codes, "\n".join(log.read_text() for log in logs)


def _kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def store_host(port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` listens on ``port`` (hosts the rendezvous store), if one does yet:
    read from /proc, so the store is not disturbed by a probing connection."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:  # closed since the listing
                continue
    return None


def elastic_agents(
    cwd: Path, worker: list[str], train: list[str], max_restarts: int
) -> tuple[list[int], str]:
    """Two torchrun agents with docs/cluster.md's elastic flags (``--nnodes=1:2``), started
    together, one worker each, running tests/train/elastic_worker.py; the pid of the one
    that hosts the c10d store (whichever bound the port first) is written to
    ``cwd/host.pid`` for the workers. The exit codes (the host's first) and the output."""
    port = free_port()
    launch = [sys.executable, "-m", "torch.distributed.run"]
    launch += documented_launch(port, f"cnnlab-{port}", max_restarts, elastic=True)
    launch += ["--monitor-interval=0.2", str(ELASTIC_WORKER), *worker]
    launch += ["--host-pid", str(cwd / "host.pid"), "--", *train]
    logs = [cwd / f"agent{i}.log" for i in range(2)]
    env = environment()
    procs: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + 240
    try:
        for log in logs:
            with log.open("w") as f:
                procs.append(
                    subprocess.Popen(launch, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
                )
        pids = [p.pid for p in procs]
        while (host := store_host(port, pids)) is None:
            assert all(p.poll() is None for p in procs), "an agent ended before the rendezvous"
            assert time.monotonic() < deadline, "no agent hosted the rendezvous store"
            time.sleep(0.02)
        (cwd / "host.tmp").write_text(str(host))
        (cwd / "host.tmp").replace(cwd / "host.pid")  # whole, for a worker that reads it
        if host != pids[0]:
            procs.reverse()
            logs.reverse()
        return _wait_all(procs, logs, deadline)
    finally:
        _kill_all(procs)


def history(run: Path) -> list[dict[str, float]]:
    """history.csv without the wall-clock seconds."""
    rows = runs.read_history(run / "history.csv")
    return [{k: row[k] for k in ("epoch", *METRICS)} for row in rows]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return dict(checkpoint.load_checkpoint(run / "last.pt")["model"])


def assert_identical(run: Path, reference: Path) -> None:
    """The same history, number for number, and the same weights, bit for bit."""
    assert history(run) == history(reference)
    w, ref = weights(run), weights(reference)
    assert w.keys() == ref.keys()
    for key in ref:
        assert torch.equal(w[key], ref[key]), key


def assert_close(run: Path, reference: Path) -> None:
    """Two processes against one: the same history and weights to float tolerance (the
    all-reduce sums in another order; Adam's epsilon magnifies it in a few weights)."""
    h, ref = history(run), history(reference)
    assert len(h) == len(ref)
    for row, want in zip(h, ref, strict=True):
        for key in METRICS:
            assert row[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), (row, want)
    w, wref = weights(run), weights(reference)
    assert w.keys() == wref.keys()
    for key in wref:
        torch.testing.assert_close(w[key], wref[key], rtol=1e-3, atol=1e-4)
