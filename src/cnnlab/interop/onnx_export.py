"""Export any description's network to ONNX, with its final softmax, checked in onnxruntime.

The exported graph takes ``image``: float32 (N, C, *spatial), the description's input
shape moved channels-first as PyTorch's (N, 1, 28, 28 for the chapter's MNIST networks),
network inputs as the run made them (pixels divided by 255 for the chapter's; raw 0-255
for a network that begins with Rescaling: the metadata's ``cnnlab_input_scale`` says which),
any batch size N; it returns ``probabilities``: float32 (N, classes). The file is produced
in memory, checked (ONNX checker, then onnxruntime against PyTorch on a probe batch) and
only then written atomically: a failed export never leaves a file behind. Its metadata
records the network's name and description.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab import __version__, fileio
from cnnlab.engine.inference import predict_proba
from cnnlab.errors import CnnlabError
from cnnlab.extras import extra, require
from cnnlab.models import ModelDescription, Network
from cnnlab.train import checkpoint
from cnnlab.train.schemas import read_run_data

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
PARITY_ATOL = 1e-5  # onnxruntime vs PyTorch, max abs difference of probabilities
PROBE_SIZE = 64
PROBE_VALUES = 1 << 22  # at most this many input values in the probe batch (16 MiB)


def onnx_input_shape(desc: ModelDescription) -> tuple[int, ...]:
    """The graph's input shape without the batch axis: channels first, (C, *spatial)."""
    return (desc.input_shape[-1], *desc.input_shape[:-1])


class WithSoftmax(nn.Module):
    """``model`` (logits) followed by a softmax over classes: (N, C, ...) -> (N, classes)."""

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


def description_metadata(desc: ModelDescription) -> dict[str, str]:
    """The model's facts as ONNX metadata: name, shapes, the description itself (JSON)."""
    c_first = ", ".join(map(str, onnx_input_shape(desc)))
    return {
        "cnnlab_model": desc.name,
        "cnnlab_input_shape": json.dumps(list(desc.input_shape)),
        "cnnlab_classes": str(desc.classes),
        "cnnlab_description": json.dumps(desc.to_dict(), separators=(",", ":")),
        "input": f"{INPUT_NAME}: float32 (N, {c_first}), channels first "
        f"(the description's {'x'.join(map(str, desc.input_shape))} channels-last input)",
        "output": f"{OUTPUT_NAME}: float32 (N, {desc.classes}), softmax over the classes",
    }


def to_onnx_bytes(model: Network, metadata: dict[str, str] | None = None) -> tuple[bytes, int]:
    """Serialised ONNX model (logits network + softmax) and its opset version."""
    require("onnx", "ONNX export")  # onnxscript too: torch.onnx's exporter imports it
    import onnx

    desc = model.description
    meta = {"cnnlab_version": __version__, **description_metadata(desc), **(metadata or {})}
    wrapped = WithSoftmax(model).eval()
    example = torch.rand(2, *onnx_input_shape(desc), generator=torch.Generator().manual_seed(0))
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
        text = str(exc).strip().splitlines()
        raise CnnlabError(f"ONNX export failed: {text[0] if text else type(exc).__name__}") from exc
    if program is None:
        raise CnnlabError("ONNX export produced no model")
    proto = program.model_proto
    shape = ",".join(map(str, onnx_input_shape(desc)))
    proto.doc_string = (
        f"cnnlab model {desc.name}: {INPUT_NAME} (N,{shape}) float32 -> class probabilities"
    )
    for key, value in meta.items():
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
    with extra("onnx", "running an ONNX model"):
        import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def onnx_proba(session: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities from an onnxruntime session: (N, C, *spatial) float32 -> (N, classes)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = [
        session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch_size]})[0]
        for i in range(0, len(x), batch_size)
    ]
    if not out:
        classes = session.get_outputs()[0].shape[-1]
        return np.zeros((0, classes if isinstance(classes, int) else 0), dtype=np.float32)
    return np.concatenate(out)


def probe_inputs(desc: ModelDescription, n: int = PROBE_SIZE, seed: int = 0) -> np.ndarray:
    """A fixed batch of inputs in [0, 1] for the export-time check: (n, C, *spatial).

    Half of it is sparse (like pen strokes on black), half uniform noise; large inputs
    get a smaller batch (at least 2).
    """
    shape = onnx_input_shape(desc)
    n = max(2, min(n, PROBE_VALUES // math.prod(shape)))
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    x[: n // 2] = (x[: n // 2] > 0.8).astype(np.float32)
    return x


def export_model(
    model: Network,
    path: Path,
    *,
    force: bool = False,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Export ``model`` (logits) with a softmax to ``path``; check it before writing.

    ``metadata`` adds to (or overrides) what :func:`description_metadata` records.
    """
    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{path} is a folder; give a file name such as model.onnx")
    if path.exists() and not force:
        raise CnnlabError(f"{path} already exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise CnnlabError(f"folder {path.parent} does not exist")
    if not isinstance(model, Network):
        raise CnnlabError(f"only cnnlab networks export, got {type(model).__name__}")
    model = model.cpu().eval()
    data, opset = to_onnx_bytes(model, metadata)
    probe = probe_inputs(model.description)
    got, want = onnx_proba(onnx_session(data), probe), predict_proba(model, probe)
    diff = float(np.abs(got - want).max())
    if not diff <= PARITY_ATOL:  # also catches NaN
        raise CnnlabError(
            f"onnxruntime disagrees with PyTorch by {diff:.3g} (> {PARITY_ATOL}); "
            f"not writing {path}"
        )
    fileio.write_bytes(path, data)
    return ExportResult(path=path, n_bytes=len(data), opset=opset, probe_max_abs_diff=diff)


def export_run(run_dir: Path, path: Path, which: str = "best", force: bool = False) -> ExportResult:
    """Export the ``which`` checkpoint of a run folder to ONNX at ``path``. The metadata also
    say how the run's stored values became its inputs (``cnnlab_input_scale``: pixels
    divided by 255, or raw for a network that begins with Rescaling) and name its classes."""
    model, ckpt = checkpoint.load_model(Path(run_dir), which)
    found = read_run_data(Path(run_dir))
    metadata = {
        "cnnlab_model": checkpoint.run_name(ckpt),
        "cnnlab_checkpoint": f"{Path(run_dir).name}/{which}.pt",
        "cnnlab_epoch": str(ckpt["epoch"]),
        "cnnlab_input_scale": json.dumps(found.scale.to_dict()),
    }
    if found.classes is not None:
        metadata["cnnlab_class_names"] = json.dumps(found.classes)
    return export_model(model, path, force=force, metadata=metadata)
