"""Per-network rows of ``make bench``: each of the chapter's cases, and a keras-zoo network,
in Keras and in cnnlab, one after the other in the same run.

For each network: the chapter's Keras code for it (``keras_chapter.py --case N``, or
``--model-file`` for the zoo's ``conv2d_same_strides``, freshly initialised, the chapter's
recipe), then ``cnnlab train`` on the same network (the zoo's file read by
``cnnlab.interop.keras_import`` into a description). Seconds per epoch are timed as in
``run_bench.py`` (the median of the epochs after the first); the load average is recorded
before each pair. ``--other DIR`` also times cnnlab from another checkout (its ``src/``),
interleaved: a before/after comparison in the same run.

Usage: python benchmarks/bench_cases.py [--epochs 3] [--cases 1 2 3 zoo] [--other DIR]
[--out benchmarks/results]. Writes ``bench_cases.json`` and ``bench_cases.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from run_bench import CNNLAB, HERE, KERAS_PY, REPO, cnnlab_run, data_dir, epoch_seconds, measure

ZOO = "conv2d_same_strides"


def zoo_file(folder: Path) -> Path:
    for cand in (folder / "keras-zoo", REPO.parent / "shared" / "data" / "keras-zoo"):
        if (cand / f"{ZOO}.keras").is_file():
            return cand / f"{ZOO}.keras"
    raise SystemExit(f"bench_cases: keras-zoo/{ZOO}.keras not found")


def keras_row(flags: list[str], epochs: int, work: Path, name: str) -> dict[str, Any]:
    out = work / f"keras_{name}.json"
    proc = measure(
        [str(KERAS_PY), str(HERE / "keras_chapter.py"), "--json", str(out), "--epochs",
         str(epochs), "--workdir", str(work), *flags],
        work / f"keras_{name}.log",
    )  # fmt: skip
    row = json.loads(out.read_text())
    row["seconds_per_epoch"] = epoch_seconds(row["epoch_seconds"])
    row["peak_rss_mib"] = proc["peak_rss_mib"]
    return row


def cnnlab_row(
    model: list[str], epochs: int, work: Path, name: str, src: Path | None = None
) -> dict[str, Any]:
    out = work / name
    env = dict(os.environ)
    if src is not None:  # another checkout's cnnlab, with this venv's packages
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-m", "cnnlab.cli"] if src is not None else [str(CNNLAB)]
    proc = measure(
        [*cmd, "train", *model, "--epochs", str(epochs), "--quiet", "--out", str(out)],
        work / f"{name}.log",
        env=env,
    )
    row = cnnlab_run(out, proc)
    config = json.loads((out / "config.json").read_text())["resolved"]
    row["blocks"] = config.get("blocks")  # where each layer ran (absent before issue 12)
    return row


def run(epochs: int, cases: list[str], other: Path | None, work: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)  # run folders of an earlier run
    work.mkdir(parents=True)
    folder = data_dir()
    os.environ["CNNLAB_DATA"] = str(folder)
    rows: dict[str, Any] = {}
    for index, case in enumerate(cases):
        if case == "zoo":
            path = zoo_file(folder)
            from cnnlab.interop.keras_import import read_keras

            desc = work / f"{ZOO}.json"
            desc.write_text(json.dumps(read_keras(path).description.to_dict()))
            keras_flags, model = ["--model-file", str(path)], ["--model", str(desc)]
        else:
            keras_flags, model = ["--case", case], ["--case", case]
        row: dict[str, Any] = {"load_before": os.getloadavg()[0]}
        row["keras"] = keras_row(keras_flags, epochs, work, case)
        # the run straight after Keras' is slower (measured: 15-40%, even where both
        # checkouts run the same code), so the two checkouts take turns going first
        order = ["other", "cnnlab"] if other is not None and index % 2 else ["cnnlab", "other"]
        for who in order:
            if who == "cnnlab":
                row["cnnlab"] = cnnlab_row(model, epochs, work, f"cnnlab_{case}")
            elif other is not None:
                row["other"] = cnnlab_row(model, epochs, work, f"other_{case}", other / "src")
        row["load_after"] = os.getloadavg()[0]
        k = row["keras"]["seconds_per_epoch"]
        row["ratio"] = row["cnnlab"]["seconds_per_epoch"] / k
        row["memory_ratio"] = row["cnnlab"]["peak_rss_mib"] / row["keras"]["peak_rss_mib"]
        if other is not None:
            row["other_ratio"] = row["other"]["seconds_per_epoch"] / k
        rows[case] = row
        print(f"{case}: {row['ratio']:.2f}x of Keras", flush=True)
    return {"epochs": epochs, "other": str(other) if other else None, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    other = result["other"] is not None
    head = "| network | Keras s/epoch | cnnlab s/epoch | ratio | memory ratio | load |"
    rule = "|---|---:|---:|---:|---:|---|"
    if other:
        head += " other checkout s/epoch | ratio |"
        rule += "---:|---:|"
    lines = [head, rule]
    for case, r in result["rows"].items():
        name = f"case {case}" if case != "zoo" else f"keras-zoo {ZOO}"
        line = (
            f"| {name} | {r['keras']['seconds_per_epoch']:.2f} | "
            f"{r['cnnlab']['seconds_per_epoch']:.2f} | **{r['ratio']:.2f}x** | "
            f"{r['memory_ratio']:.2f}x | {r['load_before']:.2f}-{r['load_after']:.2f} |"
        )
        if other:
            line += f" {r['other']['seconds_per_epoch']:.2f} | {r['other_ratio']:.2f}x |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cases", nargs="+", default=["1", "2", "3", "zoo"])
    ap.add_argument("--other", type=Path, default=None, help="another checkout to time too")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    if not KERAS_PY.exists():
        raise SystemExit(f"bench_cases: {KERAS_PY} missing; `make bench` creates it")
    result = run(args.epochs, args.cases, args.other, HERE / ".work" / "cases")
    md = markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_cases.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bench_cases.md").write_text(md + "\n")
    print("\n" + md)


if __name__ == "__main__":
    main()
