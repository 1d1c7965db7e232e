"""One schema per run-folder file, checked where the file is read.

- ``config.json``: an object with ``config`` (a :class:`TrainConfig`, every field typed and
  in range, a known dataset) and ``model`` (the network's description; runs made before
  descriptions name a registered network in ``config`` instead);
- ``model.json``: the same description, which must agree with ``config.json``'s;
- ``metrics.json``: an object whose numbers are finite numbers;
- ``last.pt``'s training state (optimiser, random streams, early stopping, history), beside
  the envelope and weights that :mod:`cnnlab.train.checkpoint` checks.

Every violation is a :class:`CnnlabError` whose one line names the file and the field, so
a damaged or hand-edited folder never ends in a traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from cnnlab import fileio
from cnnlab.data.base import KINDS
from cnnlab.data.scaling import InputScale
from cnnlab.errors import CnnlabError
from cnnlab.models import REGISTRY, DescriptionError, ModelDescription, get
from cnnlab.train.config import TrainConfig
from cnnlab.train.stopping import EarlyStopping

CONFIG, MODEL, METRICS = "config.json", "model.json", "metrics.json"
HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
METRIC_NUMBERS: tuple[str, ...] = ("test_accuracy", "test_loss", "params", "best_epoch")
METRIC_NUMBERS += ("epochs_run", "train_seconds", "best_val_accuracy", "trainable_params")


def read_run_config(run_dir: Path) -> tuple[TrainConfig, ModelDescription]:
    """A run folder's config and description, validated; CnnlabError naming the field."""
    path = Path(run_dir) / CONFIG
    data = fileio.read_json(path)
    if not isinstance(data, dict):
        raise CnnlabError(f"{path} must hold a JSON object, got {_kind(data)}")
    if "config" not in data:
        raise CnnlabError(f"{path} lacks the field 'config'")
    try:
        config = TrainConfig.from_dict(data["config"])
    except (TypeError, ValueError) as exc:
        raise CnnlabError(f"{path}: field 'config': {exc}") from None
    from cnnlab.data.datasets import check_spec

    try:
        check_spec(config.data)
    except CnnlabError as exc:
        raise CnnlabError(f"{path}: field 'config.data': {exc}") from None
    return config, _description(path, data.get("model"), config)


MAX_CLASSES = 100_000
LEGACY_SCALE = InputScale(
    255.0, "uint8 pixels divided by 255 (a run from before scales were recorded)"
)


@dataclass(frozen=True)
class RunData:
    """What a run says of its data: the dataset record (None for runs from before records,
    and for imported ones), its class names, and how stored values became its inputs."""

    spec: str | None
    record: dict[str, Any] | None
    scale: InputScale

    @property
    def classes(self) -> list[str] | None:
        return None if self.record is None else list(self.record["classes"])


