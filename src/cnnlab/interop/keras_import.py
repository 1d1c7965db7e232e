"""Import a Keras 3 ``.keras`` file (any ``Sequential`` of cnnlab's layers) as a run folder.

The architecture comes from the file's ``config.json`` (:mod:`cnnlab.interop.keras_config`:
a Sequential or a functional model), the weights from ``model.weights.h5``
(:mod:`cnnlab.interop.keras_file`, read as data only), each layer's in Keras' order and
moved from Keras' channels-last layout to PyTorch's by its layer kind
(:meth:`cnnlab.models.layers.Layer.weights`): a ``ConvND`` kernel (*k, C_in, C_out) becomes
(C_out, C_in, *k), a ``Dense`` kernel (in, out) a ``Linear`` weight (out, in),
``BatchNormalization``'s gamma, beta, moving mean and variance ``weight``, ``bias``,
``running_mean``, ``running_var``.

Given a chapter case, the import also checks that the file computes exactly that case
(the same layers and arguments; layer names aside). The run folder is written like a
trained one, marked as imported, and only once everything in the file has been checked.
"""

from __future__ import annotations

import dataclasses
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab import fileio
from cnnlab.data.scaling import input_scale
from cnnlab.errors import CnnlabError
from cnnlab.interop.keras_config import KerasLayer, Translation, show, translate
from cnnlab.interop.keras_file import Weights, open_weights, read_archive
from cnnlab.models import CASES, ModelDescription, Network, build_module, case_name, get
from cnnlab.models.description import LayerInfo
from cnnlab.train import checkpoint, runs
from cnnlab.train.run_inputs import takes_raw_pixels


@dataclass
class KerasModel:
    """What was read from a ``.keras`` file: the description, its weights, their source."""

    description: ModelDescription
    state_dict: dict[str, torch.Tensor]
    source: dict[str, Any]
    case: str | None = None  # the chapter case it was checked to be, if one was asked for


def _layer_weights(w: Weights, src: KerasLayer, info: LayerInfo) -> dict[str, torch.Tensor]:
    """One layer's tensors, read from its HDF5 group in Keras' order and moved into PyTorch's
    layout by its layer kind (:class:`cnnlab.models.layers.Weight`); nothing left over."""
    out: dict[str, torch.Tensor] = {}
    expected = info.layer.weights(info.in_shapes)
    for i, weight in enumerate(expected):
        arr = w.array(f"{src.h5_group}/vars/{i}", weight.shape, src.where)
        if weight.keras == "moving_variance" and (arr < 0).any():
            raise CnnlabError(f"{w.path}: {src.where}: its moving variance has negative values")
        out[f"{info.layer.name}.{weight.torch}"] = torch.from_numpy(weight.to_torch(arr))
    if w.exists(f"{src.h5_group}/vars/{len(expected)}"):
        raise CnnlabError(
            f"{w.path}: {src.where}: model.weights.h5 holds more weights for it "
            f"({src.h5_group}/vars/{len(expected)}) than its config implies ({len(expected)})"
        )
    return out


def convert_weights(tr: Translation, weights: Weights) -> dict[str, torch.Tensor]:
    """The Network's state_dict from Keras 3's ``model.weights.h5``, every array checked."""
    desc = tr.description
    state: dict[str, torch.Tensor] = {}
    for info in desc.info:
        state.update(_layer_weights(weights, tr.sources[info.layer.name], info))
    with torch.device("meta"):  # the module's own keys: no memory, no RNG draws
        keys = set(Network(desc).state_dict())
    missing = sorted(keys - set(state))
    if missing:  # a guard: the layer kinds' weights and their modules must agree
        raise CnnlabError(f"{weights.path}: no weights found for {', '.join(missing)}")
    return state


