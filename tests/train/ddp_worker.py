"""Run by tests/train/test_distributed.py, once under torchrun and once as a single process.

Usage: python ddp_worker.py OUT_DIR CASE EPOCHS BATCH_SIZE ENGINE
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for conftest

from conftest import synthetic_mnist

from cnnlab.data import prepare
from cnnlab.train.loop import TrainConfig, fit

if __name__ == "__main__":
    out, case, epochs, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out.mkdir(parents=True, exist_ok=True)
    splits = prepare(synthetic_mnist(n_train=300, n_test=50), seed=42)
    config = TrainConfig(
        model=case, epochs=epochs, batch_size=batch, patience=100, engine=sys.argv[5]
    )
    fit(config, splits, out, progress=False, log=lambda _msg: None)
