"""Shift robustness: accuracy under shifted inputs, and equivariance vs invariance per layer.

Two experiments on a trained model:

- :func:`accuracy_grid`: test accuracy when every image is shifted by (dy, dx) pixels,
  -4..4 on both axes, with zero fill (MNIST's background is 0).
- :func:`layer_invariance`: per feature-map layer (:mod:`cnnlab.analysis.layer_walk`: each
  convolution and pooling layer, with the element-wise layers that follow it), how its maps
  react to a shift of the input, computed with the NumPy engine, for any 2-D network:

  * *unchanged under a 1-pixel shift*: the fraction of units whose value at the same position
    stays the same when the input moves by one pixel (averaged over right, left, down, up).
    A convolution map moves with the input (equivariance), so few of its values stay; a
    max-pooled value stays whenever the window's maximum merely moves inside the window
    (local invariance).
  * *relative change under a 1-pixel shift*: ``sum |f(shift x) - f(x)| / sum |f(x)|`` over
    the same units: a graded view of the same question (0 = invariant).
  * *equivariant under a shift by the layer's jump J*: the fraction of units where
    ``f(shift_J(x)) == shift_1(f(x))``: shifting the input by the layer's cumulative stride
    (per axis) shifts its map by exactly one unit. Only *clean* units count: those whose
    value reads no padding in any layer (``same`` padding, ``ZeroPadding``) in either map,
    which is exactly where the identity must hold; the zero fill then never enters either.

  "Unchanged" / "equal" means ``|a - b| <= rtol * max|f(x)|`` over that layer and batch with
  ``rtol = 1e-4``: identical windows give identical values up to float rounding, far below it.
  Only units that respond count: non-zero (after ReLU) in either of the two maps compared,
  with ink (a non-zero pixel) in their receptive field in either image. Units that are off
  in both, and the empty background, are equal by construction and would inflate the
  fractions; the fraction over all units is kept too (``unchanged_1px_all``). Ink and
  padding masks travel through each layer's exact window geometry (strides, dilation,
  padding), as a convolution of the mask with a kernel of ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab import fileio, ops
from cnnlab.analysis.layer_walk import MapLayer, feature_map_layers, map_outputs
from cnnlab.analysis.numpy_check import checkpoint_digest, takes_mnist
from cnnlab.engine.numpy_engine import NumpyModel, from_torch
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription
from cnnlab.models import layers as L
from cnnlab.models.fields import MERGE, POINTWISE, Geometry, Shift, Window
from cnnlab.train import checkpoint

RTOL = 1e-4
FORMAT = "cnnlab-shift-2"  # of shift.json; a cache in another format is recomputed
ONE_PIXEL = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx): right, left, down, up


def shift_images(x: NDArray[Any], dy: int, dx: int) -> NDArray[Any]:
    """Move the content of x (N, H, W, ...) down by ``dy`` and right by ``dx``; zero fill."""
    out = np.zeros_like(x)
    h, w = x.shape[1], x.shape[2]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y = slice(max(-dy, 0), h - max(dy, 0))
    dst_y = slice(max(dy, 0), h - max(-dy, 0))
    src_x = slice(max(-dx, 0), w - max(dx, 0))
    dst_x = slice(max(dx, 0), w - max(-dx, 0))
    out[:, dst_y, dst_x] = x[:, src_y, src_x]
    return out


Predictor = Callable[[NDArray[np.floating]], NDArray[np.integer]]


def torch_predictor(model: Any, batch_size: int = 1000) -> Predictor:
    """Predicted classes of a torch model for x (N, *spatial, C) float32 inputs."""
    import torch

    model.eval()

    def predict(x: NDArray[np.floating]) -> NDArray[np.integer]:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).movedim(-1, 1)
        with torch.no_grad():
            preds = [
                model(xt[i : i + batch_size].contiguous()).argmax(1)
                for i in range(0, len(xt), batch_size)
            ]
        return torch.cat(preds).numpy()

    return predict


@dataclass(frozen=True)
class ShiftGrid:
    """Accuracy (rows: dy, columns: dx) for shifts ``shifts`` on both axes."""

    shifts: list[int]
    accuracy: NDArray[np.float64]  # (len(shifts), len(shifts))
    n_images: int

    def at(self, dy: int, dx: int) -> float:
        return float(self.accuracy[self.shifts.index(dy), self.shifts.index(dx)])

    def as_dict(self) -> dict[str, Any]:
        return {
            "shifts": self.shifts,
            "accuracy": self.accuracy.tolist(),
            "n_images": self.n_images,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShiftGrid:
        return cls(list(d["shifts"]), np.asarray(d["accuracy"], dtype=np.float64), d["n_images"])


def accuracy_grid(
    predict: Predictor, x: NDArray[np.floating], y: NDArray[np.integer], max_shift: int = 4
) -> ShiftGrid:
    """Accuracy of ``predict`` on (x, y) shifted by every (dy, dx) in [-max_shift, max_shift]^2."""
    shifts = list(range(-max_shift, max_shift + 1))
    acc = np.zeros((len(shifts), len(shifts)))
    for i, dy in enumerate(shifts):
        for j, dx in enumerate(shifts):
            acc[i, j] = float(np.mean(predict(shift_images(x, dy, dx)) == y))
    return ShiftGrid(shifts, acc, len(x))


@dataclass(frozen=True)
class LayerShift:
    """Shift behaviour of one feature-map layer's maps (see the module docstring)."""

    name: str  # the conv or pooling layer (its maps after the layers that follow it)
    kind: str  # "conv" or "pool"
    what: str  # the layer in words (layer_walk.describe): "Conv2D 3x3, relu"
    jump: list[int]  # cumulative stride of the maps (dy, dx), in input pixels
    unchanged_1px: float  # fraction of responding units unchanged at the same position
    unchanged_1px_all: float  # ... over all units
    relative_change: float  # sum |f(shift x) - f(x)| / sum |f(x)| over responding units
    equivariant: float | None  # fraction of clean responding units (None: there are none)
    # where f(shift_J x) == shift_1 f(x)
    units: int  # responding units counted for unchanged_1px (over the four shifts)
    equivariant_units: int  # clean responding units counted for equivariant (both axes)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