def read_run_data(run_dir: Path) -> RunData:
    """config.json's ``data`` record and ``resolved.input_scale``, checked (CnnlabError naming
    the field). A folder without config.json, or a run from before records, gets the rule
    runs then followed: uint8 pixels divided by 255."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        return RunData(None, None, LEGACY_SCALE)
    data = fileio.read_json(path)
    if not isinstance(data, dict):
        raise CnnlabError(f"{path} must hold a JSON object, got {_kind(data)}")
    config = data.get("config")
    spec = config.get("data") if isinstance(config, dict) else None
    record = data.get("data")
    if record is not None:
        _check_record(path, record)
    scale = LEGACY_SCALE
    resolved = data.get("resolved")
    raw = resolved.get("input_scale") if isinstance(resolved, dict) else None
    if raw is not None:
        if not isinstance(raw, dict) or not isinstance(raw.get("reason"), str):
            raise CnnlabError(
                f"{path}: field 'resolved.input_scale' must be an object with a reason"
            )
        divisor = raw.get("divide_by")
        if divisor not in (1, 1.0, 255, 255.0) or isinstance(divisor, bool):
            raise CnnlabError(f"{path}: field 'resolved.input_scale.divide_by' must be 1 or 255")
        scale = InputScale(float(divisor), raw["reason"][:200])
    return RunData(spec if isinstance(spec, str) else None, record, scale)


def _check_record(path: Path, record: Any) -> None:
    if not isinstance(record, dict):
        raise CnnlabError(f"{path}: field 'data' must be an object")
    if not isinstance(record.get("spec"), str):
        raise CnnlabError(f"{path}: field 'data.spec' must be a string")
    classes = record.get("classes")
    if (
        not isinstance(classes, list)
        or not 1 <= len(classes) <= MAX_CLASSES
        or not all(isinstance(c, str) and len(c) <= 256 for c in classes)
    ):
        raise CnnlabError(f"{path}: field 'data.classes' must list the class names")
    if not isinstance(record.get("pixels"), bool):
        raise CnnlabError(f"{path}: field 'data.pixels' must be true or false")
    if record.get("kind") not in KINDS:
        raise CnnlabError(f"{path}: field 'data.kind' must be one of {', '.join(KINDS)}")
    if not isinstance(record.get("preprocessing", {}), dict):
        raise CnnlabError(f"{path}: field 'data.preprocessing' must be an object")


def saved_description(run_dir: Path) -> ModelDescription:
    """The description a run was trained with (config.json's, checked)."""
    return read_run_config(run_dir)[1]


def _description(path: Path, raw: Any, config: TrainConfig) -> ModelDescription:
    if raw is None:  # a run from before descriptions: its network is a registered one
        if config.model not in REGISTRY:
            raise CnnlabError(
                f"{path} lacks the field 'model', and 'config.model' ({config.model!r}) is "
                f"not a registered network ({', '.join(REGISTRY)})"
            )
        return get(config.model)
    try:
        return ModelDescription.from_dict(raw)
    except DescriptionError as exc:
        raise CnnlabError(f"{path}: field 'model': {exc}") from None


def read_model_json(run_dir: Path) -> ModelDescription | None:
    """``model.json``'s description, validated; None for a folder without one."""
    path = Path(run_dir) / MODEL
    if not path.exists():
        return None
    try:
        return ModelDescription.from_dict(fileio.read_json(path))
    except DescriptionError as exc:
        raise CnnlabError(f"{path}: {exc}") from None


def read_run(run_dir: Path) -> tuple[TrainConfig | None, ModelDescription | None]:
    """The records a run folder holds (config.json, model.json), validated and agreeing.

    Either may be absent (a hand-made folder holding only a checkpoint): then None.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabError(f"run folder {run_dir} not found")
    config, desc = None, None
    if (run_dir / CONFIG).exists():
        config, desc = read_run_config(run_dir)
    described = read_model_json(run_dir)
    if described is not None and desc is not None and described != desc:
        raise CnnlabError(
            f"{run_dir / MODEL} describes another network ({described.name!r}) than "
            f"{run_dir / CONFIG}'s 'model' ({desc.name!r}): a folder mixing two runs?"
        )
    return config, desc or described


def read_metrics(run_dir: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """metrics.json, checked: an object whose numbers are numbers; ``required`` present."""
    path = Path(run_dir) / METRICS
    data = fileio.read_json(path)
    if not isinstance(data, dict):
        raise CnnlabError(f"{path} must hold a JSON object, got {_kind(data)}")
    for key in required:
        if key not in data:
            raise CnnlabError(f"{path} lacks the field {key!r}")
    for key in METRIC_NUMBERS:
        if key in data and data[key] is not None:
            _number(path, key, data[key])
    for key in ("model", "case"):
        if key in data and not isinstance(data[key], str):
            raise CnnlabError(f"{path}: field {key!r} must be a string")
    imported = data.get("imported_from")
    if imported is not None and not (isinstance(imported, dict) and "file" in imported):
        raise CnnlabError(f"{path}: field 'imported_from' must be an object with a 'file'")
    return data


def _number(path: Path, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CnnlabError(f"{path}: field {key!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise CnnlabError(f"{path}: field {key!r} must be finite, got {value!r}")
    return float(value)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_training_state(ckpt: dict[str, Any], path: Path, model: torch.nn.Module) -> None:
    """``last.pt``'s training state, checked against ``model`` (its weights already fit)."""
    for key in ("optimizer", "rng", "stopping", "history"):
        if key not in ckpt:
            raise CnnlabError(f"{path} lacks the field {key!r}: cannot resume")
    for key in ("best_val_loss", "train_seconds"):
        value = ckpt.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise CnnlabError(f"{path}: field {key!r} must be a number, got {value!r}")
    for key, kind in (("best_epoch", int), ("finished", bool)):
        value = ckpt.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CnnlabError(f"{path}: field {key!r} must be a {kind.__name__}, got {value!r}")
    _check_stopping(ckpt["stopping"], path)
    _check_history(ckpt["history"], ckpt["epoch"], path)
    _check_rng(ckpt["rng"], path)
    _check_optimizer(ckpt["optimizer"], path, model)


def _check_stopping(state: Any, path: Path) -> None:
    names = {f.name for f in fields(EarlyStopping)}
    if not isinstance(state, dict) or set(state) != names:
        raise CnnlabError(f"{path}: field 'stopping' must hold {', '.join(sorted(names))}")
    for key in names:
        value = state[key]
        want = float if key == "best" else int
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CnnlabError(f"{path}: field 'stopping.{key}' must be a number, got {value!r}")
        if want is int and not isinstance(value, int):
            raise CnnlabError(f"{path}: field 'stopping.{key}' must be a whole number")


def _check_history(history: Any, epoch: int, path: Path) -> None:
    if not isinstance(history, list) or len(history) != epoch:
        raise CnnlabError(f"{path}: field 'history' must list one row per epoch ({epoch})")
    for row in history:
        if not isinstance(row, dict) or any(k not in row for k in HISTORY_FIELDS):
            raise CnnlabError(
                f"{path}: field 'history': each row needs {', '.join(HISTORY_FIELDS)}"
            )
        for key in HISTORY_FIELDS:
            value = row[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CnnlabError(f"{path}: field 'history': {key} must be a number")


def _check_rng(rng: Any, path: Path) -> None:
    if not isinstance(rng, dict) or not all(k in rng for k in ("shuffle", "torch")):
        raise CnnlabError(f"{path}: field 'rng' must hold the 'shuffle' and 'torch' states")
    reference = torch.get_rng_state()
    for key in ("shuffle", "torch"):
        state = rng[key]
        ok = isinstance(state, torch.Tensor) and state.dtype == torch.uint8
        if not ok or state.shape != reference.shape:
            raise CnnlabError(f"{path}: field 'rng.{key}' is not a random generator's state")
    try:
        torch.Generator().set_state(rng["shuffle"])  # a scratch generator: nothing changes
    except (RuntimeError, TypeError, ValueError):
        raise CnnlabError(f"{path}: field 'rng.shuffle' is not a generator's state") from None


def _check_optimizer(state: Any, path: Path, model: torch.nn.Module) -> None:
    """Adam's state must load into an optimiser of this network, shape for shape."""
    if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list):
        raise CnnlabError(f"{path}: field 'optimizer' is not an optimiser's state")
    params = list(model.parameters())
    scratch = torch.optim.Adam(params)
    try:
        scratch.load_state_dict(state)
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError, AttributeError) as exc:
        text = str(exc).strip().splitlines()
        why = text[0][:160] if text else type(exc).__name__
        raise CnnlabError(f"{path}: field 'optimizer' does not fit the network ({why})") from None
    for param in params:
        for key, value in scratch.state.get(param, {}).items():
            if key == "step" or not isinstance(value, torch.Tensor):
                continue
            if value.shape != param.shape or not bool(torch.isfinite(value).all()):
                raise CnnlabError(
                    f"{path}: field 'optimizer': its {key} does not fit the network's weights"
                )
