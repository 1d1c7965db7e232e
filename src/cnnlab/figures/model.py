"""Figure data: what one of the chapter's figures shows, kept apart from how it is drawn.

A :class:`FigureData` holds the named grids (input, kernel, output, ...) whose numbers are
printed in the cells, a layout of :class:`Panel` rows that says which grid goes where, the
highlighted cells of the still picture and, for the sliding figures, one :class:`Frame` per
step of the animation. Builders fill it by calling :mod:`cnnlab.ops`; the renderer in
:mod:`cnnlab.figures.render` only draws it.

Highlight codes, per cell of a panel: 0 plain, 1 the focus (red frame), ``2 + i`` colour ``i``
of a categorical palette (one colour per shared weight, say).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, SupportsFloat

import numpy as np
from numpy.typing import ArrayLike, NDArray

Role = Literal["input", "kernel", "output", "other"]
Index = tuple[int, ...]
Mask = NDArray[np.int64]
Grid = NDArray[Any]  # a grid of numbers as drawn (float64 from cnnlab.ops)

FOCUS = 1  # highlight code of the cells in focus
PALETTE0 = 2  # highlight code of the first palette colour


@dataclass(frozen=True)
class Panel:
    """One grid drawn as cells: which grid, under which label, in which role's colour.

    ``take`` is a sequence of ``(axis, index)`` pairs that select a 1-D or 2-D view of a
    higher-rank grid (a depth slice, one channel); ``pad`` marks ``(before, after)`` cells per
    axis of the view as zero padding; ``op`` is the symbol drawn to the left of the panel;
    ``x`` places the panel's left edge (in cells) instead of the column layout; ``blocks``
    draws a thick line every ``blocks[axis]`` cells (pooling windows); ``label_below`` puts
    the label under the grid (out of the way of links arriving from above).
    """

    key: str
    grid: str
    label: str
    role: Role
    take: tuple[tuple[int, int], ...] = ()
    pad: tuple[tuple[int, int], ...] = ()
    op: str = ""
    x: float | None = None
    blocks: tuple[int, ...] = ()
    label_below: bool = False

    def view(self, grids: Mapping[str, Grid], grid: str | None = None) -> Grid:
        """The 1-D or 2-D array this panel draws (from ``grid`` instead of its own if given)."""
        arr = grids[grid or self.grid]
        for axis, index in sorted(self.take, reverse=True):
            arr = np.take(arr, index, axis=axis)
        if arr.ndim not in (1, 2):
            raise ValueError(f"panel {self.key!r} views a {arr.ndim}-D array; take a slice")
        return arr


@dataclass(frozen=True)
class Link:
    """A line from a cell of one panel to a cell of another (a connection between units)."""

    src: str
    src_cell: Index
    dst: str
    dst_cell: Index
    code: int = 0  # 0 grey, 1 focus red, 2 + i palette colour i
    strong: bool = True


@dataclass(frozen=True)
class Frame:
    """One step of an animation: highlights, cells not computed yet, links, caption.

    ``show`` maps a panel key to another grid of the same shape to draw in this frame, and
    ``labels`` to another label.
    """

    caption: str
    highlights: Mapping[str, Mask] = field(default_factory=dict)
    hidden: Mapping[str, NDArray[np.bool_]] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    show: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FigureData:
    """Everything drawn in one figure; ``frames`` non-empty makes it an animation too."""

    name: str
    title: str
    caption: str
    grids: Mapping[str, Grid]
    rows: tuple[tuple[Panel | None, ...], ...]
    highlights: Mapping[str, Mask] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    frames: tuple[Frame, ...] = ()
    frame_rows: tuple[tuple[Panel | None, ...], ...] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    row_gap: float | tuple[float, ...] = 0.7
    frame_ms: int = 900

    @property
    def animated(self) -> bool:
        """Whether the figure is also written as an animation."""
        return len(self.frames) > 1

    def still(self) -> Frame:
        """The state drawn in the PNG."""
        return Frame(self.caption, self.highlights, {}, self.links)

    def panels(self) -> list[Panel]:
        """Every panel of the still and the animation layouts, once each."""
        seen: dict[str, Panel] = {}
        for row in (*self.rows, *(self.frame_rows or ())):
            for panel in row:
                if panel is not None:
                    seen.setdefault(panel.key, panel)
        return list(seen.values())

    def panel(self, key: str) -> Panel:
        """The panel named ``key``."""
        for panel in self.panels():
            if panel.key == key:
                return panel
        raise KeyError(key)

    def manifest(self) -> dict[str, Any]:
        """JSON-ready summary: name, title, caption, parameters and every grid as lists."""
        return {
            "name": self.name,
            "title": self.title,
            "caption": self.caption,
            "params": dict(self.params),
            "frames": len(self.frames),
            "grids": {name: grid_to_list(grid) for name, grid in self.grids.items()},
        }


def grid_to_list(grid: Grid) -> Any:
    """Nested lists, as ints where every value is a whole number."""
    arr = np.asarray(grid, dtype=np.float64)
    if np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64).tolist()
    return arr.tolist()


def f64(values: Any) -> NDArray[np.float64]:
    """A float64 copy of ``values``."""
    return np.array(values, dtype=np.float64)


def window_mask(
    shape: Sequence[int],
    out_index: Index,
    kernel: Sequence[int],
    *,
    stride: int = 1,
    dilation: int = 1,
    taps: bool = False,
) -> Mask:
    """Cells of an (already padded) input read by output ``out_index``.

    Tap ``j`` reads cell ``out_index * stride + j * dilation``. The mask is ``FOCUS`` there, or,
    with ``taps``, ``PALETTE0 + flat tap number`` (the colour of the weight used).
    """
    mask = np.zeros(tuple(shape), dtype=np.int64)
    for number, tap in enumerate(np.ndindex(*kernel)):
        cell = tuple(o * stride + j * dilation for o, j in zip(out_index, tap, strict=True))
        mask[cell] = PALETTE0 + number if taps else FOCUS
    return mask


def cell_mask(shape: Sequence[int], index: Index, code: int = FOCUS) -> Mask:
    """A mask with only ``index`` set to ``code``."""
    mask = np.zeros(tuple(shape), dtype=np.int64)
    mask[index] = code
    return mask


def full_mask(shape: Sequence[int], code: int = FOCUS) -> Mask:
    """Every cell set to ``code``."""
    return np.full(tuple(shape), code, dtype=np.int64)


def after(shape: Sequence[int], index: Index) -> NDArray[np.bool_]:
    """Cells after ``index`` in raster order: the outputs not computed yet."""
    flat = int(np.ravel_multi_index(index, tuple(shape)))
    return (np.arange(int(np.prod(shape))) > flat).reshape(tuple(shape))


def num(value: SupportsFloat) -> str:
    """A cell value as printed: whole numbers without decimals, others with up to two."""
    value = float(value)
    if value == round(value):
        text = str(round(value))
    else:
        text = f"{value:.2f}".rstrip("0")
    return text.replace("-", "\u2212")


def term(value: SupportsFloat) -> str:
    """``num`` with negative numbers in parentheses, for sums."""
    text = num(value)
    return f"({text})" if float(value) < 0 else text


def dot_text(xs: ArrayLike, ks: ArrayLike) -> str:
    """``x0·k0 + x1·k1 + ...`` written out."""
    a, b = np.ravel(xs), np.ravel(ks)
    return " + ".join(f"{term(u)}\u00b7{term(v)}" for u, v in zip(a, b, strict=True))


def index_text(index: Index) -> str:
    """``[1, 2]`` for an index tuple."""
    return "[" + ", ".join(str(i) for i in index) + "]"


def shape_text(shape: Sequence[int]) -> str:
    """``5×5`` for a shape."""
    return "\u00d7".join(str(n) for n in shape)


def window_values(
    view: Grid, out_index: Index, kernel: Sequence[int], stride: int, dilation: int
) -> list[float]:
    """The input values tap by tap (raster order) under output ``out_index``'s window."""
    mask = window_mask(view.shape, out_index, kernel, stride=stride, dilation=dilation, taps=True)
    order = np.argsort(mask[mask > 0], kind="stable")
    return [float(v) for v in view[mask > 0][order]]


