"""Shift robustness: accuracy under shifted inputs, and equivariance vs invariance per layer.

Two experiments on a trained model:

- :func:`accuracy_grid`: test accuracy when every image is shifted by (dy, dx) pixels,
  -4..4 on both axes, with zero fill (MNIST's background is 0).
- :func:`layer_invariance`: per conv and pooling layer, how its feature maps react to a shift
  of the input, computed with the NumPy engine:

  * *unchanged under a 1-pixel shift*: the fraction of units whose value at the same position
    stays the same when the input moves by one pixel (averaged over right, left, down, up).
    A convolution map moves with the input (equivariance), so few of its values stay; a
    max-pooled value stays whenever the window's maximum merely moves inside the window
    (local invariance).
  * *relative change under a 1-pixel shift*: ``sum |f(shift x) - f(x)| / sum |f(x)|`` over
    the same units: a graded view of the same question (0 = invariant).
  * *equivariant under a shift by the layer's jump J*: the fraction of units where
    ``f(shift_J(x)) == shift_1(f(x))``: shifting the input by the layer's cumulative stride
    shifts its map by exactly one unit. The outermost unit at each end of the shifted axis is
    left out (zero fill enters there).

  "Unchanged" / "equal" means ``|a - b| <= rtol * max|f(x)|`` over that layer and batch with
  ``rtol = 1e-4``: identical windows give identical values up to float rounding, far below it.
  Only units that respond count: non-zero (after ReLU) in either of the two maps compared,
  with ink (a non-zero pixel) in their receptive field in either image. Units that are off
  in both, and the empty background, are equal by construction and would inflate the
  fractions; the fraction over all units is kept too (``unchanged_1px_all``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab import fileio, ops
from cnnlab.engine.numpy_engine import NumpyModel, checkpoint_digest
from cnnlab.errors import CnnlabError
from cnnlab.train import checkpoint

RTOL = 1e-4
FORMAT = "cnnlab-shift-1"  # of shift.json; a cache in another format is recomputed
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
    """Predicted classes of a torch model for x (N, H, W, 1) float32 images."""
    import torch

    model.eval()

    def predict(x: NDArray[np.floating]) -> NDArray[np.integer]:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
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
    """Shift behaviour of one layer's feature maps (see the module docstring)."""

    name: str  # the conv layer (its ReLU output) or the pooling layer
    kind: str  # "conv" or "pool"
    jump: int  # cumulative stride of the layer's output, in input pixels
    unchanged_1px: float  # fraction of responding units unchanged at the same position
    unchanged_1px_all: float  # ... over all units
    relative_change: float  # sum |f(shift x) - f(x)| / sum |f(x)| over responding units
    equivariant: float  # fraction of interior responding units: f(shift_J x) == shift_1 f(x)
    units: int  # responding units counted for unchanged_1px (over the four shifts)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _maps(model: NumpyModel, x: NDArray[np.floating]) -> dict[str, NDArray[np.floating]]:
    """Feature maps after each conv's activation and each pooling layer, keyed by layer name."""
    out: dict[str, NDArray[np.floating]] = {}
    conv_name = ""
    for layer, (name, h) in zip(model.layers, model.activations(x), strict=True):
        if layer.kind == "conv":
            conv_name = name
        elif layer.kind == "relu" and conv_name:
            out[conv_name] = h  # Keras' Conv2D(..., activation="relu") output
            conv_name = ""
        elif layer.kind == "max_pool":
            out[name] = h
        elif layer.kind in ("flatten", "global_avg_pool", "dense"):
            break
    return out


def _ink(model: NumpyModel, x: NDArray[np.floating]) -> dict[str, NDArray[np.bool_]]:
    """Per map, True where the unit's receptive field holds a non-zero input pixel.

    The ink mask travels through the same window geometry as the data, with each window
    reduced by "any" (a max-pool of the mask) instead of a weighted sum.
    """
    mask = (x != 0).astype(np.float32)  # (N, H, W, C)
    mask = mask.max(axis=-1, keepdims=True)
    out: dict[str, NDArray[np.bool_]] = {}
    conv_name = ""
    for layer in model.layers:
        p = layer.params
        if layer.kind == "conv":
            if any(p["padding"]) or any(d != 1 for d in p["dilation"]):
                raise ValueError("ink masks need unpadded, undilated convolutions")
            kernel = tuple(layer.arrays["w"].shape[:2])
            mask = np.asarray(ops.max_pool(mask, kernel, strides=tuple(p["stride"])))
            conv_name = layer.name
        elif layer.kind == "relu" and conv_name:
            out[conv_name] = mask[..., 0] > 0
            conv_name = ""
        elif layer.kind == "max_pool":
            mask = np.asarray(
                ops.max_pool(mask, tuple(p["pool_size"]), strides=tuple(p["strides"]))
            )
            out[layer.name] = mask[..., 0] > 0
    return out  # each (N, h, w)


