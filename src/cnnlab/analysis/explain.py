"""Seeing inside a trained network: feature maps of every conv and pooling layer, and kernels.

The maps are computed by the NumPy engine (:mod:`cnnlab.engine.numpy_engine`), channels-last,
for one image, at the feature-map layers of :mod:`cnnlab.analysis.layer_walk` (each conv or
pooling layer's output after the element-wise layers that follow it). Any network with 2-D
maps works; an image is an example of the run's test set or a file put through the run's
preprocessing (:mod:`cnnlab.analysis.run_data`).
Every figure is a PNG grid with a title that says what is shown (layer, map count and
size, image, prediction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

from cnnlab.analysis.layer_walk import MapLayer, feature_map_layers, map_outputs
from cnnlab.engine.numpy_engine import NumpyModel
from cnnlab.errors import CnnlabError
from cnnlab.models import layers as L
from cnnlab.plots import save_figure

DPI = 90  # README-sized PNGs (well under 300 KB)


@dataclass(frozen=True)
class FeatureMap:
    """The maps of one feature-map layer for one image: (h, w, C)."""

    layer: MapLayer
    maps: NDArray[np.floating[Any]]

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def kind(self) -> str:
        return self.layer.kind


def load_image_file(path: Path) -> NDArray[np.float32]:
    """An image file as the (28, 28, 1) input an MNIST network sees (pixels / 255).

    The same MNIST-style preprocessing as ``cnnlab predict`` (:mod:`cnnlab.data.preprocess`):
    grey, light digit on black, fitted into 20x20 and centred by mass in 28x28.
    """
    from cnnlab.data.preprocess import preprocess_file

    return np.asarray(preprocess_file(Path(path)).image, dtype=np.float32)[..., None]


def check_images(model: NumpyModel) -> None:
    """CnnlabError unless the network's maps are 2-D (images)."""
    desc = model.description
    if desc.rank != 2:
        shape = "x".join(map(str, desc.input_shape))
        raise CnnlabError(
            f"explain draws 2-D feature maps; {desc.name} takes {shape} inputs ({desc.rank}-D maps)"
        )


def feature_maps(model: NumpyModel, x: NDArray[np.floating[Any]]) -> list[FeatureMap]:
    """The maps of every feature-map layer for one input (an (H, W, C) image, a (T, C)
    series or a (T, H, W, C) clip)."""
    walk = feature_map_layers(model.description)
    return [FeatureMap(m, h[0]) for m, h in map_outputs(walk, model.activations(x[None]))]


@dataclass(frozen=True)
class Explained:
    """What every explain view starts from: the maps, the prediction, the output folder."""

    maps: list[FeatureMap]
    proba: NDArray[np.floating[Any]]
    pred: int
    label: str  # the predicted class's name (its index where the classes have no names)
    subtitle: str  # "<network> · <source> · predicted <label> (p = ...)"
    out_dir: Path


def start(
    model: NumpyModel,
    x: NDArray[np.floating[Any]],
    what: str,
    out_dir: Path,
    source: str,
    classes: list[str] | None = None,
) -> Explained:
    """Check ``x`` against the network's input (``what``: images, series, clips), compute
    its maps and prediction, and create ``out_dir``; one CnnlabError line otherwise."""
    desc = model.description
    if tuple(x.shape) != desc.input_shape:
        want, got = ("x".join(map(str, s)) for s in (desc.input_shape, x.shape))
        raise CnnlabError(f"{desc.name} takes {want} {what}, got {got}")
    fms = feature_maps(model, x)
    if not fms:
        raise CnnlabError(f"{desc.name} has no convolution or pooling layer: no maps to draw")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    proba = model.predict_proba(x[None])[0]
    pred = int(proba.argmax())
    name = classes[pred] if classes and pred < len(classes) else str(pred)
    subtitle = f"{model.name} · {source} · predicted {name} (p = {proba[pred]:.3f})"
    return Explained(fms, proba, pred, name, subtitle, out_dir)


