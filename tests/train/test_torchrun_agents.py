"""Two torchrun agents on localhost (``--nnodes=2``, c10d, gloo) train what one process
trains, and a worker killed with SIGKILL under ``--max-restarts=1`` costs nothing: torchrun
restarts the group, the same command continues the run from its last checkpoint, and the
finished history and weights are an uninterrupted run's, bit for bit (issue 24)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from image_runs import make_folder

from cnnlab import fileio
from train.agents import (
    assert_close,
    assert_identical,
    documented_environment,
    documented_launch,
    environment,
    one_process,
    two_agents,
)

# Case 3 (no dropout: one process and two follow the same random path); 180 training
# images in global batches of 8: 23 steps an epoch, the last one short
CASE3 = ["train", "--case", "3", "--epochs", "3", "--batch-size", "8", "--patience", "100"]
CASE3 += ["--quiet"]
STEPS = 3 * 23
FOLDER_NET = "Input(16,16,1) Conv2D(4,3,relu) MaxPooling2D Flatten Dense(3,softmax)"


def test_the_cluster_recipe_is_what_the_tests_run() -> None:
    """docs/cluster.md's torchrun flags and settings are the ones these tests launch with."""
    flags = documented_launch(1234, "job", 1)
    assert flags == [
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:1234",
        "--rdzv-id=job",
        "--max-restarts=1",
    ]
    exported = documented_environment()
    assert exported == {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    assert exported.items() <= environment().items()


@pytest.fixture(scope="module")
def case3_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Case 3 trained by one process and, uninterrupted, by two agents."""
    root = tmp_path_factory.mktemp("case3")
    one_process(root, [], [*CASE3, "--out", "one"])
    codes, output = two_agents(root, [], [*CASE3, "--out", "two"])
    assert codes == [0, 0], output[-4000:]
    return {"one": root / "one", "two": root / "two"}


@pytest.mark.slow
def test_two_agents_match_one_process_on_a_chapter_case(case3_runs: dict[str, Path]) -> None:
    assert_close(case3_runs["two"], case3_runs["one"])


@pytest.mark.slow
def test_two_agents_match_one_process_on_a_folder(tmp_path: Path) -> None:
    """A network trained on a folder of images: each rank reads its rows of each global
    batch from the folder's disk cache (built by the first run, reused by the agents)."""
    make_folder(tmp_path / "images", "L", per_class=10)
    train = ["train", "--model", FOLDER_NET, "--data", f"folder:{tmp_path / 'images'}"]
    train += ["--epochs", "8", "--batch-size", "4", "--patience", "1", "--quiet"]
    one_process(tmp_path, [], [*train, "--out", "one"])
    codes, output = two_agents(tmp_path, [], [*train, "--out", "two"])
    assert codes == [0, 0], output[-4000:]
    # early stopping: both ranks stop at the same epoch (each scores its share of the
    # validation set; the sums are all-reduced), that of one process
    assert fileio.read_json(tmp_path / "one" / "metrics.json")["stopped_early"]
    assert_close(tmp_path / "two", tmp_path / "one")


@pytest.mark.slow
@pytest.mark.parametrize(
    "every",
    [None, 5],  # epoch checkpoints only; a mid-epoch one every 5 steps
    ids=["epoch-checkpoints", "checkpoint-every-5"],
)
def test_a_killed_worker_is_restarted_and_the_run_continues(
    case3_runs: dict[str, Path], tmp_path: Path, every: int | None, global_random_seed: int
) -> None:
    rng = np.random.default_rng([global_random_seed, every or 0])
    # after the first checkpoint, so that the restart continues a run (not a new one)
    first = 23 if every is None else every
    kill_at = int(rng.integers(first + 1, STEPS))
    rank = int(rng.integers(0, 2))
    train = [*CASE3, "--out", "run"]
    if every is not None:
        train += ["--checkpoint-every", str(every)]
    worker = ["--kill-at", str(kill_at), "--kill-rank", str(rank)]
    codes, output = two_agents(tmp_path, worker, train, max_restarts=1)
    assert codes == [0, 0], f"killed rank {rank} at step {kill_at}\n" + output[-4000:]
    assert "exitcode: -9" in output  # torchrun saw the kill ...
    assert "continuing run from its last.pt" in output  # ... and the restart continued
    assert "Traceback" not in output
    # a surviving rank that saw its peer go says so in one line (it may instead have been
    # stopped by its agent first)
    for line in output.splitlines():
        if "lost its peers" in line:
            assert line.startswith("cnnlab: error: rank "), line
    assert_identical(tmp_path / "run", case3_runs["two"])
