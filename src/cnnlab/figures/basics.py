"""Figures of 14.2.1's basics: correlation vs convolution, sparse connectivity, neurons, sharing.

Every number drawn comes from :mod:`cnnlab.ops`; inputs and kernels are small integers.
"""

from __future__ import annotations

import numpy as np

from cnnlab import ops
from cnnlab.figures.model import (
    FOCUS,
    PALETTE0,
    FigureData,
    Frame,
    Index,
    Link,
    Mask,
    Panel,
    Role,
    Slide,
    after,
    cell_mask,
    dot_text,
    f64,
    full_mask,
    index_text,
    num,
    shape_text,
    sliding_frames,
    term,
    window_mask,
    window_values,
)

CORR, CONV, MINUS = "\u22c6", "\u2217", "\u2212"  # ⋆ correlation, ∗ convolution, −


def _corr_vs_conv(name: str, x: np.ndarray, k: np.ndarray) -> FigureData:
    """Input ⋆ kernel (top) against input ⋆ flip(kernel) = input ∗ kernel (bottom)."""
    corr, conv = ops.correlate(x, k), ops.convolve(x, k)
    flipped = np.flip(k)
    grids = {
        "input": x,
        "kernel": k,
        "flipped_kernel": flipped,
        "correlation": corr,
        "convolution": conv,
    }
    dims = f"{x.ndim}-D"
    rows = (
        (
            Panel("in_a", "input", f"input x ({shape_text(x.shape)})", "input"),
            Panel("k_a", "kernel", f"kernel k ({shape_text(k.shape)})", "kernel", op=CORR),
            Panel("out_a", "correlation", f"output: x {CORR} k (correlation)", "output", op="="),
        ),
        (
            Panel("in_b", "input", f"input x ({shape_text(x.shape)})", "input"),
            Panel("k_b", "flipped_kernel", "kernel flipped: flip(k)", "kernel", op=CORR),
            Panel("out_b", "convolution", f"output: x {CONV} k (convolution)", "output", op="="),
        ),
    )

    def caption(o: Index) -> str:
        xs = window_values(x, o, k.shape, 1, 1)
        return (
            f"correlation{index_text(o)} = {dot_text(xs, k.ravel())} = {num(corr[o])}\n"
            f"convolution{index_text(o)} = {dot_text(xs, flipped.ravel())} = {num(conv[o])}"
        )

    slides = [
        Slide(("in_a",), x.shape, k.shape, ("out_a",), ("k_a",)),
        Slide(("in_b",), x.shape, k.shape, ("out_b",), ("k_b",)),
    ]
    frames = sliding_frames(
        corr.shape, slides, caption, "x \u2217 k = x \u22c6 flip(k): the same sliding sum"
    )
    focus = frames[1]
    return FigureData(
        name=name,
        title=f"{dims} cross-correlation (what CNN layers compute) vs true convolution",
        caption=(
            "Correlation slides k as it is; convolution flips it first (x \u2217 k = x \u22c6 "
            f"flip(k)). Red: one window and the output it gives.\n{focus.caption}"
        ),
        grids=grids,
        rows=rows,
        highlights=focus.highlights,
        frames=frames,
    )


def correlation_vs_convolution_1d() -> FigureData:
    """1-D: a time series and an asymmetric 3-tap kernel."""
    return _corr_vs_conv("correlation_vs_convolution_1d", f64([1, 3, 0, 2, 1, 4]), f64([2, 1, -1]))


def correlation_vs_convolution_2d() -> FigureData:
    """2-D: a 5×5 image and an asymmetric 3×3 kernel."""
    x = f64([[1, 0, 2, 1, 0], [0, 1, 3, 0, 1], [2, 1, 0, 1, 2], [1, 0, 1, 2, 0], [0, 2, 1, 0, 1]])
    k = f64([[1, 0, 2], [0, 1, 0], [-1, 0, 0]])
    return _corr_vs_conv("correlation_vs_convolution_2d", x, k)


