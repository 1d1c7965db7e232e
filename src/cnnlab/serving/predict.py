"""Use a trained model on your own digits: from arrays or image files to predictions.

>>> p = Predictor.from_run("runs/case1-...")          # doctest: +SKIP
>>> [r.digit for r in p.predict_files(["seven.png"])]  # doctest: +SKIP
[7]

Images go through :mod:`cnnlab.preprocess` (MNIST's own recipe) unless they are already
28x28 network inputs. The feature maps of the first two conv layers are taken with
forward hooks on the model's named children, kept per thread so that a web server may
call one predictor from many threads at once.
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
from cnnlab.errors import CnnlabError
from cnnlab.train import checkpoint

# Keras' view of the layers: Conv2D(..., activation="relu") outputs the map after ReLU,
# so "conv1"'s feature maps are the output of the relu1 child (conv1 itself as fallback).
FEATURE_LAYERS: dict[str, tuple[str, ...]] = {
    "conv1": ("relu1", "conv1"),
    "conv2": ("relu2", "conv2"),
}
BATCH = 256


@dataclass(frozen=True)
class Prediction:
    """One image's prediction."""

    digit: int
    probabilities: np.ndarray  # (10,) float32, sums to 1
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
    """A trained model in eval mode, ready to predict on images, arrays or files."""

    def __init__(self, model: nn.Module, case: str | None = None) -> None:
        self.model = model.eval()
        self.case = case
        self._local = threading.local()
        children = dict(model.named_children())
        self.feature_layers: dict[str, str] = {}
        for name, candidates in FEATURE_LAYERS.items():
            found = next((c for c in candidates if c in children), None)
            if found is not None:
                self.feature_layers[name] = found
                children[found].register_forward_hook(self._hook(name))

    @classmethod
    def from_run(cls, run_dir: str | Path, which: str = "best") -> Predictor:
        """Load ``run_dir/{which}.pt`` (CnnlabError if it is missing or not a checkpoint)."""
        model, ckpt = checkpoint.load_model(Path(run_dir), which)
        return cls(model, case=str(ckpt["case"]))

    def _hook(self, name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            store = getattr(self._local, "store", None)
            if store is not None:  # only while this thread asked for feature maps
                store[name] = output.detach()

        return hook

    @contextmanager
    def _capture(self, on: bool) -> Iterator[dict[str, torch.Tensor]]:
        store: dict[str, torch.Tensor] = {}
        self._local.store = store if on else None
        try:
            yield store
        finally:
            self._local.store = None

    def predict_inputs(
        self, x: np.ndarray, feature_maps: bool = False
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Probabilities (N, 10) and feature maps {name: (N, C, H, W)} for inputs (N, 28, 28)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise CnnlabError(f"network inputs must be (N, 28, 28), got {x.shape}")
        probs: list[np.ndarray] = []
        maps: dict[str, list[np.ndarray]] = {name: [] for name in self.feature_layers}
        with torch.inference_mode():
            for start in range(0, len(x), BATCH):
                batch = torch.from_numpy(x[start : start + BATCH]).unsqueeze(1)  # (B, 1, 28, 28)
                with self._capture(feature_maps) as store:
                    logits = self.model(batch)  # (B, 10)
                probs.append(torch.softmax(logits, dim=1).numpy())
                for name, t in store.items():
                    maps[name].append(t.numpy())  # (B, C, H, W)
        p = np.concatenate(probs) if probs else np.zeros((0, 10), np.float32)
        fm = {k: np.concatenate(v) for k, v in maps.items() if v}
        return p, fm

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
        if preprocess_images:
            prepped = [preprocess(np.asarray(img), invert) for img in images]
        else:
            prepped = [Preprocessed(np.asarray(img, np.float32), False) for img in images]
            bad = [p.image.shape for p in prepped if p.image.shape != (28, 28)]
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