Maps = dict[str, NDArray[Any]]  # feature-map layer name -> (N, h, w, C) or a (N, h, w) mask


def _maps(model: NumpyModel, walk: list[MapLayer], x: NDArray[Any]) -> Maps:
    """The maps of every feature-map layer for images x (N, H, W, C)."""
    return {m.name: out for m, out in map_outputs(walk, model.activations(x))}


def _carry(geometry: Geometry, hs: list[NDArray[Any]], full: bool) -> NDArray[Any] | None:
    """A 0/1 mask (N, *spatial, 1) through one layer's geometry; None once it is no map."""
    h = hs[0]
    if geometry is POINTWISE:
        return h
    if geometry is MERGE:
        return np.minimum.reduce(hs) if full else np.maximum.reduce(hs)
    if isinstance(geometry, Window):
        ones = np.ones((*geometry.kernel, 1, 1))
        counts = ops.conv(
            h, ones, stride=geometry.strides, padding=geometry.padding, dilation=geometry.dilation
        )
        return (counts > math.prod(geometry.kernel) - 0.5 if full else counts > 0.5).astype(
            np.float64
        )
    if isinstance(geometry, Shift):
        pads = [(max(a, 0), max(b, 0)) for a, b in geometry.amounts]
        h = np.pad(h, ((0, 0), *pads, (0, 0)))
        crop = tuple(
            slice(max(-a, 0), n - max(-b, 0))
            for (a, b), n in zip(geometry.amounts, h.shape[1:-1], strict=True)
        )
        return h[(slice(None), *crop)]
    return None  # collapsed: no longer a map


def _masks(desc: ModelDescription, walk: list[MapLayer], mask: NDArray[Any], full: bool) -> Maps:
    """A 0/1 input mask (N, H, W, 1) carried through the window geometry of every layer,
    along every path of the graph.

    Each window counts the mask's ones among its taps (a convolution with a kernel of ones:
    strides, dilation, padding and all). ``full=False``: a unit is on if any tap is (ink in
    its field); ``full=True``: if every tap is, so no padding enters its value anywhere. A
    merge's unit is on if any input's is (``full``: if every input's is).
    """
    wanted, out = {m.output: m.name for m in walk}, {}
    h: dict[str, NDArray[Any] | None] = {L.INPUT: mask.astype(np.float64)}
    for info in desc.info:
        inputs = [h[n] for n in info.inputs]
        if any(x is None for x in inputs):
            h[info.layer.name] = None
        else:
            carried = [x for x in inputs if x is not None]
            h[info.layer.name] = _carry(info.layer.geometry(info), carried, full)
        if info.layer.name in wanted:
            got = h[info.layer.name]
            assert got is not None  # a feature-map layer's output is a map
            out[wanted.pop(info.layer.name)] = got[..., 0] > 0
        if not wanted:
            break
    return out


def _ink(desc: ModelDescription, walk: list[MapLayer], x: NDArray[Any]) -> Maps:
    """Per map, True where the unit's receptive field holds a non-zero input pixel."""
    return _masks(desc, walk, (x != 0).any(axis=-1, keepdims=True), full=False)