def correlation_vs_convolution_3d() -> FigureData:
    """3-D (a video: depth × height × width), drawn as depth slices."""
    x = f64(np.random.default_rng(3).integers(0, 4, (3, 3, 3)))  # fixed small integers
    k = f64([[[1, 0], [0, 2]], [[0, -1], [1, 0]]])
    corr, conv, flipped = ops.correlate(x, k), ops.convolve(x, k), np.flip(k)
    grids = {
        "input": x,
        "kernel": k,
        "flipped_kernel": flipped,
        "correlation": corr,
        "convolution": conv,
    }

    def sl(key: str, grid: str, d: int, label: str, role: Role) -> Panel:
        """Depth slice ``d`` of a 3-D grid."""
        return Panel(f"{key}{d}", grid, f"{label}, depth {d}", role, take=((0, d),))

    rows = (
        tuple(sl("in", "input", d, "input x", "input") for d in range(3)),
        (
            *(sl("k", "kernel", d, "kernel k", "kernel") for d in range(2)),
            *(sl("f", "flipped_kernel", d, "kernel flipped", "kernel") for d in range(2)),
        ),
        (
            *(sl("c", "correlation", d, f"output x{CORR}k", "output") for d in range(2)),
            *(sl("v", "convolution", d, f"output x{CONV}k", "output") for d in range(2)),
        ),
    )
    frames = []
    for o in np.ndindex(*corr.shape):
        hl: dict[str, Mask] = {f"in{o[0] + d}": window_mask((3, 3), o[1:], (2, 2)) for d in (0, 1)}
        hl.update({f"{p}{d}": full_mask((2, 2)) for p in "kf" for d in (0, 1)})
        hl.update({f"{p}{o[0]}": cell_mask((2, 2), o[1:]) for p in "cv"})
        later = after(corr.shape, o)
        hidden = {f"{p}{d}": later[d] for p in "cv" for d in (0, 1)}
        xs = window_values(x, o, k.shape, 1, 1)
        text = (
            f"correlation{index_text(o)} = {dot_text(xs, k.ravel())} = {num(corr[o])}\n"
            f"convolution{index_text(o)} = {dot_text(xs, flipped.ravel())} = {num(conv[o])}"
        )
        frames.append(Frame(text, hl, hidden))
    frames.append(Frame("flip(k) reverses depth, rows and columns", {}))
    return FigureData(
        name="correlation_vs_convolution_3d",
        title="3-D (video) correlation vs convolution: a 2×2×2 kernel through a 3×3×3 input",
        caption="The kernel reads two depth slices at once. " + frames[0].caption,
        grids=grids,
        rows=rows,
        highlights=frames[0].highlights,
        frames=tuple(frames),
    )


def _connections(n: int, k: np.ndarray) -> np.ndarray:
    """``J[i, j] = d output[i] / d input[j]``: ops.correlate of every unit impulse."""
    return np.stack([ops.correlate(np.eye(n)[j], k) for j in range(n)], axis=1)


def _graph_links(weights: np.ndarray, codes: np.ndarray, strong: np.ndarray) -> tuple[Link, ...]:
    """One link input j -> output i per non-zero ``weights[i, j]``."""
    return tuple(
        Link("x", (j,), "y", (i,), int(codes[i, j]), bool(strong[i, j]))
        for i, j in zip(*np.nonzero(weights), strict=True)
    )


def sparse_connectivity() -> FigureData:
    """Each output unit connects to 3 inputs only; its receptive field in 1-D and 2-D."""
    x, k = f64([2, 0, 1, 3, 1, 0, 2]), f64([1, 2, 1])
    y, conn = ops.correlate(x, k), _connections(7, k)
    x2 = f64(np.random.default_rng(2).integers(0, 4, (6, 6)))
    k2 = f64([[0, 1, 0], [1, -1, 1], [0, 1, 0]])
    y2 = ops.correlate(x2, k2)
    focus2 = (1, 2)
    impulse = cell_mask(y2.shape, focus2).astype(float)
    field2 = ops.convolve(impulse, np.ones((3, 3)), padding="full")  # transpose of valid corr
    grids = {
        "input_1d": x,
        "kernel_1d": k,
        "output_1d": y,
        "connections": conn,
        "input_2d": x2,
        "kernel_2d": k2,
        "output_2d": y2,
        "receptive_field_2d": (field2 != 0).astype(float),
    }
    rows = (
        (
            Panel("x", "input_1d", "input x (7 units)", "input", x=0),
            Panel("k", "kernel_1d", "kernel (3 weights)", "kernel", x=9),
        ),
        (
            Panel(
                "y",
                "output_1d",
                f"output y = x {CORR} k (5 units)",
                "output",
                x=1,
                label_below=True,
            ),
        ),
        (
            Panel("x2", "input_2d", "input (6×6)", "input"),
            Panel("k2", "kernel_2d", "kernel (3×3)", "kernel", op=CORR),
            Panel("y2", "output_2d", "output (4×4)", "output", op="="),
        ),
    )
    fixed = {
        "x2": (field2 != 0).astype(np.int64) * FOCUS,
        "k2": full_mask((3, 3)),
        "y2": cell_mask(y2.shape, focus2),
    }

    def frame(i: int) -> Frame:
        strong = np.zeros(conn.shape, dtype=bool)
        strong[i] = True
        links = _graph_links(conn, strong.astype(np.int64), np.ones(conn.shape, dtype=bool))
        rf = (conn[i] != 0).astype(np.int64) * FOCUS
        hl = {**fixed, "x": rf, "y": cell_mask(y.shape, (i,)), "k": full_mask((3,))}
        text = (
            f"output unit {i} is connected to inputs {i}\u2013{i + 2} only (its receptive "
            f"field): y[{i}] = {dot_text(x[i : i + 3], k)} = {num(y[i])}.\n"
            f"In 2-D, output{index_text(focus2)} = {num(y2[focus2])} sees the 3×3 patch marked."
        )
        return Frame(text, hl, {}, links)

    frames = tuple(frame(i) for i in range(len(y)))
    return FigureData(
        name="sparse_connectivity",
        title="Sparse connectivity: each output sees a small receptive field, not all inputs",
        caption=frames[2].caption,
        grids=grids,
        rows=rows,
        highlights=frames[2].highlights,
        links=frames[2].links,
        frames=frames,
        params={"receptive_field_1d": [2, 4], "receptive_field_2d_output": list(focus2)},
        row_gap=(2.4, 1.0),
    )


