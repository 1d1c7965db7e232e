"""Record the chapter's seed-42 training histories on a small MNIST subset, as JSON.

The layout refactor (issue 11) had to leave these unchanged. They were recorded with the
code before it (commit 68d1dff, the flat package) and are checked against today's code by
``tests/train/test_reference_histories.py``::

    git worktree add /tmp/ref68 68d1dff
    CNNLAB_DATA=../shared/data PYTHONPATH=/tmp/ref68/src \\
        .venv/bin/python tests/train/reference/record_histories.py \\
        tests/train/reference/histories_68d1dff.json

Run without PYTHONPATH it records today's code (to compare by hand). It works with both
package layouts: it only uses ``prepare``, ``TrainConfig`` and ``fit``.
"""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

N_TRAIN, N_TEST, EPOCHS, THREADS = 2000, 500, 3, 2
FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")


def _api() -> tuple[Any, Any, Any, Any]:
    try:  # the sub-package layout
        from cnnlab.data import load_mnist, prepare
        from cnnlab.train.config import TrainConfig
        from cnnlab.train.loop import fit
    except ImportError:  # 68d1dff: cnnlab.data and cnnlab.train are modules
        from cnnlab.data import load_mnist, prepare  # type: ignore[no-redef]
        from cnnlab.train import TrainConfig, fit  # type: ignore[no-redef,attr-defined]
    return load_mnist, prepare, TrainConfig, fit


def subset(data_dir: Path | None = None) -> Any:
    """The first N_TRAIN training and N_TEST test images of MNIST."""
    load_mnist, _, _, _ = _api()
    m = load_mnist(data_dir)
    return type(m)(m.x_train[:N_TRAIN], m.y_train[:N_TRAIN], m.x_test[:N_TEST], m.y_test[:N_TEST])


def record(case: str, engine: str, mnist: Any, epochs: int = EPOCHS) -> list[dict[str, float]]:
    """One seed-42 run of ``epochs`` epochs: its history, timing left out."""
    _, prepare, TrainConfig, fit = _api()
    key = "model" if "model" in inspect.signature(TrainConfig).parameters else "case"
    config = TrainConfig(
        **{key: case}, epochs=epochs, seed=42, engine=engine, threads=THREADS, device="cpu"
    )
    splits = prepare(mnist, 42, scaled=False)
    with tempfile.TemporaryDirectory() as tmp:
        fit(config, splits, Path(tmp), progress=False, log=lambda _m: None)
        lines = (Path(tmp) / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    return [{k: float(r[k]) for k in FIELDS} for r in rows]


def main(out: Path) -> None:
    torch.set_num_threads(THREADS)
    mnist = subset()
    histories = {
        f"{case}/{engine}": record(case, engine, mnist)
        for case in ("case1", "case2", "case3")
        for engine in ("fast", "plain")
    }
    meta = {"n_train": N_TRAIN, "n_test": N_TEST, "epochs": EPOCHS, "threads": THREADS}
    meta |= {"torch": torch.__version__, "numpy": np.__version__}
    out.write_text(json.dumps({"meta": meta, "histories": histories}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
