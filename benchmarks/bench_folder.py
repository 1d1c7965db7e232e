"""folder:PATH, measured: decoding against Keras, and resident memory over a 2.5 GB folder.

(a) 10,000 MNIST training digits exported as PNG files (one folder per digit), read by
    cnnlab's ``folder:`` source and by Keras' ``image_dataset_from_directory`` (28x28,
    grayscale, batch 32, shuffled), each in a fresh process: the seconds until one full
    pass over every image is done (cnnlab: list, read headers, decode in parallel, cache,
    then a shuffled pass of float32 batches; Keras: list, then its lazy pipeline decodes
    during the pass), and a second run (cnnlab: the cache reused; Keras: its second
    epoch, which decodes again). Keras runs in ``benchmarks/.venv-keras``
    (``make benchmarks/.venv-keras/.installed``); it is never a cnnlab dependency.
(b) ``--n-big`` PNGs of ``--side`` x ``--side`` x 3 (200,000 of 64x64x3 = 2.46 GB decoded):
    the cache is built, then a fresh process iterates one shuffled epoch of batches of 32
    over the training split through the lazy RowView; its peak RSS (ru_maxrss) must stay
    under 1 GB. The same epoch through ``np.memmap`` is the control.
(c) training on (b)'s folder: ``cnnlab train`` (a small CNN, one epoch, the chapter's
    batch 32, validation and test scored) in a fresh process, which reads its batches from
    the cache as the training loop does (cnnlab.engine.feed): its peak RSS, and the seconds.

Usage: python benchmarks/bench_folder.py [--part a|b|c|all] [--n 10000] [--n-big 200000]
       [--side 64] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
KERAS_PY = HERE / ".venv-keras" / "bin" / "python"
GB = 1e9


def peak_rss() -> int:
    """This process's peak resident memory, bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- workers: each runs in a fresh process ---------------------------------------------
def keras_worker(folder: Path, out: Path) -> None:
    import tensorflow as tf  # benchmarks/.venv-keras only

    start = time.perf_counter()
    ds = tf.keras.utils.image_dataset_from_directory(
        folder, image_size=(28, 28), color_mode="grayscale", batch_size=32, shuffle=True,
        seed=42, interpolation="bilinear", verbose=False,
    )  # fmt: skip
    listed = time.perf_counter() - start
    epochs = []
    for _ in range(2):
        t = time.perf_counter()
        n = sum(int(x.shape[0]) for x, _y in ds)
        epochs.append(time.perf_counter() - t)
    out.write_text(json.dumps({"list": listed, "epochs": epochs, "n": n, "rss": peak_rss()}))


def epoch(x: Any, y: np.ndarray, order: np.ndarray) -> float:
    """Seconds for a pass of float32 batches of 32 over (x, y) in ``order``."""
    from cnnlab.data import input_scale, iterate_batches, to_inputs

    scale = input_scale(True, False)
    start = time.perf_counter()
    total = 0.0
    for xb, _yb in iterate_batches(x, y, order, 32):
        total += float(to_inputs(xb, scale)[:, 0, 0].sum())  # every batch made and used
    return time.perf_counter() - start


def cnnlab_worker(folder: Path, cache: Path, out: Path, split: str) -> None:
    from cnnlab.data import DataOptions
    from cnnlab.data.datasets import load_dataset

    start = time.perf_counter()
    ds = load_dataset(f"folder:{folder}", DataOptions(cache_dir=cache, progress=False))
    loaded = time.perf_counter() - start
    rss_loaded = peak_rss()
    s = ds.splits
    parts = [
        ("train", s.x_train, s.y_train),
        ("val", s.x_val, s.y_val),
        ("test", s.x_test, s.y_test),
    ]
    seconds = 0.0
    n = 0
    for name, x, y in parts:
        if split in ("all", name):
            seconds += epoch(x, y, np.random.default_rng(42).permutation(len(y)))
            n += len(y)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    out.write_text(json.dumps({
        "load": loaded, "epoch": seconds, "n": n, "cache": ds.preprocessing["cache"],
        "rss_load": rss_loaded, "rss": peak_rss(), "rss_workers": children,
        "shape": list(ds.input_shape), "cache_key": ds.preprocessing["cache_key"],
    }))  # fmt: skip


