"""Figures of the sliding geometry: padding, strides, stride against pooling, dilation.

Padding amounts come from :func:`cnnlab.ops.padding_per_axis` (TensorFlow's ``same`` rule),
outputs from :func:`cnnlab.ops.correlate` and :func:`cnnlab.ops.max_pool`.
"""

from __future__ import annotations

import numpy as np

from cnnlab import ops
from cnnlab.figures.model import (
    PALETTE0,
    FigureData,
    Frame,
    Index,
    Mask,
    Panel,
    Slide,
    cell_mask,
    dot_text,
    f64,
    full_mask,
    index_text,
    num,
    shape_text,
    sliding_frames,
    window_mask,
    window_values,
)

X5 = f64([[1, 0, 2, 1, 0], [0, 1, 3, 0, 1], [2, 1, 0, 1, 2], [1, 0, 1, 2, 0], [0, 2, 1, 0, 1]])
X6 = f64(np.random.default_rng(3).integers(0, 4, (6, 6)))  # fixed small integers
K3 = f64([[1, 0, 1], [0, 2, 0], [-1, 0, 1]])


def _pad_text(pads: tuple[tuple[int, int], ...]) -> str:
    (top, bottom), (left, right) = pads
    return f"{top} zero row(s) above, {bottom} below, {left} zero column(s) left, {right} right"


def _sliding(
    name: str,
    title: str,
    note: str,
    x: np.ndarray,
    k: np.ndarray,
    *,
    padding: str = "valid",
    stride: int = 1,
    dilation: int = 1,
) -> FigureData:
    """Input (drawn padded) ⋆ kernel = output, one animation frame per output cell."""
    pads = ops.padding_per_axis(x.shape, k.shape, stride=stride, padding=padding, dilation=dilation)
    y = ops.correlate(x, k, stride=stride, padding=padding, dilation=dilation)
    padded = np.pad(x, pads)
    grids = {"input": x, "padded_input": padded, "kernel": k, "output": y}
    what = f"input ({shape_text(x.shape)})"
    if any(any(p) for p in pads):
        what = f"input ({shape_text(x.shape)}) + zero padding"
    extra = []
    if stride > 1:
        extra.append(f"stride {stride}")
    if dilation > 1:
        extra.append(f"dilation {dilation}")
    k_label = f"kernel ({shape_text(k.shape)}{', ' + ', '.join(extra) if extra else ''})"
    rows: tuple[tuple[Panel | None, ...], ...] = (
        (
            Panel("x", "padded_input", what, "input", pad=pads),
            Panel("k", "kernel", k_label, "kernel", op="\u22c6"),
            Panel("y", "output", f"output ({shape_text(y.shape)})", "output", op="="),
        ),
    )
    if dilation > 1:
        dilated = ops.convolve(f64([[1]]), k, padding="full", dilation=dilation)
        grids["dilated_kernel"] = dilated
        grids["output_via_dilated_kernel"] = ops.correlate(x, dilated)
        label = f"= a {shape_text(dilated.shape)} kernel with holes (same output)"
        rows = (*rows, (None, Panel("kd", "dilated_kernel", label, "kernel"), None))

    def caption(o: Index) -> str:
        xs = window_values(padded, o, k.shape, stride, dilation)
        return f"output{index_text(o)} = {dot_text(xs, k.ravel())} = {num(y[o])}"

    slide = Slide(("x",), padded.shape, k.shape, ("y",), ("k",), stride, dilation)
    frames = sliding_frames(y.shape, [slide], caption, note)
    still = frames[min(len(frames) - 2, 1 if y.size > 4 else 0)]
    pad_note = f"padding {padding!r}: {_pad_text(pads)}. " if padding != "valid" else ""
    return FigureData(
        name=name,
        title=title,
        caption=f"{pad_note}{note}\n{still.caption}",
        grids=grids,
        rows=rows,
        highlights=still.highlights,
        frames=frames,
        params={
            "padding": padding,
            "stride": stride,
            "dilation": dilation,
            "pads": [list(p) for p in pads],
        },
    )


def padding_valid() -> FigureData:
    """No padding: only windows inside the input, 4×4 → 2×2."""
    x = X5[:4, :4]
    return _sliding(
        "padding_valid",
        "padding 'valid': no zeros added, the output shrinks (4×4 → 2×2)",
        "Output size n \u2212 k + 1 = 4 \u2212 3 + 1 = 2 per axis.",
        x,
        K3,
    )


def padding_same() -> FigureData:
    """Zeros around the input so the output keeps its size, 4×4 → 4×4."""
    return _sliding(
        "padding_same",
        "padding 'same': one ring of zeros keeps the size (4×4 → 4×4)",
        "Total padding k \u2212 1 = 2 per axis, split 1 before and 1 after.",
        X5[:4, :4],
        K3,
        padding="same",
    )


def padding_full() -> FigureData:
    """k − 1 zeros on every side: every partial overlap gives an output, 3×3 → 5×5."""
    return _sliding(
        "padding_full",
        "padding 'full': every partial overlap counts (3×3 → 5×5)",
        "k \u2212 1 = 2 zeros on every side; output size n + k \u2212 1 = 5.",
        X5[:3, :3],
        K3,
        padding="full",
    )


