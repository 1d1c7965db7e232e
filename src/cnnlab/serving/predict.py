"""Use a trained network on one's own data: arrays, or image files for any 2-D image network.

>>> p = Predictor.from_run("runs/photos-...")          # doctest: +SKIP
>>> [r.label for r in p.predict_files(["tabby.jpg"])]  # doctest: +SKIP
['cat']
>>> p.predict_array(x)                                 # doctest: +SKIP  (N, *input_shape)

Everything derives from the run: the network's :class:`~cnnlab.models.ModelDescription`
gives the input shape, the number of classes and the feature-map layers (every conv
layer, its output after its activation, as Keras defines it); the run's record
(:func:`cnnlab.train.schemas.read_run_data`) gives the class names, the input scale and how
its images were decoded (:mod:`cnnlab.train.run_inputs`: MNIST-style digits for runs trained
on MNIST, the folder decoder's steps for every other image network). Feature maps are
taken with forward hooks on the network's children, kept per thread so that a web server
may call one predictor from many threads at once.
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

from cnnlab.data.preprocess import ImageLimits
from cnnlab.data.scaling import to_inputs
from cnnlab.engine.inference import predict_proba
from cnnlab.errors import CnnlabError
from cnnlab.models import LayerInfo, Network
from cnnlab.models import layers as L
from cnnlab.train import checkpoint
from cnnlab.train.run_inputs import DIGIT_SHAPE, DIGITS, Recipe, Seen, fmt_shape, recipe_for
from cnnlab.train.schemas import LEGACY_SCALE, RunData, read_run_data

BATCH = 256
IMAGE_SHAPE = DIGIT_SHAPE  # what MNIST-style preprocessing makes (and the page draws)


@dataclass(frozen=True)
class Prediction:
    """One input's prediction."""

    digit: int  # the most probable class's index (the digit, for MNIST): see class_index
    probabilities: np.ndarray  # (classes,) float32, sums to 1
    input: np.ndarray  # what the network saw as a picture in [0, 1]: (H, W) or (H, W, C)
    inverted: bool | None = None  # whether MNIST-style preprocessing inverted it (None: not run)
    path: str | None = None
    feature_maps: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (C, H, W)
    label: str = ""  # the class's name, as the run recorded it ("7", "cat")

    @property
    def class_index(self) -> int:
        """The most probable class (``digit`` is the same number, kept for older code)."""
        return self.digit

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: path, label, class_index, probabilities (and, where MNIST-style
        preprocessing ran, digit and inverted)."""
        out: dict[str, Any] = {"path": self.path, "label": self.label, "class_index": self.digit}
        if self.inverted is not None:
            out.update(digit=self.digit, inverted=self.inverted)
        out["probabilities"] = [round(float(p), 6) for p in self.probabilities]
        return out


def class_names(recorded: list[str] | None, classes: int) -> list[str]:
    """The run's class names, one per output; label numbers where it has none."""
    names = list(recorded or [])[:classes]
    return names + [str(k) for k in range(len(names), classes)]


