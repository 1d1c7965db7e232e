"""ONNX export: onnxruntime's probabilities match PyTorch's, and files are never half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cnnlab import cli
from cnnlab.data import MNIST, Splits
from cnnlab.errors import CnnlabError
from cnnlab.interop.onnx_export import export_run
from cnnlab.models import ModelDescription, get
from cnnlab.train import checkpoint

ATOL = 1e-5  # the tolerance on probabilities


def ort_proba(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime's output for (N, 1, 28, 28) float32 input, in batches of 1000."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    return np.concatenate(
        [session.run(None, {inp.name: x[i : i + 1000]})[0] for i in range(0, len(x), 1000)]
    )


@torch.no_grad()
def torch_proba(run_dir: Path, x: np.ndarray) -> np.ndarray:
    model, _ = checkpoint.load_model(run_dir)
    return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


def nchw(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 1) in [0, 1] -> (N, 1, H, W) float32, the exported model's input."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)


@pytest.fixture(scope="module")
def exported(
    tiny_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("onnx")
    return {case: export_run(run, out / f"{case}.onnx").path for case, run in tiny_run.items()}


@pytest.mark.parametrize("case", ["case1", "case2", "case3"])
def test_onnxruntime_matches_pytorch(
    exported: dict[str, Path], tiny_run: dict[str, Path], tiny_splits: Splits, case: str
) -> None:
    x = np.concatenate([nchw(tiny_splits.x_test), nchw(tiny_splits.x_val)])
    got, want = ort_proba(exported[case], x), torch_proba(tiny_run[case], x)
    assert got.shape == (len(x), 10)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)  # the softmax is in the graph
    assert np.abs(got - want).max() <= ATOL
    one = ort_proba(exported[case], x[:1])  # the batch axis is dynamic, down to 1
    assert np.abs(one - want[:1]).max() <= ATOL


def test_graph_interface_and_metadata(exported: dict[str, Path]) -> None:
    model = onnx.load(str(exported["case1"]))
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "image" and out.name == "probabilities"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["cnnlab_model"] == "case1" and "cnnlab_case" not in meta
    assert json.loads(meta["cnnlab_input_shape"]) == [28, 28, 1]
    assert meta["cnnlab_classes"] == "10" and meta["cnnlab_epoch"].isdigit()
    assert ModelDescription.from_dict(json.loads(meta["cnnlab_description"])) == get("case1")
    # how the run's pixels became inputs, and its classes, as the run recorded them
    # (the tiny run trained on float images in [0, 1]: they are used as stored)
    assert json.loads(meta["cnnlab_input_scale"])["divide_by"] == 1
    assert json.loads(meta["cnnlab_class_names"]) == [str(d) for d in range(10)]


def test_existing_file_is_kept_unless_forced(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"precious")
    argv = ["export", str(tiny_run["case2"]), "--onnx", str(target)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1
    assert target.read_bytes() == b"precious"
    assert cli.main([*argv, "--force"]) == 0
    assert onnx.load(str(target)).graph.output[0].name == "probabilities"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary left over


def test_bad_run_dir_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CnnlabError, match=r"not a (readable )?cnnlab checkpoint"):
        export_run(tmp_path / "run", tmp_path / "m.onnx")
    with pytest.raises(CnnlabError, match="not found"):
        export_run(tmp_path / "missing", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.mnist
def test_onnx_parity_on_the_mnist_test_set(
    tiny_run: dict[str, Path], mnist_data_dir: Path, mnist: MNIST, tmp_path: Path
) -> None:
    """All 10,000 test images: the chapter's Keras case 1 model if present, else a tiny run."""
    from cnnlab.data import scale
    from cnnlab.interop.keras_import import import_keras

    keras_file = mnist_data_dir / "keras" / "case1_best_model.keras"
    run = tiny_run["case1"]
    if keras_file.is_file():
        run = tmp_path / "run"
        import_keras(keras_file, 1, run)
    path = export_run(run, tmp_path / "case1.onnx").path
    x = nchw(scale(mnist.x_test))  # (10000, 1, 28, 28)
    got, want = ort_proba(path, x), torch_proba(run, x)
    assert got.shape == (10_000, 10)
    assert np.abs(got - want).max() <= ATOL
    assert (got.argmax(1) == want.argmax(1)).all()
