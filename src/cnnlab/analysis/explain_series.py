"""Seeing inside a 1-D network: input channels, feature maps over time, class activation map.

For one time series ``(T, C)`` (channels last) and a network with 1-D maps, computed by the
NumPy engine (:mod:`cnnlab.engine.numpy_engine`) at the feature-map layers of
:mod:`cnnlab.analysis.layer_walk`:

- the input channels, one line each;
- the feature maps of every conv and pooling layer, a channels x time heatmap;
- the class activation map (Zhou et al. 2016; Wang et al. 2017 for time series) of a network
  that ends ``... GlobalAveragePooling1D Dense``:

      CAM_c(t) = sum_k w[k, c] * A_k(t)

  with A the maps that enter the global average pooling (the last conv block's output) and
  w the Dense kernel. Global average pooling is a mean over t and the Dense is affine, so
  ``mean_t CAM_c(t) + b_c`` *is* the logit of class c, exactly: the CAM splits the logit
  over time, and says where in the series the decision comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

from cnnlab.analysis.explain import DPI, FeatureMap, start
from cnnlab.engine.numpy_engine import NumpyModel
from cnnlab.errors import CnnlabError
from cnnlab.models import layers as L
from cnnlab.plots import save_figure

Array = NDArray[np.floating[Any]]


@dataclass(frozen=True)
class Cam:
    """The class activation map of one series for class ``cls``, and what it adds up to."""

    cls: int
    cam: Array  # (T',) CAM_c(t) at the resolution of the last maps
    maps: Array  # (T', K) the maps A that enter the global average pooling
    bias: float  # the Dense bias of class cls (0 without one)
    logits: Array  # (classes,) the network's logits (the engine's, for the check)

    @property
    def logit(self) -> float:
        """mean_t CAM(t) + bias: the logit of ``cls``, from the decomposition."""
        return float(self.cam.mean() + self.bias)


def check_series(model: NumpyModel) -> None:
    """CnnlabError unless the network's maps are 1-D (time series)."""
    desc = model.description
    if desc.rank != 1:
        shape = "x".join(map(str, desc.input_shape))
        raise CnnlabError(f"{desc.name} takes {shape} inputs, not (T, C) time series")


def _gap_dense(model: NumpyModel) -> tuple[str, L.Dense]:
    """The map the output's GlobalAveragePooling1D reads (a layer name, or "input") and the
    final Dense after it (its softmax folded); CnnlabError where the network ends otherwise."""
    desc = model.description
    dense = desc.by_name.get(desc.logits.output)
    if dense is not None and isinstance(dense.layer, L.Dense):
        gap = desc.by_name.get(dense.inputs[0])
        activation = desc.output_info.layer.activation_name
        if (
            dense.layer.activation in ("softmax", "linear")
            and gap is not None
            and isinstance(gap.layer, L.GlobalPool)
            and gap.layer.kind == "average"
            and activation in ("softmax", "linear")
        ):
            return gap.inputs[0], dense.layer
    raise CnnlabError(
        f"{model.name} does not end in GlobalAveragePooling1D then Dense: "
        "its class activation map is not defined"
    )


def has_cam(model: NumpyModel) -> bool:
    """Whether the network ends ``GlobalAveragePooling Dense`` (its CAM is exact)."""
    try:
        _gap_dense(model)
    except CnnlabError:
        return False
    return True


def class_activation_map(model: NumpyModel, series: Array, cls: int | None = None) -> Cam:
    """CAM_c(t) of one (T, C) series for class ``cls`` (default: the predicted class)."""
    before, dense = _gap_dense(model)
    x = np.asarray(series)[None]
    maps = x
    if before != L.INPUT:
        for name, out in model.activations(x):
            if name == before:
                maps = out
                break
    a = np.asarray(maps[0], dtype=np.float64)  # (T', K)
    w = model.weights[dense.name]
    kernel = np.asarray(w["kernel"], dtype=np.float64)  # (K, classes)
    bias = np.asarray(w["bias"], dtype=np.float64) if "bias" in w else np.zeros(kernel.shape[1])
    logits = np.asarray(model.logits(x)[0], dtype=np.float64)
    c = int(logits.argmax()) if cls is None else int(cls)
    if not 0 <= c < kernel.shape[1]:
        raise CnnlabError(f"class must be below {kernel.shape[1]}, got {cls}")
    return Cam(c, a @ kernel[:, c], a, float(bias[c]), logits)