class Predictor:
    """A trained network in eval mode, ready to predict on arrays, images or files.

    ``data``: what the run recorded of its data (class names, input scale, image
    preprocessing); None for a bare network, read as an older run's (pixels / 255).
    """

    def __init__(
        self, model: Network, name: str | None = None, data: RunData | None = None
    ) -> None:
        self.model = model.eval()
        self.description = model.description
        self.name = name or self.description.name
        self.input_shape: tuple[int, ...] = self.description.input_shape
        self.classes = self.description.classes
        self.data = data or RunData(None, None, LEGACY_SCALE)
        self.class_names = class_names(self.data.classes, self.classes)
        self.named = self.class_names != [str(k) for k in range(self.classes)]
        self.recipe: Recipe = recipe_for(self.description, self.data)
        self._local = threading.local()
        children = dict(model.named_children())
        convs = [(i, i.layer) for i in self.description.info if isinstance(i.layer, L.Conv)]
        self.feature_layers: dict[str, LayerInfo] = {conv.name: info for info, conv in convs}
        self.activations: dict[str, str] = {conv.name: conv.activation for _, conv in convs}
        for layer_name in self.feature_layers:
            children[layer_name].register_forward_hook(self._hook(layer_name))

    @classmethod
    def from_run(cls, run_dir: str | Path, which: str = "best") -> Predictor:
        """Load ``run_dir/{which}.pt`` and the run's data record (CnnlabError if missing or
        malformed)."""
        model, ckpt = checkpoint.load_model(Path(run_dir), which)
        return cls(model, name=checkpoint.run_name(ckpt), data=read_run_data(Path(run_dir)))

    @property
    def takes_images(self) -> bool:
        """Whether the network reads image files (any 2-D network of 1, 3 or 4 channels)."""
        return self.recipe.mode is not None

    @property
    def digits(self) -> bool:
        """Whether images are made MNIST-style (a run trained on MNIST digits)."""
        return self.recipe.mode == DIGITS

    @property
    def drawing(self) -> bool:
        """Whether a drawn digit fits the network (28x28x1 inputs, read MNIST-style)."""
        return self.digits

    def require_images(self, what: str = "image prediction") -> None:
        """CnnlabError, in one line, unless the network takes images."""
        self.recipe.require(what)

    def label(self, k: int) -> str:
        """Class ``k``'s name."""
        return self.class_names[k]

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
        the channel axis may be left out ((N, 28, 28) or (28, 28)). uint8 arrays are pixels,
        made inputs as image files are (``recipe.scale``: / 255, or raw for a network that
        begins with a Rescaling layer); any other numbers are taken as network inputs.
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
                f"model {self.name!r} takes inputs of shape {fmt_shape(shape)} (channels last), "
                f"as (N, {', '.join(map(str, shape))}); got an array of shape {arr.shape}"
            )
        if arr.dtype == np.uint8:
            return to_inputs(arr, self.recipe.scale)
        with np.errstate(over="ignore", invalid="ignore"):  # refused just below
            out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise CnnlabError("inputs hold NaN or infinite values (or values beyond float32)")
        return out

    def predict_array(self, x: Any) -> np.ndarray:
        """Probabilities (N, classes) for inputs in Keras' layout, (N, *input_shape)."""
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
        """Predict on image arrays: each (H, W) grey or (H, W, 3|4) colour, any size, uint8
        0-255 or floats 0-1, made the run's way (:meth:`load`).

        ``preprocess_images=False`` takes them as ready network inputs (a run trained on
        MNIST digits: (N, 28, 28) in [0, 1], light digit on black).
        """
        self.require_images()
        if preprocess_images:
            seen = [self.recipe.from_array(np.asarray(img), invert) for img in images]
        elif self.digits:
            arrs = [np.asarray(img, np.float32) for img in images]
            bad = [a.shape for a in arrs if a.shape != IMAGE_SHAPE[:2]]
            if bad:
                raise CnnlabError(f"network inputs must be 28x28, got {bad[0]}")
            seen = [Seen(a, a[..., None], None) for a in arrs]
        else:
            batch = self.as_batch(np.asarray(images)) if len(images) else ()
            seen = [Seen(b[..., 0] if b.shape[-1] == 1 else b, b, None) for b in batch]
        return self._predict(seen, [None] * len(seen), feature_maps)

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
        seen = [self.load(Path(p), invert=invert, limits=limits) for p in paths]
        return self._predict(seen, [str(p) for p in paths], feature_maps)

    def predict_image(
        self,
        source: bytes | BinaryIO | str | Path,
        *,
        invert: bool | None = None,
        limits: ImageLimits | None = None,
        feature_maps: bool = False,
    ) -> Prediction:
        """Predict on one encoded image (bytes, file object or path)."""
        seen = self.load(source, invert=invert, limits=limits)
        path = str(source) if isinstance(source, str | Path) else None
        return self._predict([seen], [path], feature_maps)[0]

    def load(
        self,
        source: bytes | BinaryIO | str | Path,
        *,
        invert: bool | None = None,
        limits: ImageLimits | None = None,
    ) -> Seen:
        """One image file as the network sees it (its picture and its input), made the run's
        way: MNIST-style for digit runs (``invert``: None detects dark-on-light), else the
        folder decoder's steps with the run's recorded settings. ``limits``: bytes and
        pixels (None: the CLI's, the folder decoder's own for image runs)."""
        self.require_images()
        return self.recipe.load(source, invert, limits)

    def _predict(
        self, seen: list[Seen], paths: list[str | None], feature_maps: bool
    ) -> list[Prediction]:
        if not seen:
            return []
        x = np.stack([s.x for s in seen])  # (N, H, W, C): inputs already, scaled
        probs, maps = self.predict_inputs(x, feature_maps)
        out = []
        for i, s in enumerate(seen):
            k = int(np.argmax(probs[i]))
            out.append(
                Prediction(
                    digit=k,
                    probabilities=probs[i],
                    input=s.image,
                    inverted=s.inverted,
                    path=paths[i],
                    feature_maps={name: m[i] for name, m in maps.items()},
                    label=self.class_names[k],
                )
            )
        return out