def _same(a: NDArray[Any], b: NDArray[Any], scale: float) -> NDArray[np.bool_]:
    return np.abs(a - b) <= RTOL * max(scale, float(np.finfo(np.float32).tiny))


def _counted(a: NDArray[Any], b: NDArray[Any], ink: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Units that count: active (non-zero) in either map, with ink in their field."""
    return ((a != 0) | (b != 0)) & ink[..., None]


def check_images(model: NumpyModel) -> list[MapLayer]:
    """The feature-map layers of a network whose maps are 2-D; CnnlabError otherwise."""
    desc = model.description
    if desc.rank != 2:
        shape = "x".join(map(str, desc.input_shape))
        raise CnnlabError(
            f"shift experiments need a network of images (2-D maps); {desc.name} takes {shape}"
        )
    return feature_map_layers(desc)


def layer_invariance(model: NumpyModel, x: NDArray[Any]) -> list[LayerShift]:
    """Equivariance and local invariance of each feature-map layer on images x (N, H, W, C)."""
    desc, walk = model.description, check_images(model)
    base, ink = _maps(model, walk, x), _ink(desc, walk, x)
    clean = _masks(desc, walk, np.ones((1, *x.shape[1:-1], 1)), full=True)  # (1, h, w)
    scales = {name: float(np.abs(a).max()) for name, a in base.items()}
    # Per layer: [same & counted, counted, same, all] units, summed over the four 1-pixel shifts,
    # and [sum |f(shift x) - f(x)|, sum |f(x)|] over the counted units.
    counts = {name: [0, 0, 0, 0] for name in base}
    change = {name: [0.0, 0.0] for name in base}
    for dy, dx in ONE_PIXEL:
        xs = shift_images(x, dy, dx)
        shifted, ink_s = _maps(model, walk, xs), _ink(desc, walk, xs)
        for name, a in base.items():
            same = _same(shifted[name], a, scales[name])  # (N, h, w, C): one per unit
            seen = _counted(a, shifted[name], ink[name] | ink_s[name])
            c = counts[name]
            c[0] += int((same & seen).sum())
            c[1] += int(seen.sum())
            c[2] += int(same.sum())
            c[3] += same.size
            change[name][0] += float(np.abs(shifted[name] - a)[seen].sum(dtype=np.float64))
            change[name][1] += float(np.abs(a)[seen].sum(dtype=np.float64))
    equi = {name: [0, 0] for name in base}
    for axis in (0, 1):
        for j in sorted({m.jump[axis] for m in walk}):
            xs = shift_images(x, j, 0) if axis == 0 else shift_images(x, 0, j)
            shifted, ink_s = _maps(model, walk, xs), _ink(desc, walk, xs)
            # Unit u of f(shift_J x) against unit u - 1 of f(x), where neither reads padding.
            now = (slice(None),) * (axis + 1) + (slice(1, None),)  # (N, h, w[, C]) axis + 1
            before = (slice(None),) * (axis + 1) + (slice(None, -1),)
            for m in (m for m in walk if m.jump[axis] == j):
                a, b = shifted[m.name][now], base[m.name][before]
                both = clean[m.name][now] & clean[m.name][before]  # (1, h', w')
                seen = _counted(a, b, (ink_s[m.name][now] | ink[m.name][before]) & both)
                equi[m.name][0] += int((_same(a, b, scales[m.name]) & seen).sum())
                equi[m.name][1] += int(seen.sum())
    return [
        LayerShift(
            name=m.name,
            kind=m.kind,
            what=m.what,
            jump=list(m.jump),
            unchanged_1px=counts[m.name][0] / max(counts[m.name][1], 1),
            unchanged_1px_all=counts[m.name][2] / max(counts[m.name][3], 1),
            relative_change=change[m.name][0] / max(change[m.name][1], np.finfo(np.float64).tiny),
            equivariant=equi[m.name][0] / equi[m.name][1] if equi[m.name][1] else None,
            units=counts[m.name][1],
            equivariant_units=equi[m.name][1],
        )
        for m in walk
    ]


@dataclass(frozen=True)
class ShiftConfig:
    """What the shift experiment of a run measures; part of its cache key."""

    max_shift: int = 4
    n_images: int | None = None  # test images for the accuracy grid (None: all 10,000)
    invariance_images: int = 500  # test images for the per-layer fractions

    def __post_init__(self) -> None:
        if not 0 <= self.max_shift < 28:
            raise CnnlabError(f"max_shift must be in 0..27, got {self.max_shift}")
        for name in ("n_images", "invariance_images"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise CnnlabError(f"{name} must be at least 1, got {v}")


def run_shift(
    run_dir: Path, x: NDArray[np.floating], y: NDArray[np.integer], config: ShiftConfig
) -> dict[str, Any]:
    """Both experiments on a run's best model; cached in ``run_dir/shift.json``.

    x (N, 28, 28, 1) float32 test images, y their labels: the network must take 28x28x1
    inputs. A cache made with another config or other weights is recomputed. Also draws
    ``run_dir/shift.png``.
    """
    run_dir = Path(run_dir)
    cache = run_dir / "shift.json"
    key = {
        "format": FORMAT,
        "config": asdict(config),
        "checkpoint_sha256": checkpoint_digest(run_dir),
    }
    if cache.is_file():
        found = fileio.read_json(cache)
        if isinstance(found, dict) and all(found.get(k) == v for k, v in key.items()):
            return found
    model, ckpt = checkpoint.load_model(run_dir, "best")
    name = checkpoint.run_name(ckpt)
    if not takes_mnist(model.description):
        shape = "x".join(map(str, model.description.input_shape))
        raise CnnlabError(f"shift needs a network with 28x28x1 input; {name} takes {shape}")
    n = len(x) if config.n_images is None else min(config.n_images, len(x))
    grid = accuracy_grid(torch_predictor(model), x[:n], y[:n], config.max_shift)
    layers = layer_invariance(from_torch(model), x[: config.invariance_images])
    result = key | {
        "model": name,
        "case": name,  # the key's name before model descriptions, for older readers
        "grid": grid.as_dict(),
        "layers": [ly.as_dict() for ly in layers],
        "rtol": RTOL,
    }
    fileio.write_json(cache, result)
    plot_shift_grids({name: grid}, run_dir / "shift.png")
    return result


def plot_shift_grids(grids: dict[str, ShiftGrid], path: Path) -> None:
    """One heat map of accuracy per run, shifts on both axes, values in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnlab.plots import save_figure

    k = len(grids)
    fig, axes = plt.subplots(1, k, figsize=(5.2 * k, 4.9), squeeze=False)
    lo = min(float(g.accuracy.min()) for g in grids.values())
    for ax, (label, g) in zip(axes[0], grids.items(), strict=True):
        im = ax.imshow(100 * g.accuracy, cmap="viridis", vmin=100 * lo, vmax=100)
        for i in range(len(g.shifts)):
            for j in range(len(g.shifts)):
                v = 100 * g.accuracy[i, j]
                colour = "black" if v > 100 * lo + 0.6 * (100 - 100 * lo) else "white"
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color=colour)
        ticks = range(len(g.shifts))
        ax.set_xticks(ticks, [str(s) for s in g.shifts])
        ax.set_yticks(ticks, [str(s) for s in g.shifts])
        ax.set_xlabel("horizontal shift dx (pixels, + = right)")
        ax.set_ylabel("vertical shift dy (pixels, + = down)")
        ax.set_title(f"{label}: {100 * g.at(0, 0):.2f}% unshifted", fontsize=10)
    n = next(iter(grids.values())).n_images
    fig.suptitle(f"Test accuracy (%) under input shifts, zero fill ({n:,} test images)")
    fig.colorbar(im, ax=axes[0].tolist(), label="accuracy (%)", fraction=0.025)
    save_figure(fig, path, dpi=90)


