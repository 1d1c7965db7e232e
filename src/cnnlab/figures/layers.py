"""Figures of whole layers: pooling and its local invariance, the multi-channel case of 14.2.2
and the receptive field growing through stacked layers.

Numbers from :func:`cnnlab.ops.max_pool`, :func:`cnnlab.ops.avg_pool`, :func:`cnnlab.ops.conv`
and :func:`cnnlab.ops.correlate`; receptive fields by :func:`cnnlab.ops.convolve` of an impulse
with a kernel of ones (the transpose of a valid correlation).
"""

from __future__ import annotations

import numpy as np

from cnnlab import ops
from cnnlab.figures.model import (
    FOCUS,
    FigureData,
    Frame,
    Grid,
    Index,
    Mask,
    Panel,
    Role,
    Slide,
    cell_mask,
    f64,
    full_mask,
    index_text,
    num,
    sliding_frames,
    term,
)

CORR = "\u22c6"


def _pool(x: np.ndarray, kind: str) -> np.ndarray:
    """2×2 pooling of a single 2-D map through the channels-last ops."""
    fn = ops.max_pool if kind == "max" else ops.avg_pool
    return np.asarray(fn(x[None, :, :, None], 2), dtype=np.float64)[0, :, :, 0]


def pooling() -> FigureData:
    """Max and average pooling 2×2, stride 2: 4×4 → 2×2."""
    x = f64([[1, 3, 2, 0], [4, 2, 1, 1], [0, 1, 5, 2], [2, 3, 1, 4]])
    mx, av = _pool(x, "max"), _pool(x, "avg")
    grids = {"input": x, "max_pooled": mx, "avg_pooled": av}
    rows = (
        (
            Panel("x", "input", "input (4×4)", "input", blocks=(2, 2)),
            Panel("m", "max_pooled", "output: max pooled", "output", op="max 2×2\n\u2192"),
        ),
        (
            Panel("x2", "input", "input (4×4)", "input", blocks=(2, 2)),
            Panel("a", "avg_pooled", "output: average pooled", "output", op="average\n2×2 \u2192"),
        ),
    )

    def caption(o: Index) -> str:
        block = x[2 * o[0] : 2 * o[0] + 2, 2 * o[1] : 2 * o[1] + 2].ravel()
        values = ", ".join(num(v) for v in block)
        total = " + ".join(term(v) for v in block)
        return (
            f"max{index_text(o)} = max({values}) = {num(mx[o])}\n"
            f"average{index_text(o)} = ({total}) / 4 = {num(av[o])}"
        )

    slide = Slide(("x", "x2"), x.shape, (2, 2), ("m", "a"), (), stride=2)
    done = "Each 2×2 block becomes one value: the size halves, no weights are learned."
    frames = sliding_frames(mx.shape, [slide], caption, done)
    return FigureData(
        name="pooling",
        title="Max pooling and average pooling, 2×2 windows, stride 2",
        caption=f"Pooling downsamples. {frames[1].caption}",
        grids=grids,
        rows=rows,
        highlights=frames[1].highlights,
        frames=frames,
        params={"pool_size": 2, "strides": 2},
    )


def pooling_invariance() -> FigureData:
    """Shift the input 1 pixel right: the max-pooled values stay, the averages change."""
    x = f64([[9, 1, 8, 0], [2, 0, 3, 1], [1, 0, 0, 2], [7, 3, 6, 1]])
    shifted = np.zeros_like(x)
    shifted[:, 1:] = x[:, :-1]
    grids = {
        "input": x,
        "shifted_input": shifted,
        "max_pooled": _pool(x, "max"),
        "max_pooled_shifted": _pool(shifted, "max"),
        "avg_pooled": _pool(x, "avg"),
        "avg_pooled_shifted": _pool(shifted, "avg"),
    }

    def peaks(a: np.ndarray) -> Mask:
        up = np.kron(_pool(a, "max"), np.ones((2, 2)))
        return (a == up).astype(np.int64) * FOCUS

    changed = (grids["avg_pooled"] != grids["avg_pooled_shifted"]).astype(np.int64) * FOCUS

    op = "max 2×2\n\u2192"
    rows: tuple[tuple[Panel | None, ...], ...] = (
        (
            Panel("x", "input", "input", "input", blocks=(2, 2)),
            Panel("m", "max_pooled", "output: max pooled", "output", op=op),
        ),
        (
            Panel("xs", "shifted_input", "input shifted 1 pixel right", "input", blocks=(2, 2)),
            Panel("ms", "max_pooled_shifted", "output: max pooled, the same", "output", op=op),
        ),
        (
            Panel("a", "avg_pooled", "output: average pooled input", "output"),
            Panel("as", "avg_pooled_shifted", "output: average pooled shifted", "output", op="vs"),
        ),
    )
    swap = {"x": "shifted_input", "m": "max_pooled_shifted", "a": "avg_pooled_shifted"}
    frame_rows = (
        rows[0],
        (None, Panel("a", "avg_pooled", "output: average pooled (for comparison)", "output")),
    )
    frames = (
        Frame("the input, its peaks (red) and the max-pooled values", {"x": peaks(x)}),
        Frame(
            "shifted 1 pixel right: every peak stays in its 2×2 window, so the max-pooled "
            "values do not move; the averages change (red)",
            {"x": peaks(shifted), "a": changed},
            show=swap,
            labels={"x": "input shifted 1 pixel right", "m": "output: max pooled, the same"},
        ),
    )
    return FigureData(
        name="pooling_invariance",
        title="Local translation invariance: a 1-pixel shift leaves the max-pooled values in place",
        caption=(
            "Each peak (red) moves one cell but stays in its 2×2 pooling window (thick lines), "
            "so max pooling gives the same output; average pooling changes (red)."
        ),
        grids=grids,
        rows=rows,
        highlights={"x": peaks(x), "xs": peaks(shifted), "as": changed},
        frames=frames,
        frame_rows=frame_rows,
        frame_ms=1500,
        params={"shift": [0, 1]},
    )


