"""The mechanism page: one convolution (and pooling) on small grids, every number from cnnlab.ops.

``router`` serves the page (``GET /mechanism``) and a JSON API, ``POST /api/mechanism``
(a JSON body, which may carry one's own input and kernel) or ``GET /api/mechanism`` (query
parameters, the generated grids). The grids are a small deterministic integer input and
kernel (from ``seed``), or the caller's, in 1-D or 2-D; sizes are bounded so that no
request is expensive. ``operation`` picks cross-correlation (⋆, what CNN layers compute, the
default) or true convolution (∗, the kernel flipped). The answer holds the input, the
zero-padded input, the kernel and the weights the window's taps meet (flipped for ∗), the
output of :func:`cnnlab.ops.correlate` or :func:`cnnlab.ops.convolve`, the pooled output of
:func:`cnnlab.ops.max_pool` or :func:`cnnlab.ops.avg_pool`, the output-size formula
evaluated for the values, and each output cell's window. Bad parameters get a 422 with a
``detail``, never a 500.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cnnlab import __version__, ops
from cnnlab.serving.guards import ServerOptions, harden

STATIC = Path(__file__).parent / "static"
MAX_INPUT, MAX_KERNEL, MAX_STRIDE, MAX_DILATION, MAX_POOL = 16, 7, 4, 3, 4
MAX_BODY = 64 * 1024  # bytes: the largest request is a 16x16 input and a 7x7 kernel
Value = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
Grid = list[float] | list[list[float]]


class MechanismParams(BaseModel):
    """The geometry: sizes, padding, stride, dilation and pooling (query or JSON)."""

    model_config = ConfigDict(extra="forbid")

    dims: int = Field(2, ge=1, le=2, description="1 (a sequence) or 2 (an image)")
    input_size: int = Field(7, ge=1, le=MAX_INPUT, description="input length per axis")
    kernel_size: int = Field(3, ge=1, le=MAX_KERNEL, description="kernel taps per axis")
    padding: Literal["valid", "same", "full"] = Field(
        "valid", description="same: TensorFlow's rule, the odd zero after"
    )
    stride: int = Field(1, ge=1, le=MAX_STRIDE)
    dilation: int = Field(1, ge=1, le=MAX_DILATION)
    pool: Literal["none", "max", "avg"] = Field("none", description="pooling of the output")
    pool_size: int = Field(2, ge=1, le=MAX_POOL)
    pool_stride: int | None = Field(None, ge=1, le=MAX_POOL, description="default: pool_size")
    pool_padding: Literal["valid", "same"] = "valid"
    seed: int = Field(0, ge=0, le=9999, description="which generated integers")
    operation: Literal["correlation", "convolution"] = Field(
        "correlation",
        description="correlation (⋆, as CNN layers compute) or convolution (∗, kernel flipped)",
    )


class MechanismRequest(MechanismParams):
    """The geometry plus, optionally, one's own input and kernel (their shapes win)."""

    input: list[Value] | list[list[Value]] | None = None
    kernel: list[Value] | list[list[Value]] | None = None

    @model_validator(mode="after")
    def _check_grids(self) -> MechanismRequest:
        for name, grid, limit in (
            ("input", self.input, MAX_INPUT),
            ("kernel", self.kernel, MAX_KERNEL),
        ):
            if grid is not None:
                _grid_shape(grid, self.dims, name, limit)
        return self


class AxisFormula(BaseModel):
    axis: str = Field(description="length (1-D), height or width")
    n: int
    k: int
    stride: int
    dilation: int
    pad_before: int
    pad_after: int
    size: int = Field(description="output length along this axis, from cnnlab.ops")
    padding_text: str = Field(description="where the padding comes from, evaluated")
    general: str = Field(description="the formula in symbols")
    evaluated: str = Field(description="the formula with the values, ending in = size")


class Pooled(BaseModel):
    kind: Literal["max", "avg"]
    size: list[int]
    stride: list[int]
    pads: list[list[int]]
    output: Grid = Field(description="the pooled output")
    formula: list[AxisFormula]
    windows: list[list[list[int]]] = Field(
        description="per pooled cell (row-major), per axis: the output indices it pools "
        "(real cells only: padding never counts)"
    )


