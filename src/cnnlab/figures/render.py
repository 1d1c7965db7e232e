"""Draw a :class:`~cnnlab.figures.model.FigureData` with matplotlib's Agg canvas.

Everything is placed in cell units (one grid cell = 1 × 1) on a single axes: grids as boxes
with their number inside, each labelled above in its role's colour (blue input, orange
kernel, green output), the operation symbol between them, links as lines, the caption below.
The artists are built once per layout; each animation frame only recolours them.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from numpy.typing import NDArray
from PIL import Image

from cnnlab.figures.model import FOCUS, FigureData, Frame, Panel, num

Colour = str | tuple[float, float, float]
LineStyle = str | tuple[int, tuple[int, int]]
CELL_IN = 0.42  # inches per cell
LABEL_H, TITLE_H, LINE_H = 1.15, 1.4, 0.5  # cells: label band, title band, caption line
LABEL_CHAR, CAPTION_CHAR = 0.165, 0.55  # a label character in cells, a caption one in ems
ROLE = {  # light fill, strong fill (focus), edge and label colour
    "input": ("#dce8f7", "#8db6e6", "#2c5d9b"),
    "kernel": ("#fde6ca", "#f4b068", "#b0520a"),
    "output": ("#dcf1de", "#8bd196", "#2b7a3d"),
    "other": ("#ececec", "#c6c6c6", "#555555"),
}
PALETTE = ("#7b3fb5", "#14a08f", "#e0a000", "#d1477a", "#4f7bd9", "#8c564b", "#6a9a1f", "#444444")
FOCUS_EDGE = "#d62728"
PAD_FILL, PAD_EDGE, PAD_TEXT = "#f3f3f3", "#9a9a9a", "#8a8a8a"


def _light(colour: str, amount: float = 0.62) -> tuple[float, float, float]:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
    r, g, b = rgb + (1.0 - rgb) * amount
    return float(r), float(g), float(b)


def _cells(view: NDArray[np.float64]) -> NDArray[np.float64]:
    return view[None, :] if view.ndim == 1 else view


@dataclass
class _Box:
    panel: Panel
    x: float
    y: float
    rows: int
    cols: int


def _label(p: Panel, cols: int) -> list[str]:
    return textwrap.wrap(p.label, max(12, int((cols + 1.2) / LABEL_CHAR)))


def _op_width(op: str) -> float:
    return max(1.5, 0.2 * max(len(line) for line in op.split("\n")) + 0.9)


def _layout(
    data: FigureData, rows: tuple[tuple[Panel | None, ...], ...]
) -> tuple[list[_Box], float, float]:
    """Boxes of every panel, content width and the y where the caption starts."""
    shapes = {p.key: _cells(p.view(data.grids)).shape for row in rows for p in row if p}
    ncol = max(len(row) for row in rows)
    widths, gaps = [0.0] * ncol, [1.5] * ncol
    for row in rows:
        for j, p in enumerate(row):
            if p is not None and p.x is None:
                label_w = max(len(line) for line in _label(p, shapes[p.key][1])) * LABEL_CHAR
                widths[j] = max(widths[j], shapes[p.key][1], label_w - 0.6)
                gaps[j] = max(gaps[j], _op_width(p.op) if p.op else 0.0)
    starts = [0.0] * ncol
    for j in range(1, ncol):
        starts[j] = starts[j - 1] + widths[j - 1] + gaps[j]
    row_gaps = data.row_gap if isinstance(data.row_gap, tuple) else (data.row_gap,) * len(rows)
    boxes, y = [], TITLE_H
    for n, row in enumerate(rows):
        height = max(shapes[p.key][0] for p in row if p)
        above = 0.0 if all(p.label_below for p in row if p) else LABEL_H
        below = LABEL_H if any(p.label_below for p in row if p) else 0.0
        for j, p in enumerate(row):
            if p is None:
                continue
            r, c = shapes[p.key]
            x = p.x if p.x is not None else starts[j] + (widths[j] - c) / 2
            boxes.append(_Box(p, x, y + above + (height - r) / 2, r, c))
        y += above + height + below + (row_gaps[n] if n < len(rows) - 1 else 0.4)
    return boxes, max(b.x + b.cols for b in boxes), y


class Canvas:
    """The artists of one layout of a figure, recoloured per :class:`Frame`."""

    def __init__(
        self, data: FigureData, rows: tuple[tuple[Panel | None, ...], ...], frames: list[Frame]
    ) -> None:
        self.data = data
        boxes, content_w, caption_y = _layout(data, rows)
        width = max(content_w + 1.0, 0.27 * len(data.title) + 1.0, 15.0)
        shift = (width - content_w) / 2
        for box in boxes:
            box.x += shift
        self.wrap = max(40, int((width - 1.0) * CELL_IN * 72 / (9.5 * CAPTION_CHAR)))
        lines = max(len(self._wrap(f.caption)) for f in frames)
        height = caption_y + lines * LINE_H + 0.5
        self.figure = Figure(figsize=(width * CELL_IN, height * CELL_IN))
        FigureCanvasAgg(self.figure)
        ax = self.figure.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.axis("off")
        self.ax, self.boxes = ax, {b.panel.key: b for b in boxes}
        ax.text(
            width / 2, 0.75, data.title, ha="center", va="center", fontsize=12.5, fontweight="bold"
        )
        self.rects: dict[str, list[list[Rectangle]]] = {}
        self.texts: dict[str, list[list[Text]]] = {}
        self.labels: dict[str, Text] = {}
        self.state: dict[tuple[str, int, int], tuple[object, ...]] = {}
        for box in boxes:
            self._add_panel(box)
        self.caption = ax.text(
            0.5,
            caption_y,
            "",
            ha="left",
            va="top",
            fontsize=9.5,
            linespacing=1.45,
            family="DejaVu Sans",
        )
        self.links: LineCollection | None = None

    def _wrap(self, text: str) -> list[str]:
        return [w for line in text.split("\n") for w in textwrap.wrap(line, self.wrap) or [""]]

    def _add_panel(self, box: _Box) -> None:
        p, ax = box.panel, self.ax
        edge = ROLE[p.role][2]
        below = p.label_below
        self.labels[p.key] = ax.text(
            box.x + box.cols / 2,
            box.y + box.rows + 0.15 if below else box.y - 0.15,
            "",
            ha="center",
            va="top" if below else "bottom",
            fontsize=9,
            fontweight="bold",
            color=edge,
            linespacing=1.1,
        )
        if p.op:
            size = {"\u22c6": 34, "\u2217": 24}.get(p.op, 18 if len(p.op) <= 1 else 9.5)
            ax.text(
                box.x - 0.5 * _op_width(p.op) - 0.05,
                box.y + box.rows / 2,
                p.op,
                ha="center",
                va="center",
                fontsize=size,
                color="#333333",
                linespacing=1.1,
            )
        rects, texts = [], []
        for i in range(box.rows):
            row = [Rectangle((box.x + j, box.y + i), 1, 1) for j in range(box.cols)]
            for rect in row:
                ax.add_patch(rect)
            rects.append(row)
            texts.append(
                [
                    ax.text(
                        box.x + j + 0.5,
                        box.y + i + 0.52,
                        "",
                        ha="center",
                        va="center",
                        fontsize=10.5,
                        zorder=5,
                    )
                    for j in range(box.cols)
                ]
            )
        self.rects[p.key], self.texts[p.key] = rects, texts
        for axis, step in enumerate(p.blocks):
            for k in range(step, (box.rows, box.cols)[axis], step):
                xs = [box.x, box.x + box.cols] if axis == 0 else [box.x + k] * 2
                ys = [box.y + k] * 2 if axis == 0 else [box.y, box.y + box.rows]
                ax.plot(xs, ys, color="#222222", lw=2.2, zorder=4.5, solid_capstyle="butt")

    def _padding(self, p: Panel, shape: tuple[int, int]) -> NDArray[np.bool_]:
        mask = np.zeros(shape, dtype=bool)
        if p.pad:
            pads = p.pad if len(p.pad) == 2 else ((0, 0), *p.pad)
            (top, bottom), (left, right) = pads
            mask[:] = True
            mask[top : shape[0] - bottom, left : shape[1] - right] = False
        return mask

    def apply(self, frame: Frame) -> None:
        """Recolour every cell, set the numbers, links and caption for ``frame``."""
        for key, box in self.boxes.items():
            p = box.panel
            values = _cells(p.view(self.data.grids, frame.show.get(key)))
            codes = _cells(np.asarray(frame.highlights.get(key, np.zeros(values.shape, int))))
            hidden = _cells(np.asarray(frame.hidden.get(key, np.zeros(values.shape, bool))))
            padding = self._padding(p, values.shape)
            label = _label(replace(p, label=frame.labels.get(key, p.label)), box.cols)
            self.labels[key].set_text("\n".join(label))
            light, strong, edge = ROLE[p.role]
            for (i, j), value in np.ndenumerate(values):
                rect, text = self.rects[key][i][j], self.texts[key][i][j]
                code, pad = int(codes[i, j]), bool(padding[i, j])
                face: Colour = light
                line: Colour = edge
                style: LineStyle = "solid"
                lw, z = 0.9, 2.0
                if pad:
                    face, line, style = PAD_FILL, PAD_EDGE, (0, (2, 2))
                if code == FOCUS and p.role == "kernel":  # in use: no red, red marks the window
                    face, lw = strong, 1.4
                elif code == FOCUS:
                    face, line, lw, style, z = strong, FOCUS_EDGE, 2.8, "solid", 3.0
                elif code > FOCUS:
                    colour = PALETTE[(code - 2) % len(PALETTE)]
                    face, line, lw, style, z = _light(colour), colour, 2.4, "solid", 3.0
                if hidden[i, j]:
                    face, line, lw, style = "white", "#c8c8c8", 0.8, (0, (1, 2))
                state = (face, line, lw, style, z, bool(hidden[i, j]), float(value), pad)
                if self.state.get((key, i, j)) == state:
                    continue  # unchanged since the last frame: matplotlib setters are slow
                self.state[(key, i, j)] = state
                rect.set(facecolor=face, edgecolor=line, linewidth=lw, linestyle=style, zorder=z)
                text.set_text("" if hidden[i, j] else num(float(value)))
                text.set_color(PAD_TEXT if pad else "#111111")
        self._draw_links(frame)
        self.caption.set_text("\n".join(self._wrap(frame.caption)))

    def _draw_links(self, frame: Frame) -> None:
        if self.links is not None:
            self.links.remove()
            self.links = None
        if not frame.links:
            return
        segments, widths = [], []
        colours: list[Colour] = []
        for link in sorted(frame.links, key=lambda lk: (lk.strong, lk.code)):
            a, b = self.boxes[link.src], self.boxes[link.dst]
            ja, jb = link.src_cell[-1], link.dst_cell[-1]
            ia = link.src_cell[0] if len(link.src_cell) == 2 else 0
            ib = link.dst_cell[0] if len(link.dst_cell) == 2 else 0
            down = b.y > a.y
            ya = a.y + ia + (1.0 if down else 0.0)
            yb = b.y + ib + (0.0 if down else 1.0)
            segments.append([(a.x + ja + 0.5, ya), (b.x + jb + 0.5, yb)])
            colour: Colour
            if link.code == 0:
                colour, width = "#b5b5b5", 1.0
            elif link.code == FOCUS:
                colour, width = FOCUS_EDGE, 2.6
            else:
                colour, width = PALETTE[(link.code - 2) % len(PALETTE)], 2.4
            if not link.strong:
                colour, width = _light(str(colour), 0.7), 1.0
            colours.append(colour)
            widths.append(width)
        self.links = LineCollection(segments, colors=colours, linewidths=widths, zorder=1)
        self.ax.add_collection(self.links)

    def image(self, frame: Frame, dpi: float) -> NDArray[np.uint8]:
        """``frame`` drawn as an RGB array."""
        self.apply(frame)
        self.figure.set_dpi(dpi)
        canvas = self.figure.canvas
        assert isinstance(canvas, FigureCanvasAgg)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def _palette_image(rgb: NDArray[np.uint8]) -> Image.Image:
    return Image.fromarray(rgb).quantize(colors=128, method=Image.Quantize.MEDIANCUT)


def _gif_frames(rgbs: list[NDArray[np.uint8]]) -> list[Image.Image]:
    """Quantise every frame to one shared palette (no colour flicker between frames)."""
    sample = np.concatenate([rgb[::3, ::3] for rgb in rgbs], axis=0)
    palette = Image.fromarray(sample).quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    return [
        Image.fromarray(rgb).quantize(palette=palette, dither=Image.Dither.NONE) for rgb in rgbs
    ]


def render(
    data: FigureData, png_dpi: float = 110, gif_dpi: float = 80
) -> tuple[Image.Image, list[Image.Image]]:
    """The PNG picture (the still) and the animation frames (empty if it does not animate)."""
    still, frames = data.still(), list(data.frames) if data.animated else []
    same_layout = data.frame_rows is None
    canvas = Canvas(data, data.rows, [still, *frames] if same_layout else [still])
    picture = _palette_image(canvas.image(still, png_dpi))
    if not frames:
        return picture, []
    if not same_layout:
        canvas = Canvas(data, data.frame_rows or data.rows, frames)
    return picture, _gif_frames([canvas.image(frame, gif_dpi) for frame in frames])
