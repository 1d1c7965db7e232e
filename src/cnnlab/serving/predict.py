"""Use a trained network on one's own data: arrays, or digit images for 28x28x1 networks.

>>> p = Predictor.from_run("runs/case1-...")          # doctest: +SKIP
>>> [r.digit for r in p.predict_files(["seven.png"])]  # doctest: +SKIP
[7]
>>> p.predict_array(x)                                 # doctest: +SKIP  (N, *input_shape)

Everything derives from the run's :class:`~cnnlab.models.ModelDescription`: the input
shape, the number of classes and the feature-map layers (every conv layer, its output
after its activation, as Keras defines it). Feature maps are taken with forward hooks on
the network's children, kept per thread so that a web server may call one predictor from
many threads at once. Image files go through :mod:`cnnlab.data.preprocess` (MNIST's own
recipe), so they need a network with 28x28x1 inputs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from cnnlab.data.preprocess import ImageLimits, Preprocessed, preprocess, preprocess_file
from cnnlab.engine.inference import predict_proba
from cnnlab.errors import CnnlabError
from cnnlab.models import LayerInfo, Network
from cnnlab.models import layers as L
from cnnlab.train import checkpoint

BATCH = 256
IMAGE_SHAPE = (28, 28, 1)  # what MNIST-style preprocessing makes


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


@dataclass(frozen=True)
class Prediction:
    """One image's prediction."""

    digit: int  # the most probable class
    probabilities: np.ndarray  # (classes,) float32, sums to 1
    input: np.ndarray  # (28, 28) float32 in [0, 1]: what the network saw
    inverted: bool | None = None  # whether preprocessing inverted the image (None: not run)
    path: str | None = None
    feature_maps: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (C, H, W)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: path, digit, probabilities."""
        return {
            "path": self.path,
            "digit": self.digit,
            "probabilities": [round(float(p), 6) for p in self.probabilities],
        }


class Predictor:
    """A trained network in eval mode, ready to predict on arrays, images or files."""

    def __init__(self, model: Network, name: str | None = None) -> None:
        self.model = model.eval()
        self.description = model.description
        self.name = name or self.description.name
        self.input_shape: tuple[int, ...] = self.description.input_shape
        self.classes = self.description.classes
        self._local = threading.local()
        children = dict(model.named_children())
        convs = [(i, i.layer) for i in self.description.info if isinstance(i.layer, L.Conv)]
        self.feature_layers: dict[str, LayerInfo] = {conv.name: info for info, conv in convs}
        self.activations: dict[str, str] = {conv.name: conv.activation for _, conv in convs}
        for layer_name in self.feature_layers:
            children[layer_name].register_forward_hook(self._hook(layer_name))

    @classmethod
    def from_run(cls, run_dir: str | Path, which: str = "best") -> Predictor:
        """Load ``run_dir/{which}.pt`` (CnnlabError if it is missing or not a checkpoint)."""
        model, ckpt = checkpoint.load_model(Path(run_dir), which)
        return cls(model, name=checkpoint.run_name(ckpt))

    @property
    def takes_images(self) -> bool:
        """Whether the network takes MNIST-style 28x28x1 inputs (image files, the web page)."""
        return self.input_shape == IMAGE_SHAPE

    def require_images(self, what: str = "image prediction") -> None:
        """CnnlabError, in one line, unless the network takes 28x28x1 inputs."""
        if not self.takes_images:
            raise CnnlabError(
                f"{what} needs a network with 28x28x1 inputs (MNIST-style digits); model "
                f"{self.name!r} takes {_fmt(self.input_shape)}: predict on arrays instead "
                "(cnnlab predict RUN_DIR --array X.npy)"
            )

    # ------------------------------------------------------------ hooks

    def _hook(self, name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            store = getattr(self._local, "store", None)
            if store is not None:  # only while this thread asked for feature maps
                store.setdefault(name, []).append(output.detach())

        return hook

    @contextmanager
    def _capture(self, on: bool) -> Iterator[dict[str, list[torch.Tensor]]]:
        store: dict[str, list[torch.Tensor]] = {}
        self._local.store = store if on else None
        try:
            yield store
        finally:
            self._local.store = None

    # ------------------------------------------------------------ arrays

    def as_batch(self, x: Any) -> np.ndarray:
        """Inputs as a float32 channels-last batch (N, *input_shape); CnnlabError if unfit.

        Takes (N, *input_shape) or one input (*input_shape); for a single-channel network
        the channel axis may be left out ((N, 28, 28) or (28, 28)).
        """
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested lists, for one
            raise CnnlabError(f"inputs are not one regular array ({exc})") from None
        if arr.dtype.kind not in "biuf":
            raise CnnlabError(f"inputs must be numbers, got an array of dtype {arr.dtype}")
        shape, spatial = self.input_shape, self.input_shape[:-1]
        if arr.shape == shape:
            arr = arr[None]
        elif arr.shape[1:] == shape:
            pass
        elif shape[-1] == 1 and arr.shape == spatial:
            arr = arr[None, ..., None]
        elif shape[-1] == 1 and arr.shape[1:] == spatial:
            arr = arr[..., None]
        else:
            raise CnnlabError(
                f"model {self.name!r} takes inputs of shape {_fmt(shape)} (channels last), "
                f"as (N, {', '.join(map(str, shape))}); got an array of shape {arr.shape}"
            )
        with np.errstate(over="ignore", invalid="ignore"):  # refused just below
            out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise CnnlabError("inputs hold NaN or infinite values (or values beyond float32)")
        return out

    def predict_array(self, x: Any) -> np.ndarray:
        """Probabilities (N, classes) for raw inputs in Keras' layout, (N, *input_shape)."""
        probs, _ = self.predict_inputs(x)
        return probs

    def predict_inputs(
        self, x: Any, feature_maps: bool = False
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Probabilities (N, classes) and, if asked, feature maps {name: (N, C, *spatial)}.

        ``x`` as :meth:`as_batch` takes it; the maps are channels-first, as PyTorch's.
        """
        batch = self.as_batch(x)
        channels_first = np.ascontiguousarray(np.moveaxis(batch, -1, 1))  # (N, C, *spatial)
        if len(batch) == 0:
            return np.zeros((0, self.classes), np.float32), {}
        with self._capture(feature_maps) as store:
            probs = predict_proba(self.model, torch.from_numpy(channels_first), BATCH)
        maps = {n: torch.cat(store[n]).numpy() for n in self.feature_layers if n in store}
        return probs, maps

    # ------------------------------------------------------------ images

    def predict_arrays(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        *,
        invert: bool | None = None,
        preprocess_images: bool = True,
        feature_maps: bool = False,
    ) -> list[Prediction]:
        """Predict on image arrays: each (H, W) grey or (H, W, 3|4) colour, any size.

        ``preprocess_images=False`` takes them as ready network inputs, (N, 28, 28) in
        [0, 1], light digit on black, as MNIST.
        """
        self.require_images()
        if preprocess_images:
            prepped = [preprocess(np.asarray(img), invert) for img in images]
        else:
            prepped = [Preprocessed(np.asarray(img, np.float32), False) for img in images]
            bad = [p.image.shape for p in prepped if p.image.shape != IMAGE_SHAPE[:2]]
            if bad:
                raise CnnlabError(f"network inputs must be 28x28, got {bad[0]}")
        return self._predict(prepped, [None] * len(prepped), feature_maps, preprocess_images)

    def predict_files(
        self,
        paths: Sequence[str | Path],
        *,
        invert: bool | None = None,
        limits: ImageLimits | None = None,
        feature_maps: bool = False,
    ) -> list[Prediction]:
        """Predict on image files (PNG, JPEG, ...); ImageRejected names a bad file."""
        self.require_images()
        prepped = [preprocess_file(Path(p), invert, limits) for p in paths]
        return self._predict(prepped, [str(p) for p in paths], feature_maps, True)

    def predict_image(
        self,
        source: bytes | BinaryIO | str | Path,
        *,
        invert: bool | None = None,
        limits: ImageLimits | None = None,
        feature_maps: bool = False,
    ) -> Prediction:
        """Predict on one encoded image (bytes, file object or path)."""
        self.require_images()
        prepped = preprocess_file(source, invert, limits)
        path = str(source) if isinstance(source, str | Path) else None
        return self._predict([prepped], [path], feature_maps, True)[0]

    def _predict(
        self,
        prepped: list[Preprocessed],
        paths: list[str | None],
        feature_maps: bool,
        preprocessed: bool,
    ) -> list[Prediction]:
        if not prepped:
            return []
        x = np.stack([p.image for p in prepped])  # (N, 28, 28)
        probs, maps = self.predict_inputs(x, feature_maps)
        return [
            Prediction(
                digit=int(np.argmax(probs[i])),
                probabilities=probs[i],
                input=x[i],
                inverted=prepped[i].inverted if preprocessed else None,
                path=paths[i],
                feature_maps={name: m[i] for name, m in maps.items()},
            )
            for i in range(len(prepped))
        ]