class MechanismResponse(BaseModel):
    dims: int
    operation: Literal["correlation", "convolution"]
    input: Grid
    padded_input: Grid = Field(description="the input inside its zero padding")
    pads: list[list[int]] = Field(description="(before, after) zeros per axis")
    kernel: Grid
    window_kernel: Grid = Field(
        description="the weights the window's taps meet, in order: the kernel for "
        "correlation, the kernel flipped along every axis for convolution"
    )
    output: Grid = Field(
        description="cnnlab.ops.correlate(input, kernel, ...) or cnnlab.ops.convolve(...)"
    )
    output_shape: list[int]
    effective_kernel: list[int] = Field(description="d * (k - 1) + 1 per axis")
    stride: int
    dilation: int
    formula: list[AxisFormula]
    windows: list[list[list[int]]] = Field(
        description="per output cell (row-major), per axis: the padded-input indices of "
        "the kernel's taps; cell (i, j) reads padded_input[rows] x [cols] times window_kernel"
    )
    pooled: Pooled | None = None


def _grid_shape(grid: list[Any], dims: int, name: str, limit: int) -> tuple[int, ...]:
    """The shape of a nested list of numbers; ValueError (a 422) unless it is a fit grid."""
    nested = [isinstance(v, list) for v in grid]
    if dims == 1 and any(nested):
        raise ValueError(f"{name} must be a flat list of numbers for dims=1")
    if dims == 2 and not all(nested):
        raise ValueError(f"{name} must be a list of rows (lists of numbers) for dims=2")
    shape: tuple[int, ...] = (len(grid),)
    if dims == 2:
        shape = (len(grid), len(grid[0]) if grid else 0)
        if any(len(row) != shape[1] for row in grid):
            raise ValueError(f"{name} rows must all have the same length")
    if not all(1 <= s <= limit for s in shape):
        raise ValueError(f"{name} must have 1 to {limit} entries per axis, got shape {shape}")
    return shape


def make_grids(p: MechanismRequest) -> tuple[np.ndarray, np.ndarray]:
    """The input and kernel: the caller's, or small integers drawn from ``seed``."""
    rng = np.random.default_rng(p.seed)
    x = rng.integers(0, 4, (p.input_size,) * p.dims).astype(np.float64)
    k = rng.integers(-1, 3, (p.kernel_size,) * p.dims).astype(np.float64)
    if not k.any():
        k.flat[k.size // 2] = 1.0
    if p.input is not None:
        x = np.asarray(p.input, dtype=np.float64)
    if p.kernel is not None:
        k = np.asarray(p.kernel, dtype=np.float64)
    return x, k


def _axis_names(dims: int) -> tuple[str, ...]:
    return ("length",) if dims == 1 else ("height", "width")


def conv_formula(axis: str, n: int, k: int, s: int, d: int, padding: str) -> AxisFormula:
    """The output length along one axis, in symbols and evaluated; the value from cnnlab.ops."""
    before, after = ops.padding_amounts(n, k, stride=s, padding=padding, dilation=d)
    size = ops.output_size(n, k, stride=s, padding=padding, dilation=d)
    eff = ops.effective_kernel_size(k, d)
    floor = "⌊(n + p_before + p_after − d·(k − 1) − 1) / s⌋ + 1"
    general, evaluated = (
        floor,
        (
            f"⌊({n} + {before} + {after} − {d}·({k} − 1) − 1) / {s}⌋ + 1"
            f" = ⌊{n + before + after - eff} / {s}⌋ + 1 = {(n + before + after - eff) // s + 1}"
        ),
    )
    if padding == "valid":
        pad_text = "valid: no padding, p_before = p_after = 0"
    elif padding == "full":
        pad_text = f"full: p = d·(k − 1) = {d}·({k} − 1) = {eff - 1} zeros on each side"
    else:
        total = before + after
        pad_text = (
            f"same: total p = max((o − 1)·s + d·(k − 1) + 1 − n, 0) = "
            f"max({size - 1}·{s} + {eff} − {n}, 0) = {total}: {before} before, {after} after"
            + (" (the odd zero goes after)" if total % 2 else "")
        )
        general = "⌈n / s⌉"
        evaluated = f"⌈{n} / {s}⌉ = {-(-n // s)}; with the padding, {evaluated}"
    return AxisFormula(
        axis=axis, n=n, k=k, stride=s, dilation=d, pad_before=before, pad_after=after,
        size=size, padding_text=pad_text, general=general, evaluated=evaluated,
    )  # fmt: skip


def pool_formula(axis: str, m: int, size: int, s: int, padding: str) -> AxisFormula:
    """The pooled length along one axis (its input is the conv output, length ``m``)."""
    before, after = ops.padding_amounts(m, size, stride=s, padding=padding)
    out = ops.output_size(m, size, stride=s, padding=padding)
    if padding == "same":
        pad_text = f"same: {before} before, {after} after; padded cells never count"
        general, evaluated = "⌈n / s⌉", f"⌈{m} / {s}⌉ = {-(-m // s)}"
    else:
        pad_text = "valid: windows lie inside the output"
        general, evaluated = "⌊(n − k) / s⌋ + 1", f"⌊({m} − {size}) / {s}⌋ + 1 = {out}"
    return AxisFormula(
        axis=axis, n=m, k=size, stride=s, dilation=1, pad_before=before, pad_after=after,
        size=out, padding_text=pad_text, general=general, evaluated=evaluated,
    )  # fmt: skip


def _cells(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in idx) for idx in np.ndindex(*shape)]