def parameter_sharing() -> FigureData:
    """The same 3 weights (one colour each) connect every output to its inputs."""
    x, k = f64([2, 0, 1, 3, 1, 0, 2]), f64([1, -1, 2])
    y, conn = ops.correlate(x, k), _connections(7, k)
    taps = _connections(7, f64([1, 2, 3]))  # tap number + 1 on each connection
    codes = np.where(taps > 0, PALETTE0 + taps - 1, 0).astype(np.int64)
    grids = {"input": x, "kernel": k, "output": y, "connections": conn, "taps": taps}
    rows = (
        (
            Panel("x", "input", "input x (7 units)", "input", x=0),
            Panel("k", "kernel", "kernel: 3 shared weights", "kernel", x=9),
        ),
        (Panel("y", "output", "output y = x \u22c6 k (5 units)", "output", x=1, label_below=True),),
    )
    k_codes = PALETTE0 + np.arange(3)
    all_links = _graph_links(conn, codes, np.ones(conn.shape, dtype=bool))
    frames = []
    for i in range(len(y)):
        strong = np.zeros(conn.shape, dtype=bool)
        strong[i] = True
        x_codes = np.zeros(7, dtype=np.int64)
        x_codes[i : i + 3] = k_codes
        terms = " + ".join(f"w{j}\u00b7x[{i + j}]" for j in range(3))
        text = f"y[{i}] = {terms} = {dot_text(x[i : i + 3], k)} = {num(y[i])}"
        frames.append(
            Frame(
                text,
                {"x": x_codes, "k": k_codes, "y": cell_mask(y.shape, (i,))},
                {"y": after(y.shape, (i,))},
                _graph_links(conn, codes, strong),
            )
        )
    return FigureData(
        name="parameter_sharing",
        title="Parameter sharing: the same weights (same colour) at every position",
        caption=(
            "Every line of one colour is the same weight: 3 parameters for 15 connections "
            "(a dense layer from 7 inputs to 5 outputs would learn 35)."
        ),
        grids=grids,
        rows=rows,
        highlights={"k": k_codes},
        links=all_links,
        frames=tuple(frames),
        row_gap=2.4,
    )


def neurons_feature_maps() -> FigureData:
    """A neuron is relu(Σ w·x + b) over one patch; a feature map is all neurons of one kernel."""
    x = f64([[1, 0, 2, 1, 0], [0, 1, 3, 0, 1], [2, 1, 0, 1, 2], [1, 0, 1, 2, 0], [0, 2, 1, 0, 1]])
    w = f64(np.stack([[[1, 0, -1], [1, 0, -1], [1, 0, -1]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]]], -1))
    w = w[:, :, None, :]  # (3, 3, C_in=1, C_out=2)
    b = f64([1, -4])
    pre = ops.conv(x[None, :, :, None], w, b)[0]  # (3, 3, 2)
    maps = ops.relu(pre)
    grids = {"input": x, "kernels": w, "bias": b, "pre_activation": pre, "feature_maps": maps}
    rows = tuple(
        (
            Panel(f"x{o}", "input", "input (5×5)", "input"),
            Panel(f"k{o}", "kernels", f"kernel {o}", "kernel", take=((3, o), (2, 0)), op=CORR),
            Panel(
                f"p{o}",
                "pre_activation",
                "Σ w\u00b7x + b",
                "other",
                take=((2, o),),
                op=f"{'+' if b[o] >= 0 else MINUS} {num(abs(b[o]))} =",
            ),
            Panel(
                f"m{o}",
                "feature_maps",
                f"output: feature map {o}",
                "output",
                take=((2, o),),
                op="relu \u2192",
            ),
        )
        for o in range(2)
    )

    def caption(o: Index) -> str:
        parts = [
            f"map {c}: relu({dot_text(window_values(x, o, (3, 3), 1, 1), w[:, :, 0, c].ravel())}"
            f" + {term(b[c])}) = relu({num(pre[o][c])}) = {num(maps[o][c])}"
            for c in range(2)
        ]
        return f"neuron {index_text(o)}, " + "\n".join(parts)

    slides = [Slide(("x0", "x1"), x.shape, (3, 3), ("p0", "p1", "m0", "m1"), ("k0", "k1"))]
    done = "Each kernel gives one feature map: 2 kernels, 2 maps of 3×3 neurons."
    frames = sliding_frames(maps.shape[:2], slides, caption, done)
    return FigureData(
        name="neurons_feature_maps",
        title="Neurons and feature maps: one neuron per position, one map per kernel",
        caption=(
            "A neuron = relu(weighted sum of one patch + bias); a feature map = all the neurons "
            f"that share one kernel.\n{frames[5].caption}"
        ),
        grids=grids,
        rows=rows,
        highlights=frames[5].highlights,
        frames=frames,
    )