def padding_same_even_kernel() -> FigureData:
    """TensorFlow's 'same' with an even kernel: the odd zero row/column goes after."""
    return _sliding(
        "padding_same_even_kernel",
        "'same' with an even kernel (TensorFlow): the extra zeros go after (bottom, right)",
        "A 2×2 kernel needs 1 zero per axis: 0 before, 1 after.",
        X5[:4, :4],
        f64([[1, 2], [-1, 1]]),
        padding="same",
    )


def padding_same_stride() -> FigureData:
    """TensorFlow's 'same' with stride 2: output ceil(n / 2), odd padding after."""
    return _sliding(
        "padding_same_stride",
        "'same' with stride 2 (TensorFlow): 6×6 → ceil(6 / 2) = 3×3, the extra zero after",
        "Total padding (3 \u2212 1)\u00b72 + 3 \u2212 6 = 1 per axis: 0 before, 1 after.",
        X6,
        K3,
        padding="same",
        stride=2,
    )


def strides() -> FigureData:
    """Stride 2: the window jumps two cells, 5×5 → 2×2."""
    return _sliding(
        "strides",
        "stride 2: the kernel jumps 2 cells at a time (5×5 → 2×2)",
        "Output size floor((n \u2212 k) / s) + 1 = floor(2 / 2) + 1 = 2 per axis.",
        X5,
        K3,
        stride=2,
    )


def dilation() -> FigureData:
    """Dilation 2: a 3×3 kernel with holes covers 5×5, 7×7 → 3×3."""
    x = f64(np.arange(49).reshape(7, 7) * 3 % 4)
    return _sliding(
        "dilation",
        "dilation 2: the 3×3 kernel skips every other cell and covers 5×5 (7×7 → 3×3)",
        "Effective size (k \u2212 1)\u00b7d + 1 = 5: wider view, still 9 weights.",
        x,
        K3,
        dilation=2,
    )


def stride_vs_pooling() -> FigureData:
    """A stride-2 convolution keeps every other output; max pooling keeps each block's max."""
    x = X6
    dense = ops.correlate(x, K3)  # (4, 4)
    strided = ops.correlate(x, K3, stride=2)  # (2, 2)
    pooled = ops.max_pool(dense[None, :, :, None], 2)[0, :, :, 0]
    grids = {
        "input": x,
        "kernel": K3,
        "stride_1_output": dense,
        "stride_2_output": strided,
        "max_pooled": pooled,
    }
    blocks = (2, 2)
    rows = (
        (
            Panel("x", "input", "input (6×6)", "input"),
            Panel("k", "kernel", "kernel (3×3)", "kernel", op="\u22c6"),
            Panel("d", "stride_1_output", "output, stride 1", "output", op="=", blocks=blocks),
            Panel("s", "stride_2_output", "output, stride 2", "output", op="keep\n[::2, ::2]"),
        ),
        (
            None,
            None,
            Panel("d2", "stride_1_output", "output, stride 1", "output", blocks=blocks),
            Panel("p", "max_pooled", "output, max pooled 2×2", "output", op="max of\neach 2×2"),
        ),
    )
    block_codes = PALETTE0 + np.kron(np.arange(4).reshape(2, 2), np.ones((2, 2), dtype=np.int64))
    kept = np.zeros((4, 4), dtype=np.int64)
    kept[::2, ::2] = block_codes[::2, ::2]
    own = PALETTE0 + np.arange(4).reshape(2, 2)
    still = {"d": kept, "s": own, "d2": block_codes, "p": own}
    frames = []
    for o in np.ndindex(2, 2):
        window = window_mask(x.shape, o, K3.shape, stride=2)
        block = dense[2 * o[0] : 2 * o[0] + 2, 2 * o[1] : 2 * o[1] + 2]
        hl: dict[str, Mask] = {
            "x": window,
            "k": full_mask((3, 3)),
            "d": cell_mask((4, 4), (2 * o[0], 2 * o[1])),
            "s": cell_mask((2, 2), o),
            "d2": window_mask((4, 4), o, (2, 2), stride=2),
            "p": cell_mask((2, 2), o),
        }
        text = (
            f"stride 2: output{index_text(o)} = stride-1 output{index_text((2 * o[0], 2 * o[1]))}"
            f" = {num(strided[o])};  max pooling: max({', '.join(num(v) for v in block.ravel())})"
            f" = {num(pooled[o])}"
        )
        frames.append(Frame(text, hl))
    frames.append(Frame("Both halve the size; only pooling looks at every value.", still))
    return FigureData(
        name="stride_vs_pooling",
        title="Stride 2 against stride 1 + max pooling 2×2: both downsample 4×4 → 2×2",
        caption=(
            "A stride-2 convolution equals the stride-1 output with every other row and column "
            "kept (same colour); max pooling keeps the largest value of each 2×2 block instead."
        ),
        grids=grids,
        rows=rows,
        highlights=still,
        frames=tuple(frames),
    )
