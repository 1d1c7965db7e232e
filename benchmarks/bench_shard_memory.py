"""Peak memory per rank, two torchrun processes training on a dataset larger than a rank's budget.

A uint8 dataset of ``--gb`` GB (64x64x3 images, random, 10 classes) is written as ``.npy``
files, twice the ``--limit-gb`` that stands for one rank's memory (``--max-memory-gb``).
Two processes (``torchrun --standalone --nproc-per-node=2``) each train one epoch of a
small CNN on it with cnnlab's loop (global batch 64, validation scored), in two ways:

- ``disk``: the splits are :class:`cnnlab.data.rows.RowView` s over the file, as a folder's
  image cache is: each rank reads only its own rows of each global batch
  (:mod:`cnnlab.engine.feed`), never the split;
- ``memory``: the control, the whole array loaded into every process;
- ``npz-stored`` and ``npz-compressed``: the same arrays as an ``.npz`` (``np.savez``,
  ``np.savez_compressed``) loaded by ``npz:PATH`` (:mod:`cnnlab.data.npz_rows`): rows read
  from the ``.npz`` itself, or from the ``.npy`` it is extracted to once (in the user
  cache, removed afterwards).

Each rank records its own peak RSS (``ru_maxrss``: the torchrun worker is a fresh process,
so the figure is its own, not a parent's) and its RSS before the data (Python, torch,
cnnlab). ``--sizes`` repeats the modes but ``memory`` at other data sizes: a peak that does not grow
with the data is the claim. ``--modes`` picks the modes run at ``--gb``. Results:
``benchmarks/results/bench_shard_memory.json`` (rows of other modes and sizes kept).

Usage: python benchmarks/bench_shard_memory.py [--gb 0.5] [--limit-gb 0.25]
       [--sizes 0.5,1.0] [--modes disk,memory,npz-stored,npz-compressed] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROW = (64, 64, 3)
NET = "Input(64,64,3) MaxPooling2D(4) Conv2D(4,3,relu) GlobalAveragePooling2D Dense(10,softmax)"


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_data(folder: Path, gb: float) -> int:
    """x.npy (N, 64, 64, 3) uint8 and y.npy, about ``gb`` GB, written in chunks."""
    n = int(gb * 1e9) // int(np.prod(ROW))
    folder.mkdir(parents=True, exist_ok=True)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.uint8, shape=(n, *ROW))
    rng = np.random.default_rng(0)
    for i in range(0, n, 4096):
        x[i : i + 4096] = rng.integers(0, 256, size=(min(4096, n - i), *ROW), dtype=np.uint8)
    x.flush()
    del x
    np.save(folder / "y.npy", (np.arange(n) % 10).astype(np.int64))
    return n


def write_npz(folder: Path, mode: str) -> None:
    """``folder/MODE.npz`` from x.npy and y.npy (np.savez writes a memmap in chunks)."""
    x = np.load(folder / "x.npy", mmap_mode="r")
    save = np.savez if mode == "npz-stored" else np.savez_compressed
    save(folder / f"{mode}.npz", x_train=x, y_train=np.load(folder / "y.npy"))


def worker(mode: str, folder: Path, out: Path, limit_gb: float) -> None:
    """One rank: train one epoch, then write its memory figures to ``out/rankR.json``."""
    import torch

    from cnnlab import budget
    from cnnlab.data import DataOptions, Dataset, Splits
    from cnnlab.data.datasets import load_dataset
    from cnnlab.data.rows import RowView
    from cnnlab.models import parse_compact
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.loop import fit

    torch.set_num_threads(1)
    before = rss_mb()
    y = np.load(folder / "y.npy")
    n = len(y)
    cut = [int(n * 0.8), int(n * 0.9)]
    description = parse_compact(NET, "shardnet")
    budget.check_training(description, 64, 1000, int(limit_gb * 1e9))  # the model fits
    spec = f"npz:{folder / 'x.npz'}"  # a spec the run's records accept (never read here)
    if mode.startswith("npz-"):
        spec = f"npz:{folder / (mode + '.npz')}"
        dataset = load_dataset(spec, DataOptions(progress=False, val_fraction=0.1))
        if not isinstance(dataset.splits.x_train, RowView):
            raise SystemExit(f"{mode}: x_train was loaded whole")
        source = str(dataset.splits.x_train.path)
    else:
        if mode == "disk":
            rows = RowView(folder / "x.npy")
            xs: list[Any] = [rows.take(slice(0, cut[0])), rows.take(slice(cut[0], cut[1]))]
            xs.append(rows.take(slice(cut[1], n)))
        else:
            x = np.load(folder / "x.npy")
            xs = [x[: cut[0]], x[cut[0] : cut[1]], x[cut[1] :]]
        splits = Splits(xs[0], y[: cut[0]], xs[1], y[cut[0] : cut[1]], xs[2], y[cut[1] :])
        dataset = Dataset(spec, splits, [str(i) for i in range(10)], "random images", "images")
        source = str(folder / "x.npy")
    config = TrainConfig(model=NET, data=spec, epochs=1, batch_size=64, patience=10)
    run = out / "run"
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
    fit(config, dataset, run, description=description, progress=False, log=lambda _m: None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    record = {"rank": rank, "rss_before_data_mb": before, "peak_rss_mb": peak, "n": n}
    record["source"] = source
    (out / f"rank{rank}.json").write_text(json.dumps(record))


def launch(mode: str, folder: Path, out: Path, limit_gb: float) -> list[dict[str, Any]]:
    """Two ranks under torchrun; their records."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += [__file__, "--worker", mode, str(folder), str(out), str(limit_gb)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent / "src")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=0.5, help="the dataset's size (GB)")
    p.add_argument("--limit-gb", type=float, default=0.25, help="one rank's memory budget")
    p.add_argument("--sizes", default="", help="more data sizes (GB), every mode but memory")
    p.add_argument("--modes", default="disk,memory,npz-stored,npz-compressed", help="at --gb")
    p.add_argument("--work", type=Path, default=None, help="where the data is written")
    p.add_argument("--worker", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        mode, folder, out, limit = args.worker
        worker(mode, Path(folder), Path(out), float(limit))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-shard-"))
    target = HERE / "results" / "bench_shard_memory.json"
    kept = json.loads(target.read_text()) if target.is_file() else []
    results: list[dict[str, Any]] = []
    try:
        sizes = [args.gb] + [float(s) for s in args.sizes.split(",") if s]
        for k, gb in enumerate(sizes):
            folder = work / f"data-{gb:g}"
            n = write_data(folder, gb)
            modes = args.modes.split(",")
            for mode in modes if k == 0 else [m for m in modes if m != "memory"]:
                if mode.startswith("npz-"):
                    write_npz(folder, mode)
                ranks = launch(mode, folder, work / f"{mode}-{gb:g}", args.limit_gb)
                if mode.startswith("npz-"):
                    (folder / f"{mode}.npz").unlink()
                    extracted = Path(ranks[0]["source"])
                    if extracted.parent.name == "npz" and extracted.suffix == ".npy":
                        extracted.unlink(missing_ok=True)  # the cache's copy of a compressed one
                        (extracted.parent / f".{extracted.name}.lock").unlink(missing_ok=True)
                row = {"mode": mode, "data_gb": round(n * np.prod(ROW) / 1e9, 3), "ranks": ranks}
                row["limit_gb"] = args.limit_gb
                results.append(row)
                peaks = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in ranks)
                base = ", ".join(f"{r['rss_before_data_mb']:.0f}" for r in ranks)
                print(
                    f"{mode:14} data {row['data_gb']:.2f} GB ({n} images), limit "
                    f"{args.limit_gb} GB: peak RSS per rank {peaks} MB (before the data: {base} MB)"
                )
            shutil.rmtree(folder)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    done = {(r["mode"], r["data_gb"]) for r in results}
    results = [r for r in kept if (r["mode"], r["data_gb"]) not in done] + results
    target.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
