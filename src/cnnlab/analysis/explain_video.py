"""Seeing inside a 3-D network: a clip's feature maps, frame by frame.

For one clip ``(T, H, W, C)`` (channels last) and a network with 3-D maps, computed by the
NumPy engine at the feature-map layers of :mod:`cnnlab.analysis.layer_walk`:

- ``overview.png``: the input frames in the first row, then for each feature-map layer the
  map of its most active channel, one frame per column (a Conv3D's maps keep a time axis);
- ``maps_<layer>.png``: up to :data:`MAX_CHANNELS` channels (rows) x every frame (columns).

A Conv3D whose kernel spans several frames responds to motion (the order of frames); one
with kernels ``1 x k x k`` (the per-frame baseline) sees each frame alone.
"""

from __future__ import annotations

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
from cnnlab.plots import save_figure

Array = NDArray[np.floating[Any]]
MAX_CHANNELS = 8  # rows per layer figure
MAX_FRAMES = 16  # columns


def check_clips(model: NumpyModel) -> None:
    """CnnlabError unless the network's maps are 3-D (clips: time x height x width)."""
    desc = model.description
    if desc.rank != 3:
        shape = "x".join(map(str, desc.input_shape))
        raise CnnlabError(f"{desc.name} takes {shape} inputs, not (T, H, W, C) clips")


def _frames_row(axes: Any, frames: Array, vmin: float, vmax: float, cmap: str) -> Any:
    im = None
    for j, ax in enumerate(axes):
        ax.set_axis_off()
        if j < len(frames):
            im = ax.imshow(frames[j], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    return im


def _limits(maps: Array) -> tuple[float, float, str]:
    lo, hi = float(maps.min()), float(maps.max())
    if lo >= 0:
        return 0.0, hi or 1.0, "viridis"
    lim = max(abs(lo), abs(hi)) or 1.0
    return -lim, lim, "RdBu_r"


def plot_overview(clip: Array, fms: list[FeatureMap], path: Path, title: str) -> None:
    """Input frames, then each layer's most active channel, frame by frame."""
    t = min(max([clip.shape[0], *(fm.maps.shape[0] for fm in fms)]), MAX_FRAMES)
    rows = 1 + len(fms)
    fig, axes = plt.subplots(rows, t, figsize=(1.2 * t + 1, 1.35 * rows + 0.6), squeeze=False)
    _frames_row(axes[0], clip[:t, ..., 0], 0.0, float(clip.max()) or 1.0, "gray")
    axes[0, 0].set_title("input", fontsize=7, loc="left")
    for j in range(min(t, clip.shape[0])):
        ax = axes[0, j]
        ax.text(0.5, -0.08, f"t={j}", fontsize=6, ha="center", transform=ax.transAxes)
    for i, fm in enumerate(fms, start=1):
        maps = np.asarray(fm.maps, dtype=np.float64)
        c = int(np.abs(maps).reshape(-1, maps.shape[-1]).mean(axis=0).argmax())
        vmin, vmax, cmap = _limits(maps[..., c])
        _frames_row(axes[i], maps[:t, :, :, c], vmin, vmax, cmap)
        axes[i, 0].set_title(f"{fm.name} channel {c} of {maps.shape[-1]}", fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=DPI)


def plot_layer(fm: FeatureMap, path: Path, title: str) -> None:
    """Up to MAX_CHANNELS channels (rows) x frames (columns) of one layer."""
    maps = np.asarray(fm.maps, dtype=np.float64)
    t, c = min(maps.shape[0], MAX_FRAMES), min(maps.shape[-1], MAX_CHANNELS)
    fig, axes = plt.subplots(c, t, figsize=(1.1 * t + 1.2, 1.1 * c + 0.9), squeeze=False)
    vmin, vmax, cmap = _limits(maps)
    im = None
    for k in range(c):
        im = _frames_row(axes[k], maps[:t, :, :, k], vmin, vmax, cmap)
        axes[k, 0].set_title(f"ch {k}", fontsize=6, loc="left")
    if im is not None:
        fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)
    what = f"{fm.layer.label} (first {c} channels, frames left to right)"
    fig.suptitle(f"{what}\n{title}", fontsize=8)
    save_figure(fig, path, dpi=DPI)


def explain_clip(
    model: NumpyModel,
    clip: Array,
    out_dir: Path,
    source: str,
    classes: list[str] | None = None,
) -> list[Path]:
    """Write ``overview.png`` and one ``maps_<layer>.png`` per feature-map layer into
    ``out_dir``; their paths. ``clip`` is (T, H, W, C) in the network's scale."""
    check_clips(model)
    clip = np.asarray(clip, dtype=np.float32)
    e = start(model, clip, "clips", out_dir, source, classes)
    fms, out_dir, subtitle = e.maps, e.out_dir, e.subtitle
    written = [out_dir / "overview.png"]
    plot_overview(clip, fms, written[0], f"Feature maps frame by frame: {subtitle}")
    for fm in fms:
        path = out_dir / f"maps_{fm.name}.png"
        plot_layer(fm, path, subtitle)
        written.append(path)
    return written