def _multichannel() -> dict[str, np.ndarray]:
    """A 4×4×3 input, a 3×3×3×2 kernel, bias, the per-channel correlations and the output."""
    rng = np.random.default_rng(1)  # fixed: small integers, varied per-channel shares
    x = f64(rng.integers(0, 3, (4, 4, 3)))
    w = f64(rng.integers(-1, 2, (3, 3, 3, 2)))
    b = f64([1, -1])
    out = ops.conv(x[None], w, b)[0]  # (2, 2, 2)
    partials = np.stack(
        [
            np.stack([ops.correlate(x[:, :, c], w[:, :, c, o]) for o in range(2)], axis=-1)
            for c in range(3)
        ],
        axis=2,
    )  # (2, 2, C_in, C_out)
    return {"input": x, "kernel": w, "bias": b, "partial_sums": partials, "output": out}


def _depth_sum(grids: dict[str, np.ndarray], o: Index, f: int) -> str:
    """``output[i, j, f] = a (channel 0) + ... + b (bias) = total``."""
    parts = " + ".join(f"{term(grids['partial_sums'][(*o, c, f)])} (ch {c})" for c in range(3))
    total = num(grids["output"][(*o, f)])
    return f"output{index_text((*o, f))} = {parts} + {term(grids['bias'][f])} (bias) = {total}"


def multichannel_filters() -> FigureData:
    """H×W×C_in input, k×k×C_in×C_out kernel: one output map per filter."""
    grids = _multichannel()
    rows: list[tuple[Panel | None, ...]] = [
        (
            Panel(f"x{c}", "input", f"input[:, :, {c}]", "input", take=((2, c),)),
            *(
                Panel(
                    f"k{c}{f}",
                    "kernel",
                    f"kernel[:, :, {c}, {f}]",
                    "kernel",
                    take=((3, f), (2, c)),
                    op=CORR if f == 0 else "",
                )
                for f in range(2)
            ),
        )
        for c in range(3)
    ]
    rows.append(
        (
            None,
            *(
                Panel(
                    f"y{f}",
                    "output",
                    f"output[:, :, {f}] (filter {f})",
                    "output",
                    take=((2, f),),
                    op="\u03a3 over c\n+ b =" if f == 0 else "",
                )
                for f in range(2)
            ),
        )
    )
    slide = Slide(
        tuple(f"x{c}" for c in range(3)),
        (4, 4),
        (3, 3),
        ("y0", "y1"),
        tuple(f"k{c}{f}" for c in range(3) for f in range(2)),
    )
    frames = sliding_frames(
        (2, 2),
        [slide],
        lambda o: "\n".join(_depth_sum(grids, o, f) for f in range(2)),
        "One 3×3×3 filter per output map; each map sums over all 3 input channels.",
    )
    return FigureData(
        name="multichannel_filters",
        title="A 4×4×3 input and a 3×3×3×2 kernel: one output map per filter (4×4×3 → 2×2×2)",
        caption=(
            "Column f holds filter f (its 3 depth slices); its map sums the correlations of "
            "every input channel with its slice, plus the bias. " + frames[1].caption
        ),
        grids=grids,
        rows=tuple(rows),
        highlights=frames[1].highlights,
        frames=frames,
    )


