"""Mid-epoch checkpoints (``--checkpoint-every``), kills at any step, and a restarted
command continuing its run only when its config and data match (issue 24)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli.main import main
from cnnlab.errors import CnnlabError
from cnnlab.train import distributed
from cnnlab.train.position import Schedule
from train.agents import WORKER, assert_identical, environment

# Dropout: the kills must restore the random stream the masks are drawn from
NET = "Input(28,28,1) Conv2D(4,3,relu) MaxPooling2D Flatten Dropout(0.5) Dense(10,softmax)"
# 180 synthetic training images in batches of 3: 60 steps an epoch, 180 in the run
SERIAL = ["train", "--model", NET, "--epochs", "3", "--batch-size", "3", "--patience", "100"]
SERIAL += ["--checkpoint-every", "50", "--quiet"]
TOTAL = 180


def _serial(cwd: Path, engine: str, kills: list[int], out: str) -> str:
    """fault_worker's --serial story: kill the run at each of ``kills``, continue it."""
    cmd = [sys.executable, str(WORKER), "--engine", engine]
    if kills:
        cmd += ["--serial", ",".join(map(str, kills))]
    cmd += ["--", *SERIAL, "--out", out]
    proc = subprocess.run(
        cmd, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "n_kills"), [("fast", 10), ("plain", 3)])
def test_kills_at_random_steps_resume_to_the_same_history(
    tmp_path: Path, engine: str, n_kills: int, global_random_seed: int
) -> None:
    """One process killed (SIGKILL) at random steps, continued each time: the finished
    history and weights are the uninterrupted run's, bit for bit (dropout included)."""
    rng = np.random.default_rng([global_random_seed, n_kills])
    # one kill after the mid-epoch checkpoint of step 100 (epoch 2, step 40), others anywhere
    after_mid = int(rng.integers(101, 120))
    others = np.setdiff1d(np.arange(1, TOTAL), [after_mid])
    kills = sorted([after_mid, *(int(k) for k in rng.choice(others, n_kills - 1, replace=False))])
    _serial(tmp_path, engine, [], "reference")
    output = _serial(tmp_path, engine, kills, "run")
    assert output.count("killed at step") == n_kills
    assert "resuming run at step 40 of epoch 2" in output, (kills, output)
    assert_identical(tmp_path / "run", tmp_path / "reference")


# ------------------------------------------------------------------ in-process


def test_the_schedule_counts_steps_across_epochs() -> None:
    s = Schedule(every=50, minutes=0.0, steps_per_epoch=45, ctx=distributed.DistContext())
    due = [(e, k) for e in (1, 2, 3) for k in range(1, 46) if s.due(e, k)]
    assert due == [(2, 5), (3, 10)]  # global steps 50 and 100; never an epoch's last step
    assert not Schedule(0, 0.0, 45, distributed.DistContext()).due(1, 10)


def test_the_schedule_also_keeps_time(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Schedule(every=0, minutes=2.0, steps_per_epoch=45, ctx=distributed.DistContext())
    now = [1000.0]
    monkeypatch.setattr("cnnlab.train.position.time.monotonic", lambda: now[0])
    s.written()
    now[0] += 119.0
    assert not s.due(1, 3)
    now[0] += 2.0
    assert s.due(1, 4) and not s.due(1, 45)  # never at an epoch's end: it writes anyway
    s.written()
    assert not s.due(1, 5)


def test_checkpoint_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for flags in (["--checkpoint-every", "-1"], ["--checkpoint-minutes", "nan"]):
        with pytest.raises(SystemExit) as exc:
            main(["train", *flags])
        assert exc.value.code == 2
        assert "--checkpoint-" in capsys.readouterr().err


TINY = ["train", "--case", "2", "--epochs", "2", "--batch-size", "16", "--quiet"]


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """Stop the run after global step ``at`` (no checkpoint of that step), as a kill would."""
    due = Schedule.due

    def due_or_stop(self: Schedule, epoch: int, step: int) -> bool:
        if self.global_step(epoch, step) == at:
            raise KeyboardInterrupt
        return due(self, epoch, step)

    monkeypatch.setattr(Schedule, "due", due_or_stop)


@pytest.mark.usefixtures("synthetic_data")
def test_a_restarted_command_continues_only_its_own_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As torchrun restarts it: the same command continues the run from its mid-epoch
    checkpoint; another config or other data is one line, and the folder is untouched."""
    run, reference = tmp_path / "run", tmp_path / "reference"
    assert main([*TINY, "--out", str(reference)]) == 0
    train = [*TINY, "--out", str(run), "--checkpoint-every", "4"]
    with monkeypatch.context() as m:
        _interrupt_at(m, 18)  # 12 steps an epoch: after the checkpoint of step 16
        assert main(train) == 130
    assert torch.load(run / "last.pt", weights_only=True)["position"]["step"] == 4
    kept = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    assert main(train) == 2  # not restarted: the folder is refused, as before
    assert "already holds a run" in capsys.readouterr().err
    monkeypatch.setattr(distributed, "group_restarted", lambda _device: True)
    for other, why in (
        (["--seed", "7"], "seed=7"),
        (["--lr", "0.01"], "lr=0.01"),
        (["--case", "3"], "not the same run"),
        (["--val-split", "0.3"], "val_fraction=0.3"),
    ):
        assert main([*train, *other]) == 2  # the later flag wins
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == kept
    # the same command, with another checkpoint schedule (no change to what is computed)
    assert main([*TINY, "--out", str(run), "--checkpoint-every", "5"]) == 0
    assert f"resuming {run} at step 4 of epoch 2" in capsys.readouterr().out
    assert_identical(run, reference)


def test_a_lost_peer_is_named_in_one_line() -> None:
    gloo = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error [127.0.0.1]:1: "
        "Connection reset by peer"
    )
    assert "Connection reset by peer" in (distributed.peer_loss(gloo) or "")
    assert distributed.peer_loss(RuntimeError("shape mismatch in matmul")) is None
    assert distributed.peer_loss(ValueError("gloo")) is None
    assert isinstance(CnnlabError("x"), Exception)
