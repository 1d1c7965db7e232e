"""Shift robustness: accuracy under shifted inputs, and equivariance vs invariance per layer.

Two experiments on a trained network of images (any size and channels) and its test set:

- :func:`accuracy_grid`: test accuracy when every image is shifted by (dy, dx) pixels,
  -4..4 on both axes, with zero fill in the network's input space, after scaling: MNIST's
  background, black for a photo (0 divided by 255, or 0 raw for a Rescaling network).
- :func:`~cnnlab.analysis.invariance.layer_invariance`: per feature-map layer, how its maps
  react to a shift of the input (equivariance and local invariance; see that module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cnnlab import fileio
from cnnlab.analysis.invariance import (
    RTOL,
    LayerShift,
    check_images,
    layer_invariance,
    layer_maps,
    shift_images,
)
from cnnlab.analysis.layer_walk import feature_map_layers
from cnnlab.analysis.numpy_check import checkpoint_digest
from cnnlab.analysis.run_data import RunTestSet, bar_off
from cnnlab.engine.numpy_engine import from_torch
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelDescription
from cnnlab.train import checkpoint

__all__ = [  # the per-layer experiment's names too, as before it had a module of its own
    "RTOL",
    "LayerShift",
    "ShiftConfig",
    "ShiftGrid",
    "accuracy_grid",
    "check_images",
    "layer_invariance",
    "markdown_grid",
    "markdown_layers",
    "plot_shift_grids",
    "run_shift",
    "shift_images",
    "split_grid",
    "torch_predictor",
]

FORMAT = "cnnlab-shift-3"  # of shift.json; a cache in another format is recomputed
MAX_SHIFT = 64  # a (2 * 64 + 1)^2 grid is 16,641 passes over the test set already
GRID_BATCH = 1000  # test images read, scaled and shifted at a time


Predictor = Callable[[NDArray[np.floating]], NDArray[np.integer]]
Tick = Callable[[int, int], None]  # (done, total) after each chunk of a long loop
Log = Callable[[str], None]


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
    return split_grid(predict, RunTestSet.of_inputs(x, y), max_shift)


def split_grid(
    predict: Predictor,
    test: RunTestSet,
    max_shift: int = 4,
    n: int | None = None,
    progress: bool | None = False,
    tick: Tick | None = None,
) -> ShiftGrid:
    """:func:`accuracy_grid` on the first ``n`` examples of a run's test set, read and scaled
    one batch at a time (every shift of a batch before the next is read), so memory holds a
    batch and its shifted copy whatever the test set's size. The zero fill is in the
    network's input space: after scaling. ``tick(done, total)``: test images done, after
    each batch's every shift."""
    from tqdm.auto import tqdm

    n = len(test) if n is None else min(n, len(test))
    shifts = list(range(-max_shift, max_shift + 1))
    correct = np.zeros((len(shifts), len(shifts)), dtype=np.int64)
    total, done = n * len(shifts) ** 2, 0
    with tqdm(total=total, unit="img", desc="shift grid", disable=bar_off(progress)) as bar:
        for x, y in test.batches(n, GRID_BATCH):
            for i, dy in enumerate(shifts):
                for j, dx in enumerate(shifts):
                    correct[i, j] += int(np.sum(predict(shift_images(x, dy, dx)) == y))
                    bar.update(len(x))
            done += len(x)
            if tick is not None:
                tick(done, n)
    return ShiftGrid(shifts, correct / max(n, 1), n)