def _cam_on_time(cam: Array, length: int) -> Array:
    """The CAM on the input's time axis (nearest step when the maps are shorter)."""
    idx = np.minimum((np.arange(length) * len(cam)) // max(length, 1), len(cam) - 1)
    return cam[idx]


def _plot_input(ax: Any, series: Array, title: str) -> None:
    t = np.arange(series.shape[0])
    for c in range(series.shape[1]):
        ax.plot(t, series[:, c], lw=1, label=f"ch {c}")
    if series.shape[1] <= 12:
        ax.legend(fontsize=6, ncol=min(series.shape[1], 6), loc="upper right")
    ax.set_xlim(0, max(len(t) - 1, 1))
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("value", fontsize=8)


def _plot_maps(ax: Any, fig: Any, fm: FeatureMap) -> None:
    maps = np.asarray(fm.maps, dtype=np.float64).T  # (C', T')
    lim = float(np.abs(maps).max()) or 1.0
    cmap = "viridis" if maps.min() >= 0 else "RdBu_r"
    vmin = 0.0 if maps.min() >= 0 else -lim
    im = ax.imshow(maps, aspect="auto", cmap=cmap, vmin=vmin, vmax=lim, interpolation="nearest")
    ax.set_title(f"{fm.layer.label} (channels x time)", fontsize=8)
    ax.set_ylabel("channel", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)


def _plot_cam(ax: Any, fig: Any, series: Array, cam: Cam, label: str) -> None:
    t = np.arange(series.shape[0])
    on_t = _cam_on_time(cam.cam, series.shape[0])
    lim = float(np.abs(on_t).max()) or 1.0
    for c in range(series.shape[1]):
        ax.plot(t, series[:, c], color="0.6", lw=0.8, zorder=1)
        sc = ax.scatter(
            t, series[:, c], c=on_t, cmap="coolwarm", vmin=-lim, vmax=lim, s=10, zorder=2
        )
    fig.colorbar(sc, ax=ax, fraction=0.03, pad=0.01, label="CAM(t)")
    ax.set_xlim(0, max(len(t) - 1, 1))
    ax.set_xlabel("time step", fontsize=8)
    ax.set_title(
        f"class activation map of {label}: red = evidence for it, blue = against "
        f"(mean CAM + bias = logit {cam.logit:.3f})",
        fontsize=8,
    )


def explain_series(
    model: NumpyModel,
    series: Array,
    out_dir: Path,
    source: str,
    classes: list[str] | None = None,
) -> list[Path]:
    """Write ``overview.png`` (input channels, maps over time, CAM) and ``cam.png`` into
    ``out_dir``; their paths. ``series`` is (T, C), ``source`` names it in the titles."""
    check_series(model)
    series = np.asarray(series, dtype=np.float32)
    e = start(model, series, "series", out_dir, source, classes)
    fms, out_dir, subtitle, pred, name = e.maps, e.out_dir, e.subtitle, e.pred, e.label
    cam = class_activation_map(model, series, pred) if has_cam(model) else None
    rows = 1 + len(fms) + (cam is not None)
    fig, axes = plt.subplots(rows, 1, figsize=(9, 1.9 * rows + 0.6), squeeze=False)
    _plot_input(axes[0, 0], series, f"input: {series.shape[1]} channel(s) x {len(series)} steps")
    for ax, fm in zip(axes[1 : 1 + len(fms), 0], fms, strict=True):
        _plot_maps(ax, fig, fm)
    if cam is not None:
        _plot_cam(axes[-1, 0], fig, series, cam, name)
    fig.suptitle(subtitle, fontsize=10)
    fig.tight_layout()
    written = [out_dir / "overview.png"]
    save_figure(fig, written[0], dpi=DPI)
    if cam is not None:
        fig, ax = plt.subplots(figsize=(9, 3))
        _plot_cam(ax, fig, series, cam, name)
        fig.suptitle(subtitle, fontsize=9)
        fig.tight_layout()
        written.append(out_dir / "cam.png")
        save_figure(fig, written[-1], dpi=DPI)
    return written