def markdown_grid(grid: ShiftGrid) -> str:
    """The accuracy grid as a Markdown table: rows dy, columns dx, percentages."""
    head = "| dy \\ dx | " + " | ".join(f"{s:+d}" for s in grid.shifts) + " |"
    lines = [head, "|" + "---|" * (len(grid.shifts) + 1)]
    for i, dy in enumerate(grid.shifts):
        cells = " | ".join(f"{100 * v:.1f}" for v in grid.accuracy[i])
        lines.append(f"| {dy:+d} | {cells} |")
    return "\n".join(lines) + "\n"


def markdown_layers(layers: list[dict[str, Any]]) -> str:
    """Per-layer fractions (dicts as stored in shift.json) as a Markdown table."""
    lines = [
        "| layer | jump J | unchanged under a 1-px shift | (all units) "
        "| relative change under a 1-px shift | equivariant under a J-px shift |",
        "|---|---|---|---|---|---|",
    ]
    for ly in layers:
        jump = ly["jump"]
        jump = "x".join(map(str, jump)) if len(set(jump)) > 1 else str(jump[0])
        e = ly["equivariant"]
        equi = "- (every unit reads padding)" if e is None else f"{100 * e:.2f}%"
        lines.append(
            f"| {ly['name']} ({ly['what']}) | {jump} | {100 * ly['unchanged_1px']:.1f}% "
            f"| {100 * ly['unchanged_1px_all']:.1f}% | {ly['relative_change']:.3f} "
            f"| {equi} |"
        )
    return "\n".join(lines) + "\n"