def compute(p: MechanismRequest) -> MechanismResponse:
    """Every grid and formula of the page; ValueError (from cnnlab.ops) when they do not fit."""
    x, k = make_grids(p)
    s, d = p.stride, p.dilation
    pads = ops.padding_per_axis(x.shape, k.shape, stride=s, padding=p.padding, dilation=d)
    for n, kk, (before, after) in zip(x.shape, k.shape, pads, strict=True):
        if n + before + after < ops.effective_kernel_size(kk, d):
            raise ValueError(
                f"the kernel spans {ops.effective_kernel_size(kk, d)} cells (k={kk}, "
                f"dilation={d}) but the padded input only {n + before + after}: "
                "choose a smaller kernel or dilation, a larger input, or padding same/full"
            )
    op = ops.convolve if p.operation == "convolution" else ops.correlate
    y = op(x, k, stride=s, padding=p.padding, dilation=d)
    names = _axis_names(p.dims)
    formula = [
        conv_formula(a, n, kk, s, d, p.padding)
        for a, n, kk in zip(names, x.shape, k.shape, strict=True)
    ]
    windows = [
        [[o * s + j * d for j in range(kk)] for o, kk in zip(cell, k.shape, strict=True)]
        for cell in _cells(y.shape)
    ]
    pooled = None
    if p.pool != "none":
        steps = p.pool_stride or p.pool_size
        if p.pool_padding == "valid" and min(y.shape) < p.pool_size:
            raise ValueError(
                f"the pooling window ({p.pool_size}) is larger than the output "
                f"({'x'.join(map(str, y.shape))}): choose a smaller window or same pooling"
            )
        fn = ops.max_pool if p.pool == "max" else ops.avg_pool
        z = np.asarray(fn(y[None, ..., None], p.pool_size, strides=steps, padding=p.pool_padding))
        pool_pads = ops.padding_per_axis(
            y.shape, (p.pool_size,) * p.dims, stride=steps, padding=p.pool_padding
        )
        z = z[0, ..., 0]
        pool_windows = [
            [
                list(range(max(o * steps - b, 0), min(o * steps - b + p.pool_size, m)))
                for o, (b, _), m in zip(cell, pool_pads, y.shape, strict=True)
            ]
            for cell in _cells(z.shape)
        ]
        pooled = Pooled(
            kind=p.pool,
            size=[p.pool_size] * p.dims,
            stride=[steps] * p.dims,
            pads=[list(pp) for pp in pool_pads],
            output=z.tolist(),
            formula=[
                pool_formula(a, m, p.pool_size, steps, p.pool_padding)
                for a, m in zip(names, y.shape, strict=True)
            ],
            windows=pool_windows,
        )
    return MechanismResponse(
        dims=p.dims,
        operation=p.operation,
        input=x.tolist(),
        padded_input=np.pad(x, pads).tolist(),
        pads=[list(pp) for pp in pads],
        kernel=k.tolist(),
        # convolve(x, k) is correlate(x, flip(k)): the flipped kernel is what each window meets
        window_kernel=(np.flip(k) if p.operation == "convolution" else k).tolist(),
        output=y.tolist(),
        output_shape=list(y.shape),
        effective_kernel=[ops.effective_kernel_size(kk, d) for kk in k.shape],
        stride=s,
        dilation=d,
        formula=formula,
        windows=windows,
        pooled=pooled,
    )