def _grid(n: int, max_cols: int = 8) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _limits(maps: NDArray[np.floating[Any]]) -> tuple[float, float]:
    """Colour limits: 0 (dark) to the largest value, or symmetric where maps go negative."""
    lo, hi = float(maps.min()), float(maps.max())
    if lo < 0:
        lim = max(-lo, hi) or 1.0
        return -lim, lim
    return 0.0, hi or 1.0


def map_mosaic(maps: NDArray[np.floating[Any]], cols: int = 8, gap: int = 1) -> NDArray[np.float64]:
    """(h, w, C) maps as one 2-D image, tiles row by row in channel order, NaN in the gaps."""
    h, w, c = maps.shape
    rows, cols = _grid(c, cols)
    mosaic = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for k in range(c):
        r, q = divmod(k, cols)
        mosaic[r * (h + gap) : r * (h + gap) + h, q * (w + gap) : q * (w + gap) + w] = maps[..., k]
    return mosaic


def plot_feature_map_grid(fm: FeatureMap, path: Path, subtitle: str) -> None:
    """All maps of one layer on a shared colour scale (dark = no response), numbered."""
    h, w, c = fm.maps.shape
    rows, cols = _grid(c)
    gap = max(1, h // 6)
    mosaic = map_mosaic(fm.maps, cols, gap)
    fig, ax = plt.subplots(
        figsize=(1.25 * cols, 1.25 * rows * mosaic.shape[0] / (rows * (h + gap)) + 0.9)
    )
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("white")
    vmin, vmax = _limits(fm.maps)
    ax.imshow(mosaic, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    for k in range(c):
        r, q = divmod(k, cols)
        ax.text(q * (w + gap), r * (h + gap) - 0.6, f"#{k}", fontsize=6, va="bottom")
    ax.set_axis_off()
    ax.set_title(f"{fm.layer.label}\n{subtitle}", fontsize=10, pad=12)
    save_figure(fig, path, dpi=DPI)


def displayable(image: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """A colour input in [0, 1] for display: as it is when it lies there (pixels / 255), over
    255 where it runs to 255 (a Rescaling network's raw pixels), else stretched from its
    minimum to its maximum (floats of any range)."""
    x = np.asarray(image, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi <= 1:
        return x
    if lo >= 0 and hi <= 255:
        return x / 255
    return (x - lo) / (hi - lo or 1.0)


def _show_input(ax: Any, image: NDArray[np.floating[Any]]) -> None:
    """The input image: in colour for 3 (RGB) or 4 (RGBA) channels, otherwise its first
    channel in grey."""
    if image.shape[-1] in (3, 4):
        ax.imshow(displayable(image), interpolation="nearest")
    else:
        ax.imshow(image[..., 0], cmap="gray", vmin=min(0.0, float(image.min())))
    ax.set_title("input", fontsize=8)


def plot_overview(
    image: NDArray[np.floating[Any]],
    fms: list[FeatureMap],
    path: Path,
    title: str,
    per_layer: int = 8,
) -> None:
    """The input, then the first ``per_layer`` maps of each layer, one row per layer."""
    fig, axes = plt.subplots(
        len(fms), per_layer + 1, figsize=(1.25 * (per_layer + 1), 1.35 * len(fms) + 0.6)
    )
    axes = np.atleast_2d(axes)
    for r, fm in enumerate(fms):
        ax0 = axes[r, 0]
        ax0.set_axis_off()
        if r == 0:
            _show_input(ax0, image)
        vmin, vmax = _limits(fm.maps)
        h, w, c = fm.maps.shape
        for k in range(per_layer):
            ax = axes[r, k + 1]
            ax.set_axis_off()
            if k < c:
                ax.imshow(fm.maps[..., k], cmap="viridis", vmin=vmin, vmax=vmax)
        axes[r, 1].set_title(
            f"{fm.name}: {min(per_layer, c)} of {c} maps, {h}x{w}", fontsize=8, loc="left"
        )
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=DPI)


def kernel_mosaic(
    w: NDArray[np.floating[Any]], gap: int = 1, filter_gap: int = 3
) -> NDArray[np.float64]:
    """(kh, kw, C_in, C_out) kernels as one 2-D image, NaN in the gaps.

    Each filter (output channel) is a block holding its C_in kernels in a near-square
    sub-grid; the blocks form a near-square grid in filter order (row by row).
    """
    kh, kw, c_in, c_out = w.shape
    sub_rows, sub_cols = _grid(c_in, math.ceil(math.sqrt(c_in)))
    block_h = sub_rows * (kh + gap) - gap
    block_w = sub_cols * (kw + gap) - gap
    rows, cols = _grid(c_out, math.ceil(math.sqrt(c_out)))
    mosaic = np.full(
        (rows * (block_h + filter_gap) - filter_gap, cols * (block_w + filter_gap) - filter_gap),
        np.nan,
    )
    for o in range(c_out):
        top = (o // cols) * (block_h + filter_gap)
        left = (o % cols) * (block_w + filter_gap)
        for i in range(c_in):
            r = top + (i // sub_cols) * (kh + gap)
            c = left + (i % sub_cols) * (kw + gap)
            mosaic[r : r + kh, c : c + kw] = w[:, :, i, o]
    return mosaic


def plot_kernels(name: str, w: NDArray[np.floating[Any]], path: Path, model_name: str = "") -> None:
    """Learned kernels (kh, kw, C_in, C_out): one block per filter, in filter order.

    Blue is negative, red positive, white zero, on a scale symmetric about zero.
    """
    kh, kw, c_in, c_out = w.shape
    mosaic = kernel_mosaic(w, filter_gap=1 if c_in == 1 else 3)
    lim = float(np.nanmax(np.abs(mosaic))) or 1.0
    side = 4.2 if c_in == 1 else 7.0
    fig, ax = plt.subplots(figsize=(side + 1.2, side * mosaic.shape[0] / mosaic.shape[1] + 0.8))
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("0.8")  # the gaps
    im = ax.imshow(mosaic, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_axis_off()
    if c_in == 1:
        what = f"{c_out} filters of {kh}x{kw}"
    else:
        sub_rows, sub_cols = _grid(c_in, math.ceil(math.sqrt(c_in)))
        what = (
            f"{c_out} filters, each a {sub_rows}x{sub_cols} block of its {c_in} "
            f"{kh}x{kw} kernels (one per input channel)"
        )
    prefix = f"{model_name} · " if model_name else ""
    ax.set_title(f"{prefix}{name} learned kernels\n{what}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="weight")
    save_figure(fig, path, dpi=DPI)


def explain_image(
    model: NumpyModel,
    image: NDArray[np.floating[Any]],
    out_dir: Path,
    source: str,
    classes: list[str] | None = None,
) -> list[Path]:
    """Write the overview, one grid per feature-map layer and the kernels of every conv
    into ``out_dir``; their paths.

    ``image`` has the network's input shape (H, W, C), scaled as the network takes it;
    ``source`` names it in the titles ("test image #7 (label cat)", a file name);
    ``classes`` name the outputs (the prediction is shown by name).
    """
    check_images(model)
    e = start(model, image, "images", out_dir, source, classes)
    desc, fms, out_dir, subtitle = model.description, e.maps, e.out_dir, e.subtitle
    written = [out_dir / "overview.png"]
    plot_overview(image, fms, written[0], f"Feature maps inside {subtitle}")
    for fm in fms:
        path = out_dir / f"maps_{fm.name}.png"
        plot_feature_map_grid(fm, path, subtitle)
        written.append(path)
    for layer in desc.layers:
        if isinstance(layer, L.Conv) and "kernel" in model.weights.get(layer.name, {}):
            path = out_dir / f"kernels_{layer.name}.png"
            plot_kernels(layer.name, model.weights[layer.name]["kernel"], path, model.name)
            written.append(path)
    return written
