"""Export a run's model to ONNX, with the chapter's final softmax, and check it in onnxruntime.

The exported graph takes ``image``: float32 (N, 1, 28, 28), pixels scaled to [0, 1] (the
chapter's /255), any batch size N; it returns ``probabilities``: float32 (N, 10). The file
is produced in memory, checked (ONNX checker, then onnxruntime against PyTorch on a probe
batch) and only then written atomically: a failed export never leaves a file behind.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab import __version__, fileio
from cnnlab.errors import CnnlabError
from cnnlab.train import checkpoint

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
PARITY_ATOL = 1e-5  # onnxruntime vs PyTorch, max abs difference of probabilities
PROBE_SIZE = 64


class WithSoftmax(nn.Module):
    """``model`` followed by a softmax over classes: (N, 1, 28, 28) -> (N, 10) probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


@dataclass
class ExportResult:
    path: Path
    n_bytes: int
    opset: int
    probe_max_abs_diff: float


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (torchvision notices, deprecation warnings)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def to_onnx_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> tuple[bytes, int]:
    """Serialised ONNX model (logits model + softmax) and its opset version."""
    import onnx

    wrapped = WithSoftmax(model).eval()
    example = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch")
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                wrapped,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; the message says which
        raise CnnlabError(f"ONNX export failed: {exc}") from exc
    if program is None:
        raise CnnlabError("ONNX export produced no model")
    proto = program.model_proto
    proto.doc_string = "cnnlab model: image (N,1,28,28) float32 in [0,1] -> class probabilities"
    for key, value in {"cnnlab_version": __version__, **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise CnnlabError(f"the exported ONNX model does not pass onnx.checker: {exc}") from exc
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return proto.SerializeToString(), int(opset)


def onnx_session(model_bytes: bytes) -> Any:
    """An onnxruntime CPU session on the serialised model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def onnx_proba(session: Any, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Probabilities from an onnxruntime session: (N, 1, 28, 28) float32 -> (N, 10)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = [
        session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch_size]})[0]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 10), dtype=np.float32)


@torch.no_grad()
def torch_proba(model: nn.Module, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """PyTorch's probabilities for the same input: (N, 1, 28, 28) float32 -> (N, 10)."""
    model.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = [
        torch.softmax(model(xt[i : i + batch_size]), dim=1) for i in range(0, len(xt), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, 10), dtype=np.float32)


def probe_images(n: int = PROBE_SIZE, seed: int = 0) -> np.ndarray:
    """A fixed batch of inputs in [0, 1] for the export-time check: (n, 1, 28, 28)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    x[: n // 2] = (x[: n // 2] > 0.8).astype(np.float32)  # sparse strokes, like digits
    return x


def export_model(
    model: nn.Module,
    path: Path,
    *,
    force: bool = False,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Export ``model`` (logits) with a softmax to ``path``; check it before writing."""
    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{path} is a folder; give a file name such as model.onnx")
    if path.exists() and not force:
        raise CnnlabError(f"{path} already exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise CnnlabError(f"folder {path.parent} does not exist")
    model = model.cpu().eval()
    data, opset = to_onnx_bytes(model, metadata)
    probe = probe_images()
    diff = float(np.abs(onnx_proba(onnx_session(data), probe) - torch_proba(model, probe)).max())
    if not diff <= PARITY_ATOL:  # also catches NaN
        raise CnnlabError(
            f"onnxruntime disagrees with PyTorch by {diff:.3g} (> {PARITY_ATOL}); "
            f"not writing {path}"
        )
    fileio.write_bytes(path, data)
    return ExportResult(path=path, n_bytes=len(data), opset=opset, probe_max_abs_diff=diff)


def export_run(run_dir: Path, path: Path, which: str = "best", force: bool = False) -> ExportResult:
    """Export the ``which`` checkpoint of a run folder to ONNX at ``path``."""
    model, ckpt = checkpoint.load_model(Path(run_dir), which)
    metadata = {
        "cnnlab_case": str(ckpt["case"]),
        "cnnlab_checkpoint": f"{Path(run_dir).name}/{which}.pt",
        "cnnlab_epoch": str(ckpt["epoch"]),
        "input": f"{INPUT_NAME}: float32 (N, 1, 28, 28), pixel / 255",
        "output": f"{OUTPUT_NAME}: float32 (N, 10), softmax over digits 0-9",
    }
    return export_model(model, path, force=force, metadata=metadata)
