"""docs/chapter.ipynb runs from top to bottom (nbclient, a real Jupyter kernel) on a tiny
MNIST subset and one epoch; any cell that raises fails the test. Its own cells assert that
the figures' numbers are cnnlab.ops' and that each test accuracy is the best checkpoint's."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from cnnlab.figures import FIGURES

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "chapter.ipynb"
SECTIONS = ("## 14.1 ", "## 14.2 ", "### 14.2.1 ", "### 14.2.2 ", "## 14.3 ")


def load() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_notebook_is_stored_small_and_follows_the_chapter() -> None:
    nb = load()
    assert NOTEBOOK.stat().st_size < 200_000
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    text = "\n".join(source(c) for c in nb["cells"])
    places = [text.find(s) for s in SECTIONS]
    assert -1 not in places and places == sorted(places), places  # the chapter's order
    shown = set(re.findall(r'(?:show|animate)\("(\w+)"\)', text))
    shown |= set(re.findall(r'"(\w+)"', text)) & set(FIGURES)  # names in a loop of show()
    assert set(FIGURES) <= shown, set(FIGURES) - shown  # every figure of cnnlab figures
    assert "cnnlab.train.fit(" in text and "best_model()" in text
    assert "parameters" in code[0]["metadata"].get("tags", [])


STAND_IN = """
import numpy as np
import cnnlab.data

_z = np.load({path!r})  # no real MNIST here: the tests' synthetic stand-in, same shapes
cnnlab.data.load_mnist = lambda *_a, **_k: cnnlab.data.MNIST(
    _z["x_train"], _z["y_train"], _z["x_test"], _z["y_test"]
)
"""


@pytest.mark.slow
def test_notebook_runs(tmp_path: Path) -> None:
    """Every cell runs (real MNIST where $CNNLAB_DATA has it, else the synthetic stand-in)."""
    import nbformat
    import numpy as np
    from conftest import _default_data_dir, synthetic_mnist
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    data_dir = _default_data_dir()
    settings = f"EPOCHS = 1\nSUBSET = 400\nDATA_DIR = {str(data_dir)!r}\n"
    if data_dir is None:
        stand_in = synthetic_mnist(400, 100)
        np.savez(tmp_path / "mnist.npz", **vars(stand_in))
        settings += STAND_IN.format(path=str(tmp_path / "mnist.npz"))
    settings += "import torch\ntorch.set_num_threads(1)  # the machine's other cores stay free\n"
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(settings))
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}  # the run's working folder
    })  # fmt: skip
    client.execute()  # CellExecutionError (naming the cell) if any cell raises
    seconds = time.perf_counter() - start
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    gifs = [o for o in outputs if "image/gif" in o.get("data", {})]
    assert len(images) == len(FIGURES) + 3 and len(gifs) == 3  # figures + learning curves
    text = "".join(o.get("text", "") for o in outputs)
    assert text.count("test accuracy of the best model = ") == 3
    assert seconds < 120, seconds