def _jumps(model: NumpyModel) -> dict[str, int]:
    jumps: dict[str, int] = {}
    jump, conv_name = 1, ""
    for layer in model.layers:
        if layer.kind == "conv":
            jump *= layer.params["stride"][0]
            conv_name = layer.name
        elif layer.kind == "relu" and conv_name:
            jumps[conv_name] = jump
            conv_name = ""
        elif layer.kind == "max_pool":
            jump *= layer.params["strides"][0]
            jumps[layer.name] = jump
    return jumps


def _same(a: NDArray[np.floating], b: NDArray[np.floating], scale: float) -> NDArray[np.bool_]:
    return np.abs(a - b) <= RTOL * max(scale, float(np.finfo(np.float32).tiny))


def _counted(
    a: NDArray[np.floating], b: NDArray[np.floating], ink: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """Units that count: active (non-zero) in either map, with ink in their field."""
    return ((a != 0) | (b != 0)) & ink[..., None]


def layer_invariance(model: NumpyModel, x: NDArray[np.floating]) -> list[LayerShift]:
    """Equivariance and local invariance of each conv and pooling layer on images x."""
    base, ink, jumps = _maps(model, x), _ink(model, x), _jumps(model)
    scales = {name: float(np.abs(a).max()) for name, a in base.items()}
    # Per layer: [same & counted, counted, same, all] units, summed over the four 1-pixel shifts,
    # and [sum |f(shift x) - f(x)|, sum |f(x)|] over the counted units.
    counts = {name: [0, 0, 0, 0] for name in base}
    change = {name: [0.0, 0.0] for name in base}
    for dy, dx in ONE_PIXEL:
        xs = shift_images(x, dy, dx)
        shifted, ink_s = _maps(model, xs), _ink(model, xs)
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
    equi: dict[str, list[int]] = {name: [0, 0] for name in base}
    for j in sorted(set(jumps.values())):
        for dy, dx in ((0, j), (j, 0)):
            xs = shift_images(x, dy, dx)
            shifted, ink_s = _maps(model, xs), _ink(model, xs)
            # Leave out the outermost unit at each end of the shifted axis.
            inner = (slice(None), slice(1, -1)) if dy else (slice(None), slice(None), slice(1, -1))
            for name in (n for n in base if jumps[n] == j):
                expected = shift_images(base[name], dy // j, dx // j)  # one unit along
                same = _same(shifted[name][inner], expected[inner], scales[name])
                seen = _counted(
                    expected[inner], shifted[name][inner], (ink[name] | ink_s[name])[inner]
                )
                equi[name][0] += int((same & seen).sum())
                equi[name][1] += int(seen.sum())
    pools = {ly.name for ly in model.layers if ly.kind == "max_pool"}
    return [
        LayerShift(
            name=name,
            kind="pool" if name in pools else "conv",
            jump=jumps[name],
            unchanged_1px=c[0] / max(c[1], 1),
            unchanged_1px_all=c[2] / max(c[3], 1),
            relative_change=change[name][0] / max(change[name][1], np.finfo(np.float64).tiny),
            equivariant=equi[name][0] / max(equi[name][1], 1),
            units=c[1],
        )
        for name, c in counts.items()
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

    x (N, 28, 28, 1) float32 test images, y their labels. A cache made with another config
    or other weights is recomputed. Also draws ``run_dir/shift.png``.
    """
    from cnnlab.engine.numpy_engine import from_torch

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
    n = len(x) if config.n_images is None else min(config.n_images, len(x))
    grid = accuracy_grid(torch_predictor(model), x[:n], y[:n], config.max_shift)
    layers = layer_invariance(from_torch(model, ckpt["case"]), x[: config.invariance_images])
    result = key | {
        "case": ckpt["case"],
        "grid": grid.as_dict(),
        "layers": [ly.as_dict() for ly in layers],
        "rtol": RTOL,
    }
    fileio.write_json(cache, result)
    plot_shift_grids({ckpt["case"]: grid}, run_dir / "shift.png")
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
        what = "conv + ReLU" if ly["kind"] == "conv" else "max-pool"
        lines.append(
            f"| {ly['name']} ({what}) | {ly['jump']} | {100 * ly['unchanged_1px']:.1f}% "
            f"| {100 * ly['unchanged_1px_all']:.1f}% | {ly['relative_change']:.3f} "
            f"| {100 * ly['equivariant']:.2f}% |"
        )
    return "\n".join(lines) + "\n"