def _answer(p: MechanismRequest) -> MechanismResponse:
    try:
        return compute(p)
    except ValueError as exc:  # the geometry does not fit: cnnlab.ops names the problem
        raise HTTPException(422, str(exc)) from None


router = APIRouter()


DIGITS_LINK = '<a id="digits-link" href="./">Draw a digit →</a>'


@router.get("/mechanism", response_class=HTMLResponse, include_in_schema=False)
async def mechanism_page(request: Request) -> HTMLResponse:
    html = (STATIC / "mechanism.html").read_text(encoding="utf-8")
    if getattr(request.app.state, "predictor", None) is None:  # cnnlab mechanism: no digits
        html = html.replace(DIGITS_LINK, "")
    return HTMLResponse(html)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_request(body: bytes) -> MechanismRequest:
    """Strict JSON (no NaN or Infinity) validated as a request; HTTPException 422 otherwise.

    Parsed here rather than by FastAPI, whose error answer would echo a NaN it cannot encode.
    """
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(422, f"the body is not valid JSON ({exc})") from None
    try:
        return MechanismRequest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise HTTPException(422, [dict(e, loc=["body", *e["loc"]]) for e in errors]) from None


_BODY = {
    "required": True,
    "content": {"application/json": {"schema": MechanismRequest.model_json_schema()}},
}


@router.post(
    "/api/mechanism",
    response_model=MechanismResponse,
    tags=["mechanism"],
    openapi_extra={"requestBody": _BODY},
)
async def mechanism_post(request: Request) -> MechanismResponse:
    """One convolution (and pooling) on small grids, computed by cnnlab.ops."""
    body = await request.body()  # the server's guard has bounded it already (413)
    if len(body) > MAX_BODY:  # under cnnlab serve, whose bound is an image's
        raise HTTPException(413, f"request body too large: at most {MAX_BODY:,} bytes")
    return _answer(parse_request(body))


@router.get("/api/mechanism", response_model=MechanismResponse, tags=["mechanism"])
def mechanism_get(params: Annotated[MechanismParams, Query()]) -> MechanismResponse:
    """As ``POST /api/mechanism``, from query parameters, on the generated grids."""
    return _answer(MechanismRequest(**params.model_dump()))


def create_app(options: ServerOptions | None = None) -> FastAPI:
    """A stand-alone app with only the mechanism page (no trained run needed).

    Guarded as ``cnnlab serve`` is (:func:`cnnlab.serving.guards.harden`): its CSP, Host and
    Origin checks, and a small body limit.
    """
    app = FastAPI(
        title="cnnlab mechanism",
        version=__version__,
        description="How a convolution slides: every number from cnnlab.ops.",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN
        redoc_url=None,
    )
    options = options or ServerOptions()
    app.state.server_options = options  # what cnnlab.serving.server's protocol reads
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("mechanism")

    app.add_middleware(
        harden,
        max_bytes=MAX_BODY,
        detail=f"request body too large: at most {MAX_BODY:,} bytes",
        options=options,
    )
    return app
