"""Checkpoints: the network's description and weights in one file, validated when read.

A checkpoint (``best.pt``, ``last.pt``) is a dict of plain data and tensors, loaded with
``torch.load(weights_only=True)``, so nothing in it is ever executed::

    {"format": "cnnlab-checkpoint-2", "name": "case1", "description": {...},
     "epoch": 12, "model": {"conv1.weight": tensor, ...}, ...training state in last.pt}

Every reader goes through :func:`load_checkpoint` and :func:`load_model`, which refuse a
file that is not a cnnlab checkpoint, whose description does not parse, whose weights do
not fit that description, or whose weights are not finite, in one line naming the file.
Checkpoints of the first format (cnnlab before model descriptions: a ``case`` key and no
description) still load, their network taken from the registry.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from cnnlab import fileio
from cnnlab.errors import CnnlabError
from cnnlab.models import (
    REGISTRY,
    DescriptionError,
    ModelDescription,
    Network,
    build_module,
    get,
)
from cnnlab.train import schemas

FORMAT = "cnnlab-checkpoint-2"
OLD_FORMAT = "cnnlab-checkpoint-1"
MAX_BYTES = fileio.CHECKPOINT.limit


def make_checkpoint(
    description: ModelDescription, model: torch.nn.Module, epoch: int
) -> dict[str, Any]:
    """The checkpoint dict of ``model`` (weights copied to the CPU) after ``epoch``."""
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT,
        "name": description.name,
        "description": description.to_dict(),
        "epoch": epoch,
        "model": weights,
    }


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read and check a checkpoint file's envelope (not yet its weights against a network)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise CnnlabError(f"checkpoint {path} not found")
    # fileio's reader first: a FIFO or /dev/zero is refused before torch sees a byte, and
    # torch reads the descriptor that was checked, not the path again.
    with fileio.open_regular(path, fileio.CHECKPOINT) as f:
        if not zipfile.is_zipfile(f):  # torch.save writes a zip archive
            raise CnnlabError(f"{path} is not a readable cnnlab checkpoint (not a torch.save file)")
        f.seek(0)
        try:
            ckpt = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # torch's message advises weights_only=False: never for a file one did not make
            raise CnnlabError(f"{path}: unsafe content refused (not a cnnlab checkpoint)") from None
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
            raise CnnlabError(
                f"{path} is not a readable cnnlab checkpoint ({_first_line(exc)})"
            ) from None
        except Exception as exc:  # torch raises many types for a damaged file
            raise CnnlabError(
                f"{path} is not a readable cnnlab checkpoint ({_first_line(exc)})"
            ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (FORMAT, OLD_FORMAT):
        raise CnnlabError(f"{path} is not a cnnlab checkpoint")
    epoch = ckpt.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CnnlabError(f"{path}: field 'epoch' must be a whole number >= 0, got {epoch!r}")
    weights = ckpt.get("model")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise CnnlabError(f"{path}: field 'model' must map weight names to tensors")
    return ckpt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def checkpoint_description(ckpt: dict[str, Any], path: Path) -> ModelDescription:
    """The network a checkpoint was saved with."""
    if ckpt.get("format") == OLD_FORMAT:
        case = ckpt.get("case")
        if not isinstance(case, str) or case not in REGISTRY:
            raise CnnlabError(f"{path}: field 'case' names no known network ({case!r})")
        return get(case)
    try:
        return ModelDescription.from_dict(ckpt.get("description"))
    except DescriptionError as exc:
        raise CnnlabError(f"{path}: field 'description': {exc}") from None


def network_from(ckpt: dict[str, Any], path: Path) -> Network:
    """The checkpoint's network with its weights, in eval mode; checked to fit and be finite."""
    model = build_module(checkpoint_description(ckpt, path))
    weights: dict[str, torch.Tensor] = ckpt["model"]
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has an unexpected {extra[0]}"
        raise CnnlabError(f"{path}: weights do not fit the network ({what})")
    for key, value in weights.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CnnlabError(
                f"{path}: weight {key} has shape {tuple(value.shape)}, "
                f"the network needs {tuple(expected[key].shape)}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CnnlabError(f"{path}: weight {key} holds NaN or infinite values")
    model.load_state_dict(weights)
    model.eval()
    return model


def load_model(run_dir: Path, which: str = "best") -> tuple[Network, dict[str, Any]]:
    """The network of a run folder's ``{which}.pt`` in eval mode, with its checkpoint dict.

    The folder's records are checked first (config.json, model.json:
    :func:`cnnlab.train.schemas.read_run`), and the checkpoint must hold the network they
    describe: a folder mixing two runs is refused, not silently used.
    """
    run_dir = Path(run_dir)
    config, described = schemas.read_run(run_dir)
    path = run_dir / f"{which}.pt"
    ckpt = load_checkpoint(path)
    model = network_from(ckpt, path)
    if described is not None and model.description != described:
        source = schemas.CONFIG if config is not None else schemas.MODEL
        raise CnnlabError(
            f"{path} holds another network ({model.description.name!r}) than the one "
            f"{run_dir / source} describes ({described.name!r}): a folder mixing two runs?"
        )
    return model, ckpt


def run_name(ckpt: dict[str, Any]) -> str:
    """The network's name recorded in a checkpoint (``case`` in the first format)."""
    name = ckpt.get("name", ckpt.get("case"))
    return name if isinstance(name, str) else "model"
