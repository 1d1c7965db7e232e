"""``make bench``: the chapter's Keras/TensorFlow stack and cnnlab, on the same data, in one run.

Every measurement is a separate process, run one after the other on an otherwise idle
machine, timed the same way:

- seconds per epoch at batch 32 (training pass plus validation pass, as Keras prints it),
  the median over the epochs after the first (the first includes tracing and warm-up);
- peak memory: the process's maximum resident set size (``wait4`` rusage);
- test accuracy of the best checkpoint (lowest val_loss) after the same number of epochs;
- the speedrun: training seconds per seed and mean test accuracy over the seeds.

Usage: python benchmarks/run_bench.py [--epochs 3] [--full] [--seeds 5] [--out DIR]
``--full`` trains Keras and cnnlab's fast engine to early stopping (the chapter's run:
about 26 epochs) instead of ``--epochs``. Writes ``bench.json`` and ``bench.md`` (the
table) into ``benchmarks/results/``, with the raw JSON of each run beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KERAS_PY = HERE / ".venv-keras" / "bin" / "python"
CNNLAB = Path(sys.executable).with_name("cnnlab")
GOALS = {"epoch": 0.4, "speedrun": 0.5, "memory": 0.5, "accuracy": 0.99, "rgb_step": 0.5}
GOALS["gap"] = 2.0  # a step's time over its arithmetic limit (profile_step.py)


def machine() -> dict[str, Any]:
    import torch

    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        mem = f"{kib / 2**20:.0f} GiB"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def measure(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd`` (in ``env``) to the end; its wall seconds and peak resident memory (MiB)."""
    print(f"$ {' '.join(str(c) for c in cmd)}", flush=True)
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"run_bench: {cmd[0]} failed ({proc.returncode}); log {log}:\n{tail}")
    return {"wall_seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def epoch_seconds(seconds: list[float]) -> float:
    """The typical epoch: the median of those after the first (tracing, warm-up)."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def cnnlab_run(run_dir: Path, proc: dict[str, float]) -> dict[str, Any]:
    from cnnlab import fileio
    from cnnlab.train import runs

    history = runs.read_history(run_dir / "history.csv")
    metrics = fileio.read_json(run_dir / "metrics.json")
    seconds = [float(r["seconds"]) for r in history]
    return {
        "epoch_seconds": seconds,
        "seconds_per_epoch": epoch_seconds(seconds),
        "epochs_run": len(history),
        "test_accuracy": metrics["test_accuracy"],
        "peak_rss_mib": proc["peak_rss_mib"],
        "wall_seconds": proc["wall_seconds"],
    }


def data_dir() -> Path:
    """The folder holding mnist/ (downloading MNIST into cnnlab's cache if needed)."""
    from cnnlab import data

    data.load_mnist()
    path = data.locate("train-images-idx3-ubyte")
    assert path is not None
    return path.parent.parent


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    work = HERE / ".work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = data_dir()
    os.environ["CNNLAB_DATA"] = str(folder)
    epochs = 200 if args.full else args.epochs
    result: dict[str, Any] = {"machine": machine(), "epochs": epochs, "data": str(folder)}

    if not KERAS_PY.exists():
        raise SystemExit(f"run_bench: {KERAS_PY} missing; `make bench` creates it")
    keras_json = args.out / "keras_case1.json"
    proc = measure(
        [str(KERAS_PY), str(HERE / "keras_chapter.py"), "--json", str(keras_json),
         "--epochs", str(epochs), "--workdir", str(work)],
        work / "keras.log",
    )  # fmt: skip
    keras = json.loads(keras_json.read_text())
    keras["seconds_per_epoch"] = epoch_seconds(keras["epoch_seconds"])
    keras["peak_rss_mib"] = proc["peak_rss_mib"]  # measured like the others, from outside
    result["keras"] = keras

    # `cnnlab train --case 1`: the fast engine and torch's default threads
    fast_dir = work / "cnnlab_fast"
    cmd = [str(CNNLAB), "train", "--case", "1", "--epochs", str(epochs), "--quiet"]
    proc = measure([*cmd, "--out", str(fast_dir)], work / "cnnlab_fast.log")
    result["cnnlab_fast"] = cnnlab_run(fast_dir, proc)

    helper = [sys.executable, str(HERE / "cnnlab_train.py")]
    variants = {
        "cnnlab_fast_1thread": ["--engine", "fast", "--threads", "1"],
        "cnnlab_fast_torch_ops": ["--engine", "fast", "--no-native"],
        "cnnlab_plain": ["--engine", "plain"],
    }
    for name, flags in variants.items():
        out = work / name
        n = str(min(epochs, args.epochs))
        proc = measure([*helper, str(out), "--epochs", n, *flags], work / f"{name}.log")
        result[name] = cnnlab_run(out, proc)

    sr_json = args.out / "speedrun.json"
    proc = measure(
        [str(CNNLAB), "speedrun", "--seeds", str(args.seeds), "--json", str(sr_json)],
        work / "speedrun.log",
    )
    result["speedrun"] = json.loads(sr_json.read_text()) | proc
    result["ratios"] = ratios(result)
    return result


def ratios(r: dict[str, Any]) -> dict[str, float]:
    k = r["keras"]
    best_fast = min(
        r["cnnlab_fast"]["seconds_per_epoch"], r["cnnlab_fast_1thread"]["seconds_per_epoch"]
    )
    return {
        "fast_epoch_vs_keras": r["cnnlab_fast"]["seconds_per_epoch"] / k["seconds_per_epoch"],
        "fast_1thread_epoch_vs_keras": r["cnnlab_fast_1thread"]["seconds_per_epoch"]
        / k["seconds_per_epoch"],
        "best_fast_epoch_vs_keras": best_fast / k["seconds_per_epoch"],
        "plain_epoch_vs_keras": r["cnnlab_plain"]["seconds_per_epoch"] / k["seconds_per_epoch"],
        "train_memory_vs_keras": r["cnnlab_fast"]["peak_rss_mib"] / k["peak_rss_mib"],
        "torch_ops_epoch_vs_keras": r["cnnlab_fast_torch_ops"]["seconds_per_epoch"]
        / k["seconds_per_epoch"],
        "speedrun_seconds_vs_keras_epoch": r["speedrun"]["mean_train_seconds"]
        / k["seconds_per_epoch"],
    }  # fmt: skip


def table(r: dict[str, Any]) -> str:
    """The results as a Markdown table (what goes into the README)."""
    k, q = r["keras"], r["ratios"]
    rows = [
        ("Keras chapter code (TensorFlow)", k, 1.0),
        ("cnnlab train --case 1 (fast engine)", r["cnnlab_fast"], q["fast_epoch_vs_keras"]),
        ("cnnlab fast engine, 1 thread", r["cnnlab_fast_1thread"],
         q["fast_1thread_epoch_vs_keras"]),
        ("cnnlab fast engine, PyTorch ops (no C++ kernels)", r["cnnlab_fast_torch_ops"],
         q["torch_ops_epoch_vs_keras"]),
        ("cnnlab plain PyTorch loop", r["cnnlab_plain"], q["plain_epoch_vs_keras"]),
    ]  # fmt: skip
    lines = [
        "| run | s/epoch (batch 32) | ratio | peak memory | ratio | epochs | test accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v, ratio in rows:
        mem_ratio = v["peak_rss_mib"] / k["peak_rss_mib"]
        lines.append(
            f"| {name} | {v['seconds_per_epoch']:.2f} | {ratio:.2f}x | "
            f"{v['peak_rss_mib']:.0f} MiB | {mem_ratio:.2f}x | {v['epochs_run']} | "
            f"{v['test_accuracy']:.4f} |"
        )
    s = r["speedrun"]
    per_seed = ", ".join(f"{x['train_seconds']:.2f}" for x in s["seeds"])
    lines += [
        "",
        "| speedrun | train s per seed | mean | vs one Keras epoch | mean test accuracy | params |",
        "|---|---|---:|---:|---:|---:|",
        f"| cnnlab speedrun --seeds {len(s['seeds'])} | {per_seed} | "
        f"{s['mean_train_seconds']:.2f} | {q['speedrun_seconds_vs_keras_epoch']:.2f}x | "
        f"{s['mean_test_accuracy']:.4f} | {s['params']:,} |",
    ]
    return "\n".join(lines)


def verdicts(r: dict[str, Any]) -> list[str]:
    q, s = r["ratios"], r["speedrun"]
    checks = [
        ("faithful epoch <= 0.4x Keras", q["best_fast_epoch_vs_keras"], GOALS["epoch"]),
        ("speedrun seconds <= 0.5x a Keras epoch", q["speedrun_seconds_vs_keras_epoch"],
         GOALS["speedrun"]),
        ("train --case 1 memory <= 0.5x Keras", q["train_memory_vs_keras"], GOALS["memory"]),
    ]  # fmt: skip
    out = [f"{'met' if v <= goal else 'NOT met'}: {name} ({v:.2f}x)" for name, v, goal in checks]
    acc = s["mean_test_accuracy"]
    ok = "met" if acc >= GOALS["accuracy"] else "NOT met"
    out.append(f"{ok}: speedrun mean test accuracy >= 99.0% ({100 * acc:.2f}%)")
    return out


def rgb_verdicts(rgb: dict[str, Any]) -> list[str]:
    """Issue 23's goals for the RGB rows: a step at most 0.5x Keras' and within 2x of the
    arithmetic limit."""
    out = []
    for name, r in rgb["networks"].items():
        if "keras_us" in r:
            ratio = r["step_us"] / r["keras_us"]
            ok = "met" if ratio <= GOALS["rgb_step"] else "NOT met"
            out.append(f"{ok}: {name} step <= 0.5x Keras' ({ratio:.2f}x)")
        ok = "met" if r["gap"] <= GOALS["gap"] else "NOT met"
        out.append(f"{ok}: {name} within 2x of its arithmetic limit ({r['gap']:.1f}x)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="epochs per timed run (default 3)")
    ap.add_argument("--full", action="store_true", help="Keras and fast engine to early stop")
    ap.add_argument("--seeds", type=int, default=5, help="speedrun seeds (default 5)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    result = run_all(args)
    import bench_fcn1d  # the 1-D row: fcn1d on JapaneseVowels against Keras (its own script)

    result["fcn1d"] = bench_fcn1d.run(max(args.epochs, 5), HERE / ".work" / "fcn1d")
    # resnet1d, the residual 1-D network (issue 23's goal: at most 0.5x of Keras' epoch)
    result["resnet1d"] = bench_fcn1d.run(
        max(args.epochs, 5), HERE / ".work" / "resnet1d", spinning=False, model="resnet1d"
    )
    import bench_cases  # a row per case and the keras-zoo network, each against its Keras

    cases = ["1", "2", "3", "zoo"]
    result["cases"] = bench_cases.run(args.epochs, cases, None, HERE / ".work" / "cases")
    import profile_step  # the RGB rows: a training step against Keras' and the arithmetic

    result["rgb"] = profile_step.run(400, 60, "rgb", profile_step.torch.device("cpu"), True)
    md = table(result) + "\n\n" + bench_fcn1d.markdown(result["fcn1d"])
    md += "\n\n" + bench_fcn1d.markdown(result["resnet1d"])
    md += "\n\n" + bench_cases.markdown(result["cases"])
    md += "\n\n" + profile_step.markdown(result["rgb"], ops=False)
    m = result["machine"]
    header = (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; torch {m['torch']}; "
        f"{result['keras']['stack']}; load average at start {m['load_average_at_start'][0]:.2f}."
    )
    checks = verdicts(result) + rgb_verdicts(result["rgb"])
    ratio = result["resnet1d"]["ratio"]
    ok = "met" if ratio <= GOALS["rgb_step"] else "NOT met"
    checks.append(f"{ok}: resnet1d epoch <= 0.5x Keras' ({ratio:.2f}x)")
    result["verdicts"] = checks
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bench.md").write_text(header + "\n\n" + md + "\n\n" + "\n".join(checks) + "\n")
    print("\n" + header + "\n\n" + md + "\n")
    print("\n".join(checks))
    print(f"\nwrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")


if __name__ == "__main__":
    main()