def _differences(tr: Translation, case: str) -> list[str]:
    """How the imported network computes differently from the registry's ``case``.

    Layer names aside, every layer's class and arguments must agree.
    """
    desc, ref = tr.description, get(case)
    if desc.input_shape != ref.input_shape:
        fmt = "x".join
        return [
            f"it takes input {fmt(map(str, desc.input_shape))}, "
            f"{case} takes {fmt(map(str, ref.input_shape))}"
        ]
    if not desc.is_chain or len(desc.layers) != len(ref.layers):
        return [
            f"it has {len(desc.layers)} layers ({' '.join(x.class_name for x in desc.layers)}), "
            f"{case} has {len(ref.layers)} ({' '.join(x.class_name for x in ref.layers)})"
        ]
    out = []
    for src, mine, theirs in zip(tr.layers, desc.layers, ref.layers, strict=True):
        if mine.class_name != theirs.class_name:
            out.append(f"{src.where}: {case} has a {theirs.class_name} there")
            continue
        a, b = mine.config(), theirs.config()
        out += [
            f"{src.where}: {k}={show(a.get(k))}, {case} has {show(b.get(k))}"
            for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)
        ]
    return out


def check_case(tr: Translation, case: str, path: Path) -> None:
    """CnnlabError (one line, saying what differs) unless ``tr`` is exactly ``case``."""
    problems = _differences(tr, case)
    if not problems:
        return
    others = [c for c in CASES if c != case and not _differences(tr, c)]
    hint = f"; it is {others[0]}'s architecture (use --case {others[0][4:]})" if others else ""
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    raise CnnlabError(f"{path} is not the chapter's {case}: {'; '.join(problems[:3])}{more}{hint}")


def _model_name(path: Path) -> str:
    """The file's stem as a model name (``case1_best_model``)."""
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "_", path.stem)[:64]
    return stem if stem[:1].isalpha() else f"keras_{stem}"[:64].rstrip("_")


def read_keras(path: Path, case: str | int | None = None) -> KerasModel:
    """Read, check and convert a ``.keras`` file; with ``case``, check it is that case too."""
    path = Path(path)
    try:
        name = case_name(case) if case is not None else None
    except ValueError as exc:
        raise CnnlabError(str(exc)) from None
    archive = read_archive(path)
    tr = translate(archive.config, path, name or _model_name(path))
    if name is not None:
        check_case(tr, name, path)
    with open_weights(archive) as weights:
        state = convert_weights(tr, weights)
    source = {
        "format": "keras",
        "file": path.name,
        "sha256": archive.sha256,
        "keras_version": archive.keras_version,
        # layers whose Keras name had to change (characters, clashes): cnnlab's -> Keras'
        "renamed": {
            layer.name: src.keras_name
            for layer in tr.description.layers
            if layer.name != (src := tr.sources[layer.name]).keras_name
        },
    }
    return KerasModel(tr.description, state, source, name)


def write_run(km: KerasModel, out_dir: Path) -> dict[str, Any]:
    """Write the run folder of an imported model; returns its metrics.json content.

    ``best.pt``, ``model.json``, ``metrics.json``, then ``config.json`` last: an
    interrupted import leaves a folder that a new import may still use.
    """
    from cnnlab.train.config import TrainConfig

    desc = km.description
    model = build_module(desc)
    model.load_state_dict(km.state_dict)  # strict: every tensor present, every shape right
    model.eval()
    out = runs.prepare_out_dir(Path(out_dir))
    # "case": what readers of the first checkpoint format (evaluate, report) still look up
    ckpt = checkpoint.make_checkpoint(desc, model, 0) | {"case": desc.name}
    runs.save_torch(out / "best.pt", ckpt)
    fileio.write_json(out / "model.json", desc.to_dict())
    metrics = {
        "model": desc.name,
        "case": desc.name,
        "params": desc.params,  # as Keras' count_params: BatchNormalization's moving stats too
        "trainable_params": desc.trainable_params,
        "imported_from": km.source,
    }
    fileio.write_json(out / "metrics.json", metrics)
    run_config = {
        "config": dataclasses.asdict(TrainConfig(model=desc.name)),
        "model": desc.to_dict(),
        "imported_from": km.source,
        "resolved": {
            "note": "weights imported from a .keras file; not trained by cnnlab, "
            "so there is no history.csv or last.pt (best_epoch 0 means unknown)",
            # pixels reach it as they reach any network (a Rescaling first takes them raw)
            "input_scale": input_scale(True, takes_raw_pixels(desc)).to_dict(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    fileio.write_json(out / "config.json", run_config)
    return metrics


def import_keras(path: Path, case: str | int | None, out_dir: Path) -> dict[str, Any]:
    """Read ``path`` (checked against ``case`` if given) and write its run folder."""
    return write_run(read_keras(path, case), out_dir)