def memmap_worker(images: Path, n_rows: int, out: Path) -> None:
    """The control: as many shuffled rows, batch by batch, through np.memmap."""
    x = np.load(images, mmap_mode="r")
    order = np.random.default_rng(42).permutation(len(x))[:n_rows]
    seconds = epoch(x, np.zeros(len(x)), order)
    out.write_text(json.dumps({"epoch": seconds, "rss": peak_rss()}))


# ---- the driver --------------------------------------------------------------------------
def run(python: Path | str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = Path(args[args.index("--out") + 1])
    subprocess.run([str(python), __file__, *args], check=True, env=env)
    return dict(json.loads(out.read_text()))


def export_mnist(folder: Path, n: int) -> None:
    from PIL import Image

    from cnnlab.data import load_mnist

    if (folder / ".done").exists() and (folder / ".done").read_text() == str(n):
        return
    shutil.rmtree(folder, ignore_errors=True)
    m = load_mnist()
    for i in range(n):
        (folder / str(m.y_train[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(m.x_train[i]).save(folder / str(m.y_train[i]) / f"{i}.png")
    (folder / ".done").write_text(str(n))


def _make_pngs(args: tuple[Path, int, int, int]) -> None:
    from PIL import Image

    folder, start, stop, side = args
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = np.repeat(np.repeat(blocks, side // 8, 0), side // 8, 1)
        img = (img + rng.integers(0, 8, img.shape, dtype=np.uint8)).astype(np.uint8)
        Image.fromarray(img).save(folder / f"c{i % 10}" / f"{i}.png", compress_level=1)


def make_big(folder: Path, n: int, side: int) -> None:
    import multiprocessing

    stamp = f"{n} {side}"
    if (folder / ".done").exists() and (folder / ".done").read_text() == stamp:
        return
    shutil.rmtree(folder, ignore_errors=True)
    for k in range(10):
        (folder / f"c{k}").mkdir(parents=True)
    step = 2000
    jobs = [(folder, i, min(n, i + step), side) for i in range(0, n, step)]
    with multiprocessing.get_context("forkserver").Pool() as pool:
        pool.map(_make_pngs, jobs)
    (folder / ".done").write_text(stamp)


def part_a(work: Path, n: int) -> None:
    folder = work / "mnist-png"
    t = time.perf_counter()
    export_mnist(folder, n)
    print(f"(a) {n} MNIST PNGs in {folder} (export {time.perf_counter() - t:.1f} s)")
    cache = work / "cache-a"
    shutil.rmtree(cache, ignore_errors=True)
    out = str(work / "a.json")
    cold = run(sys.executable, "--cnnlab-worker", str(folder), str(cache), "all", "--out", out)
    warm = run(sys.executable, "--cnnlab-worker", str(folder), str(cache), "all", "--out", out)
    print(
        f"  cnnlab, first run: load {cold['load']:.2f} s ({cold['cache']}), pass over "
        f"{cold['n']} images {cold['epoch']:.2f} s: {cold['load'] + cold['epoch']:.2f} s"
    )
    print(
        f"  cnnlab, second run: load {warm['load']:.2f} s ({warm['cache']}), pass "
        f"{warm['epoch']:.2f} s: {warm['load'] + warm['epoch']:.2f} s"
    )
    if not KERAS_PY.exists():
        print(f"  Keras: {KERAS_PY} missing (make benchmarks/.venv-keras/.installed): no ratio")
        return
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    keras = run(KERAS_PY, "--keras-worker", str(folder), "--out", out, env=env)
    first, second = keras["list"] + keras["epochs"][0], keras["epochs"][1]
    print(
        f"  Keras image_dataset_from_directory: list {keras['list']:.2f} s, epoch 1 "
        f"{keras['epochs'][0]:.2f} s: {first:.2f} s; epoch 2 {second:.2f} s"
    )
    mine1, mine2 = cold["load"] + cold["epoch"], warm["load"] + warm["epoch"]
    print(f"  ratio cnnlab/Keras: first pass {mine1 / first:.2f}x, second {mine2 / second:.2f}x")


def part_b(work: Path, n: int, side: int) -> None:
    folder = work / f"big-{side}"
    t = time.perf_counter()
    make_big(folder, n, side)
    size = n * side * side * 3
    print(
        f"(b) {n} PNGs of {side}x{side}x3 in {folder} ({size / GB:.2f} GB decoded; "
        f"made in {time.perf_counter() - t:.0f} s)"
    )
    cache = work / "cache-b"
    shutil.rmtree(cache, ignore_errors=True)
    out = str(work / "b.json")
    build = run(sys.executable, "--cnnlab-worker", str(folder), str(cache), "none", "--out", out)
    print(
        f"  cache: {build['cache']} (load {build['load']:.1f} s); peak RSS: main process "
        f"{build['rss'] / GB:.2f} GB, a decoding worker {build['rss_workers'] / GB:.2f} GB"
    )
    for split in ("train", "all"):
        lazy = run(sys.executable, "--cnnlab-worker", str(folder), str(cache), split, "--out", out)
        verdict = "under" if lazy["rss"] < 1e9 else "OVER"
        what = "the training split" if split == "train" else "train, val and test"
        print(
            f"  RowView, shuffled batches of 32 over {what} ({lazy['n']} images, "
            f"{lazy['n'] * side * side * 3 / GB:.2f} GB): {lazy['epoch']:.1f} s, peak RSS "
            f"{lazy['rss'] / GB:.3f} GB ({verdict} 1 GB)"
        )
    images = cache / "folders" / lazy["cache_key"] / "images.npy"
    mm = run(sys.executable, "--memmap-worker", str(images), str(lazy["n"]), "--out", out)
    print(
        f"  control, np.memmap, the same number of rows: {mm['epoch']:.1f} s, peak RSS "
        f"{mm['rss'] / GB:.3f} GB"
    )


TRAIN_NET = "Input({s},{s},3) Conv2D(16,3,2,relu) MaxPooling2D(2) Conv2D(32,3,relu) GlobalAveragePooling2D Dense(10,softmax)"  # noqa: E501


def part_c(work: Path, n: int, side: int) -> None:
    folder = work / f"big-{side}"
    make_big(folder, n, side)
    run_dir = work / "train-c"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "cnnlab.cli", "train", "--model", TRAIN_NET.format(s=side)]
    cmd += ["--data", f"folder:{folder}", "--epochs", "1", "--out", str(run_dir), "--quiet"]
    cmd += ["--workers", "2"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out = proc.stdout.read() if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"cnnlab train failed:\n{out}")
    rss = usage.ru_maxrss * 1024  # the training process alone (its decoding workers aside)
    verdict = "under" if rss < 1e9 else "OVER"
    size = n * side * side * 3 / GB
    print(
        f"(c) cnnlab train, one epoch over {n} images of {side}x{side}x3 ({size:.2f} GB "
        f"decoded): {seconds:.0f} s in all (the cache built, or reused), peak RSS "
        f"{rss / GB:.3f} GB ({verdict} 1 GB)"
    )
    for line in out.splitlines():
        if line.startswith(("epoch 1", "Test accuracy")):
            print(f"  {line}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("a", "b", "c", "both", "all"), default="all")
    p.add_argument("--n", type=int, default=10_000, help="MNIST images for (a)")
    p.add_argument("--n-big", type=int, default=200_000, help="images for (b)")
    p.add_argument("--side", type=int, default=64, help="(b)'s image side, a multiple of 8")
    p.add_argument("--work", type=Path, default=HERE / ".work" / "folder")
    p.add_argument("--keras-worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--cnnlab-worker", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--memmap-worker", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.keras_worker:
        return keras_worker(args.keras_worker, args.out)
    if args.cnnlab_worker:
        folder, cache, split = args.cnnlab_worker
        return cnnlab_worker(Path(folder), Path(cache), args.out, split)
    if args.memmap_worker:
        return memmap_worker(Path(args.memmap_worker[0]), int(args.memmap_worker[1]), args.out)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    if args.part in ("a", "both", "all"):
        part_a(args.work, args.n)
    if args.part in ("b", "both", "all"):
        part_b(args.work, args.n_big, args.side)
    if args.part in ("c", "all"):
        part_c(args.work, args.n_big, args.side)


if __name__ == "__main__":
    main()