@dataclass(frozen=True)
class Slide:
    """One sliding window: the panels it is read from, written to and its geometry."""

    inputs: tuple[str, ...]
    input_shape: Index
    kernel: Index
    outputs: tuple[str, ...]
    kernels: tuple[str, ...] = ()
    stride: int = 1
    dilation: int = 1
    taps: bool = False


def sliding_frames(
    out_shape: Index,
    slides: Sequence[Slide],
    caption: Callable[[Index], str],
    done: str,
    extra: Mapping[str, Mask] | None = None,
) -> tuple[Frame, ...]:
    """One frame per output position (raster order) and a last one with every output shown.

    Each frame highlights the window in every input panel, the whole kernel, the output cell
    being computed, and hides the outputs not computed yet; ``extra`` highlights are kept.
    """
    frames = []
    for out_index in np.ndindex(*out_shape):
        highlights: dict[str, Mask] = dict(extra or {})
        hidden: dict[str, NDArray[np.bool_]] = {}
        for s in slides:
            for key in s.inputs:
                highlights[key] = window_mask(
                    s.input_shape,
                    out_index,
                    s.kernel,
                    stride=s.stride,
                    dilation=s.dilation,
                    taps=s.taps,
                )
            for key in s.kernels:
                codes = PALETTE0 + np.arange(int(np.prod(s.kernel))).reshape(s.kernel)
                highlights[key] = codes if s.taps else full_mask(s.kernel)
            for key in s.outputs:
                highlights[key] = cell_mask(out_shape, out_index)
                hidden[key] = after(out_shape, out_index)
        frames.append(Frame(caption(out_index), highlights, hidden))
    frames.append(Frame(done, dict(extra or {})))
    return tuple(frames)
