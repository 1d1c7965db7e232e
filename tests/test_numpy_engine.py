"""The NumPy engine re-computes PyTorch's probabilities for every case."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab import fileio
from cnnlab.cli import main
from cnnlab.data import MNIST, scale
from cnnlab.engine.numpy_engine import (
    TOLERANCE,
    compare_with_torch,
    from_run,
    from_torch,
    load_npz,
    save_npz,
    verify_run,
)
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, predict_proba
from cnnlab.train import checkpoint

CASES = ["case1", "case2", "case3"]


def _torch_proba(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # (N, 1, 28, 28)
    with torch.no_grad():
        return predict_proba(model.eval(), xt).numpy()


@pytest.mark.parametrize("case", CASES)
def test_random_model_float32_and_float64(case: str, global_random_seed: int) -> None:
    rng = np.random.default_rng(global_random_seed)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    model = create_model(case).eval()
    engine = from_torch(model, case)
    p_np = engine.predict_proba(x, batch_size=25)  # batches that do not divide 64
    assert p_np.dtype == np.float32 and p_np.shape == (64, 10)
    np.testing.assert_allclose(p_np, _torch_proba(model, x), rtol=0, atol=TOLERANCE)
    # In float64 on both sides the two must agree to rounding error.
    p64 = engine.astype("float64").predict_proba(x.astype(np.float64))
    ref64 = _torch_proba(model.double(), x.astype(np.float64))
    np.testing.assert_allclose(p64, ref64, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_trained_run_agrees(case: str, tiny_run: dict[str, Path], tiny_mnist: MNIST) -> None:
    engine = from_run(tiny_run[case])
    model, _ = checkpoint.load_model(tiny_run[case], "best")
    x = scale(tiny_mnist.x_test)
    np.testing.assert_allclose(
        engine.predict_proba(x), _torch_proba(model, x), rtol=0, atol=TOLERANCE
    )


def test_dropout_is_identity_and_weights_are_channels_last(global_random_seed: int) -> None:
    model = create_model("case1")
    engine = from_torch(model, "case1")
    kinds = [ly.kind for ly in engine.layers]
    assert kinds.count("dropout") == 2
    conv2 = next(ly for ly in engine.layers if ly.name == "conv2")
    assert conv2.arrays["w"].shape == (3, 3, 16, 64)  # (kh, kw, C_in, C_out)
    w = model.get_parameter("conv2.weight").detach().numpy()  # (C_out, C_in, kh, kw)
    assert conv2.arrays["w"][1, 2, 5, 7] == w[7, 5, 1, 2]
    dense1 = next(ly for ly in engine.layers if ly.name == "dense1")
    assert dense1.arrays["w"].shape == (1600, 32)


def test_activations_are_named_and_shaped(global_random_seed: int) -> None:
    engine = from_torch(create_model("case2"), "case2")
    x = np.zeros((3, 28, 28, 1), dtype=np.float32)
    shapes = {name: h.shape for name, h in engine.activations(x)}
    assert shapes["conv1"] == (3, 26, 26, 32)
    assert shapes["pool2"] == (3, 5, 5, 10)
    assert shapes["gap"] == (3, 10)


def test_npz_roundtrip(tmp_path: Path, global_random_seed: int) -> None:
    model = create_model("case3").eval()
    path = tmp_path / "m.npz"
    save_npz(from_torch(model, "case3"), path)
    loaded = load_npz(path)
    assert loaded.case == "case3"
    x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict_proba(x), _torch_proba(model, x), atol=TOLERANCE)


def test_bad_npz_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CnnlabError, match="not a cnnlab NumPy model"):
        load_npz(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CnnlabError, match="not a cnnlab NumPy model"):
        load_npz(tmp_path / "other.npz")
    with pytest.raises(CnnlabError, match="not found"):
        load_npz(tmp_path / "missing.npz")


def test_unsupported_layer_is_refused() -> None:
    with pytest.raises(CnnlabError, match="no NumPy equivalent"):
        from_torch(torch.nn.Sequential(torch.nn.Tanh()))


def test_compare_reports_throughput(global_random_seed: int) -> None:
    x = np.random.default_rng(2).random((40, 28, 28, 1), dtype=np.float32)
    r = compare_with_torch(create_model("case2").eval(), x, batch_size=16)
    assert r.max_abs_diff <= TOLERANCE and r.same_predictions == 40
    d = r.as_dict()
    assert d["numpy_images_per_s"] > 0 and d["torch_images_per_s"] > 0


def test_verify_run_writes_json(
    tiny_run: dict[str, Path], tiny_mnist: MNIST, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["case1"], run)
    r = verify_run(run, scale(tiny_mnist.x_test), batch_size=7)
    assert r["passed"] and r["n_images"] == len(tiny_mnist.x_test)
    assert fileio.read_json(run / "numpy_check.json")["max_abs_diff"] == r["max_abs_diff"]


def test_cli_verify_numpy_json(
    tiny_run: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    synthetic_data: MNIST,
) -> None:
    import json

    run = tmp_path / "run"
    shutil.copytree(tiny_run["case3"], run)
    assert main(["verify-numpy", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_abs_diff"] <= TOLERANCE
    assert {"max_abs_diff", "numpy_images_per_s", "torch_images_per_s"} <= set(out)
    assert main(["verify-numpy", str(tmp_path / "nowhere")]) == 2
    assert "no best.pt" in capsys.readouterr().err


@pytest.mark.mnist
def test_real_mnist_images_random_model(mnist: MNIST, global_random_seed: int) -> None:
    x = scale(mnist.x_test[:300])
    for case in CASES:
        r = compare_with_torch(create_model(case).eval(), x, batch_size=100)
        assert r.max_abs_diff <= TOLERANCE, case