def multichannel_depth_sum() -> FigureData:
    """Filter 0 spelled out: input channel c ⋆ kernel slice c, then the sum over c plus b."""
    grids = _multichannel()
    rows: list[tuple[Panel | None, ...]] = [
        (
            Panel(f"x{c}", "input", f"input[:, :, {c}]", "input", take=((2, c),)),
            Panel(
                f"k{c}", "kernel", f"kernel[:, :, {c}, 0]", "kernel", take=((3, 0), (2, c)), op=CORR
            ),
            Panel(
                f"p{c}",
                "partial_sums",
                f"channel {c} term",
                "other",
                take=((3, 0), (2, c)),
                op="=",
            ),
        )
        for c in range(3)
    ]
    b0 = num(grids["bias"][0])
    total = Panel(
        "y", "output", "output[:, :, 0]", "output", take=((2, 0),), op=f"Σ over c\n+ {b0} ="
    )
    rows.append((None, None, total))
    slide = Slide(
        tuple(f"x{c}" for c in range(3)),
        (4, 4),
        (3, 3),
        (*(f"p{c}" for c in range(3)), "y"),
        tuple(f"k{c}" for c in range(3)),
    )
    frames = sliding_frames(
        (2, 2),
        [slide],
        lambda o: _depth_sum(grids, o, 0),
        "The sum over input depth is what makes the 4-D kernel's output one map per filter.",
    )
    return FigureData(
        name="multichannel_depth_sum",
        title="The sum over input depth, spelled out for filter 0",
        caption=(
            "output[i, j, f] = \u03a3_c (input[:, :, c] \u22c6 kernel[:, :, c, f])[i, j] + b[f]: "
            + frames[0].caption
        ),
        grids=grids,
        rows=tuple(rows),
        highlights=frames[0].highlights,
        frames=frames,
    )


def receptive_field_growth() -> FigureData:
    """Three stacked valid 3×3 layers: one output sees 3×3, 5×5, then 7×7 of the input."""
    x = f64(np.random.default_rng(0).integers(0, 3, (8, 8)))  # fixed small integers
    kernels = [
        f64([[0, 1, 0], [1, 0, 1], [0, 1, 0]]),
        f64([[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
        f64([[0, 0, 1], [0, 1, 0], [-1, 0, 0]]),
    ]
    layers: list[Grid] = [x]
    for k in kernels:
        layers.append(ops.correlate(layers[-1], k))
    focus: Index = (0, 1)
    fields = [cell_mask(layers[-1].shape, focus).astype(float)]
    for _ in kernels:  # back through each layer: the transpose of a valid correlation
        fields.insert(0, (ops.convolve(fields[0], np.ones((3, 3)), padding="full") != 0) * 1.0)
    grids = {"input": x, **{f"layer_{i}": layers[i] for i in (1, 2, 3)}}
    grids.update({f"kernel_{i + 1}": k for i, k in enumerate(kernels)})
    grids.update({f"receptive_field_{i}": fields[i] for i in range(3)})
    names = ["input (8×8)", "layer 1 (6×6)", "layer 2 (4×4)", "layer 3 = output (2×2)"]
    role: tuple[Role, ...] = ("input", "other", "other", "output")
    rows = (
        tuple(
            Panel(
                f"l{i}",
                "input" if i == 0 else f"layer_{i}",
                names[i],
                role[i],
                op="" if i == 0 else f"{CORR} k{i} =",
            )
            for i in range(4)
        ),
        (None, *(Panel(f"k{i}", f"kernel_{i}", f"kernel k{i}", "kernel") for i in (1, 2, 3))),
    )
    sizes = [int(np.sqrt(f.sum())) for f in fields]
    frames = []
    hl: dict[str, Mask] = {"l3": cell_mask((2, 2), focus)}
    frames.append(Frame(f"one unit of layer 3, at {index_text(focus)}", dict(hl)))
    for i in (2, 1, 0):
        hl[f"l{i}"] = fields[i].astype(np.int64) * FOCUS
        hl[f"k{i + 1}"] = full_mask((3, 3))
        frames.append(
            Frame(f"it sees {sizes[i]}×{sizes[i]} of {names[i].split(' (')[0]}", dict(hl))
        )
    return FigureData(
        name="receptive_field_growth",
        title="The receptive field grows through stacked 3×3 layers: 3×3, 5×5, 7×7",
        caption=(
            f"One unit of layer 3 sees {sizes[2]}×{sizes[2]} of layer 2, {sizes[1]}×{sizes[1]} "
            f"of layer 1 and {sizes[0]}×{sizes[0]} of the input: each 3×3 layer adds 2 "
            "(r = 1 + L\u00b7(k \u2212 1))."
        ),
        grids=grids,
        rows=rows,
        highlights=hl,
        frames=tuple(frames),
        frame_ms=1300,
        params={"focus": list(focus), "receptive_field": sizes},
    )