@dataclass(frozen=True)
class ShiftConfig:
    """What the shift experiment of a run measures; part of its cache key."""

    max_shift: int = 4
    n_images: int | None = None  # test images for the accuracy grid (None: the whole set)
    invariance_images: int = 500  # test images for the per-layer fractions

    def __post_init__(self) -> None:
        if not 0 <= self.max_shift <= MAX_SHIFT:
            raise CnnlabError(f"max_shift must be in 0..{MAX_SHIFT}, got {self.max_shift}")
        for name in ("n_images", "invariance_images"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise CnnlabError(f"{name} must be at least 1, got {v}")


def require_images(desc: ModelDescription, what: str = "shift") -> None:
    """One CnnlabError line, naming the network's input, unless its maps are 2-D images."""
    if desc.rank != 2:
        shape = "x".join(map(str, desc.input_shape))
        kind = {1: "series", 3: "clips"}.get(desc.rank, "inputs")
        raise CnnlabError(
            f"{what} needs a network of images (2-D maps); {desc.name} takes {shape} {kind}"
        )


def about(seconds: float) -> str:
    """A duration for a progress line: "about 40 s", "about 4 min"."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    return f"about {round(seconds / 60)} min"


def estimate_seconds(model: Any, x: NDArray[np.floating], cells: int, n: int, n_inv: int) -> float:
    """The experiment's duration from timings on the sample ``x`` (a grid batch): the
    grid's forward passes (``cells`` shifts of ``n`` images) and the per-layer passes of
    the NumPy engine on ``n_inv`` images."""
    import time

    predict, engine = torch_predictor(model), from_torch(model)
    predict(x[:4])  # warm-up: thread pools, allocator
    times = []
    for _ in range(2):  # the faster of two: a busy machine's stalls are not the rule
        start = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - start)
    grid = min(times) / len(x) * n * cells
    walk = feature_map_layers(model.description)
    sample = x[: min(len(x), n_inv, 100)]
    start = time.perf_counter()
    layer_maps(engine, walk, sample)
    passes = 5 + 2 * len({j for m in walk for j in m.jump})  # base, 4 shifts, J per axis
    per_image = (time.perf_counter() - start) / len(sample)
    return grid + passes * per_image * min(n_inv, n)


def _mnist_cache(found: dict[str, Any], key: dict[str, Any], test: RunTestSet, n: int) -> bool:
    """A cache from before the data was keyed (``cnnlab-shift-2``) holds MNIST's test set,
    the only data shift ran on then: valid for the same config and weights on MNIST."""
    same = all(found.get(k) == key[k] for k in ("config", "checkpoint_sha256"))
    grid = found.get("grid")
    counted = isinstance(grid, dict) and grid.get("n_images") == n
    return found.get("format") == "cnnlab-shift-2" and test.spec == "mnist" and same and counted


LAYER_KEYS = ("name", "what", "jump", "equivariant", "unchanged_1px", "unchanged_1px_all")


def _whole(found: Any) -> bool:
    """Whether a stored result has every part a report reads (a hand-edited or half-copied
    file is computed again, not shown as a traceback)."""
    if not isinstance(found, dict) or not isinstance(found.get("layers"), list):
        return False
    try:
        grid = ShiftGrid.from_dict(found["grid"])
        float(found["rtol"])
    except (KeyError, TypeError, ValueError):
        return False
    k = len(grid.shifts)
    layers_ok = all(isinstance(ly, dict) and set(LAYER_KEYS) <= set(ly) for ly in found["layers"])
    return grid.accuracy.shape == (k, k) and isinstance(grid.n_images, int) and layers_ok


def _stale(found: dict[str, Any], key: dict[str, Any], n: int, n_inv: int) -> str | None:
    """Why a stored result does not answer this request; None where it does."""
    stored = found.get("config")
    config: dict[str, Any] = stored if isinstance(stored, dict) else {}
    if found.get("format") != FORMAT:
        return "an older version of cnnlab"
    if found.get("checkpoint_sha256") != key["checkpoint_sha256"]:
        return "another best.pt"
    # The counts used, not the flags: --shift-images 10000 on 10,000 images is the default.
    used = (config.get("max_shift"), found["grid"]["n_images"], found.get("invariance_images"))
    if used != (key["config"]["max_shift"], n, n_inv):
        return "other settings (--max-shift, --shift-images, --invariance-images)"
    if found.get("data") != key["data"]:
        return "other test data"
    return None


def stored_shift(
    run_dir: Path, key: dict[str, Any], test: RunTestSet, n: int, n_inv: int, log: Log | None
) -> dict[str, Any] | None:
    """``run_dir/shift.json`` where it was computed from this best.pt, data and settings;
    else None, and ``log`` gets one line saying why (a damaged file: a warning)."""
    cache = Path(run_dir) / "shift.json"
    if not cache.is_file():
        return None
    say = log or (lambda _line: None)
    try:
        found = fileio.read_json(cache)
    except CnnlabError as exc:
        say(f"warning: {exc}; computing the shift grid again")
        return None
    if not _whole(found):
        say(f"warning: {cache} lacks parts of a shift result; computing the shift grid again")
        return None
    if _mnist_cache(found, key, test, n):
        return dict(found)
    why = _stale(found, key, n, n_inv)
    if why is not None:
        say(f"shift grid of {run_dir}: {cache.name} was made with {why}; computing it again")
        return None
    return dict(found)


def run_shift(
    run_dir: Path,
    test: RunTestSet,
    config: ShiftConfig,
    *,
    log: Log | None = None,
    progress: bool | None = False,
    tick: Tick | None = None,
    recompute: bool = False,
) -> dict[str, Any]:
    """Both experiments on a run's best model and its test set; stored in
    ``run_dir/shift.json`` with what they were computed from (the settings, best.pt's
    SHA-256, the test inputs' digest) and reused while those agree, unless ``recompute``.
    Also draws ``run_dir/shift.png``. The network must take images (2-D maps). ``log`` gets
    a line saying what is computed and about how long it takes, or that it is reused;
    ``progress``: bars (None: on a terminal); ``tick(done, total)``: test images done."""
    run_dir = Path(run_dir)
    model, ckpt = checkpoint.load_model(run_dir, "best")
    name, desc = checkpoint.run_name(ckpt), model.description
    require_images(desc)
    side = min(desc.input_shape[:2])
    if config.max_shift >= side:
        raise CnnlabError(
            f"max_shift must be below the images' side ({side}), got {config.max_shift}"
        )
    n = len(test) if config.n_images is None else min(config.n_images, len(test))
    n_inv = min(config.invariance_images, len(test))
    cache, png = run_dir / "shift.json", run_dir / "shift.png"
    key = {
        "format": FORMAT,
        "config": asdict(config),
        "checkpoint_sha256": checkpoint_digest(run_dir),
        "data": {"spec": test.spec, "sha256": test.digest(max(n, n_inv))},
    }
    found = None if recompute else stored_shift(run_dir, key, test, n, n_inv, log)
    if found is not None:
        if log:
            log(f"shift grid of {run_dir}: reused from {cache.name} (--recompute to redo it)")
        if not png.is_file():  # the figure alone was deleted: drawn from the stored grid
            plot_shift_grids({name: ShiftGrid.from_dict(found["grid"])}, png)
        return found
    cells = (2 * config.max_shift + 1) ** 2
    if log:
        seconds = estimate_seconds(model, test.inputs(0, min(n, GRID_BATCH)), cells, n, n_inv)
        log(f"shift robustness of {run_dir}: {n:,} test {test.plural}, {about(seconds)}")
    grid = split_grid(torch_predictor(model), test, config.max_shift, n, progress, tick)
    layers = layer_invariance(from_torch(model), test.inputs(0, n_inv))
    result = key | {
        "model": name,
        "case": name,  # the key's name before model descriptions, for older readers
        "grid": grid.as_dict(),
        "layers": [ly.as_dict() for ly in layers],
        "invariance_images": n_inv,  # the config's, or the whole test set where smaller
        "rtol": RTOL,
    }
    fileio.write_json(cache, result)  # atomic: a crash leaves the old file or the new one
    plot_shift_grids({name: grid}, png)
    return result


def plot_shift_grids(grids: dict[str, ShiftGrid], path: Path) -> None:
    """One heat map of accuracy per run, shifts on both axes, values in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnlab.plots import save_figure

    k = len(grids)
    fig, axes = plt.subplots(1, k, figsize=(5.2 * k, 4.9), squeeze=False)
    lo = min(min(float(g.accuracy.min()) for g in grids.values()), 0.99)  # a scale, not a point
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
    counts = {g.n_images for g in grids.values()}
    if len(counts) == 1:
        fig.suptitle(
            f"Test accuracy (%) under input shifts, zero fill ({counts.pop():,} test images)"
        )
    else:  # runs on different data: each says how many
        for ax, g in zip(axes[0], grids.values(), strict=True):
            ax.set_title(f"{ax.get_title()}, {g.n_images:,} images", fontsize=10)
        fig.suptitle("Test accuracy (%) under input shifts, zero fill")
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
