"""The page's detail view: one feature-map unit, its receptive field and its weighted sum.

``make_router(predictor)`` adds ``POST /api/detail?layer=&channel=&y=&x=``: the body is the
image, as ``POST /api/predict`` takes it raw, made the run's way (any 2-D image network,
any size and channel count). The answer is what CNN Explainer's detail view shows, for
one's own image and network: the conv layer's input window (the network's input for the
first conv, every input channel of it, the previous layer's maps for later ones, zeros in
the padding),
the kernel weights, their products summed per input channel, the bias, the activation and
the value, plus the unit's receptive field on the input. It is computed with the NumPy
engine (:mod:`cnnlab.engine.numpy_engine`) from the network's own weights; the field comes
from the layer walk (:mod:`cnnlab.analysis.layer_walk`, :mod:`cnnlab.analysis.receptive`).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from cnnlab import ops
from cnnlab.analysis.layer_walk import MapLayer, feature_map_layers
from cnnlab.data.preprocess import ImageLimits, ImageRejected
from cnnlab.engine.numpy_engine import NumpyModel, from_torch
from cnnlab.errors import CnnlabError
from cnnlab.models import layers as L
from cnnlab.serving.predict import Predictor


class ChannelSum(BaseModel):
    channel: int = Field(description="the input channel")
    inputs: list[list[float]] = Field(description="the window of that channel (0: padding)")
    weights: list[list[float]] = Field(description="the kernel's weights for that channel")
    products: list[list[float]]
    sum: float = Field(description="the products summed")


class ReceptiveField(BaseModel):
    size: list[int] = Field(description="input pixels per axis that the unit can see")
    jump: list[int] = Field(description="input pixels between neighbouring units")
    rows: list[int] = Field(description="first and last input row (may pass the border)")
    cols: list[int] = Field(description="first and last input column (may pass the border)")
    top: int = Field(description="the field clipped to the input: first row")
    left: int
    bottom: int = Field(description="last row, inclusive")
    right: int


class DetailResponse(BaseModel):
    layer: str
    label: str = Field(description="the layer, e.g. conv1 (Conv2D 3x3, relu): 16 feature maps")
    channel: int
    y: int
    x: int
    source: str = Field(description="'input', or the layer whose output the conv reads")
    source_shape: list[int] = Field(description="channels last")
    kernel_size: list[int]
    stride: list[int]
    dilation: list[int]
    pads: list[list[int]] = Field(description="(before, after) zeros per axis of the source")
    rows: list[int] = Field(description="source rows of the kernel's taps (outside: padding)")
    cols: list[int] = Field(description="source columns of the kernel's taps")
    channels: list[ChannelSum]
    weighted_sum: float = Field(description="all products, over every input channel")
    bias: float
    pre_activation: float = Field(description="weighted_sum + bias")
    activation: str
    value: float = Field(description="activation(pre_activation): the unit's value")
    map_value: float = Field(description="the unit in the layer's whole map (cnnlab.ops.conv)")
    receptive_field: ReceptiveField
    milliseconds: float


def _conv_layers(predictor: Predictor) -> dict[str, MapLayer]:
    """The 2-D conv layers whose maps the page shows, from the layer walk."""
    walk = feature_map_layers(predictor.description)
    return {
        m.name: m
        for m in walk
        # a plain convolution (a weighted sum over every input channel) with a known field
        if type(m.layer) is L.Conv
        and len(m.layer.kernel_size) == 2
        and m.field is not None
        and m.name in predictor.feature_layers
    }


def _field(m: MapLayer, y: int, x: int, shape: tuple[int, ...]) -> ReceptiveField:
    field = m.field
    assert field is not None  # the page's conv layers all have a field (_conv_layers)
    (r0, r1), (c0, c1) = ((round(a), round(b)) for a, b in field.interval((y, x)))
    h, w = shape[0], shape[1]
    return ReceptiveField(
        size=list(field.size), jump=list(field.jump), rows=[r0, r1], cols=[c0, c1],
        top=max(r0, 0), left=max(c0, 0), bottom=min(r1, h - 1), right=min(c1, w - 1),
    )  # fmt: skip


def unit_detail(
    engine: NumpyModel, m: MapLayer, image: np.ndarray, channel: int, y: int, x: int
) -> DetailResponse:
    """The detail of unit (y, x) of map ``channel`` of conv layer ``m`` for the network input
    ``image`` ((H, W, C) or (H, W) for one channel: as the network takes it, scaled)."""
    desc = engine.description
    conv = m.layer
    assert isinstance(conv, L.Conv)
    info = desc.info[m.index]
    *spatial, filters = info.out_shape
    if not (0 <= channel < filters and 0 <= y < spatial[0] and 0 <= x < spatial[1]):
        raise CnnlabError(
            f"{m.name} has {filters} maps of {spatial[0]}x{spatial[1]}: no unit "
            f"(channel {channel}, y {y}, x {x})"
        )
    source = image.reshape(1, *desc.input_shape).astype(engine.dtype)
    name = m.source  # the layer the conv reads ("input": the image itself)
    for layer_name, out in engine.activations(source) if name != L.INPUT else ():
        if layer_name == name:
            source = out
            break
    kernel = engine.weights[conv.name]["kernel"]  # (kh, kw, C_in, filters)
    bias_arr = engine.weights[conv.name].get("bias")
    in_spatial = info.in_shape[:-1]
    pads = ops.padding_per_axis(
        in_spatial, conv.kernel_size, stride=conv.strides, padding=conv.padding,
        dilation=conv.dilation_rate,
    )  # fmt: skip
    taps = [
        [o * s - p[0] + j * d for j in range(k)]
        for o, s, p, d, k in zip(
            (y, x), conv.strides, pads, conv.dilation_rate, conv.kernel_size, strict=True
        )
    ]
    padded = np.pad(source[0], (*pads, (0, 0))).astype(np.float64)
    rows = [r + pads[0][0] for r in taps[0]]
    cols = [c + pads[1][0] for c in taps[1]]
    window = padded[np.ix_(rows, cols)]  # (kh, kw, C_in)
    weights = kernel[..., channel].astype(np.float64)  # (kh, kw, C_in)
    products = window * weights
    bias = float(bias_arr[channel]) if bias_arr is not None else 0.0
    weighted = float(products.sum())
    pre = weighted + bias
    act = conv.activation
    value = float(L.activate_numpy(np.array(pre), act))
    maps = ops.conv(
        source, kernel, bias_arr, stride=conv.strides, padding=conv.padding,
        dilation=conv.dilation_rate,
    )  # fmt: skip
    map_value = float(L.activate_numpy(maps, act)[0, y, x, channel])
    per_channel = [
        ChannelSum(
            channel=c,
            inputs=window[..., c].tolist(),
            weights=weights[..., c].tolist(),
            products=products[..., c].tolist(),
            sum=float(products[..., c].sum()),
        )
        for c in range(window.shape[-1])
    ]
    return DetailResponse(
        layer=m.name, label=m.label, channel=channel, y=y, x=x, source=name,
        source_shape=list(info.in_shape), kernel_size=list(conv.kernel_size),
        stride=list(conv.strides), dilation=list(conv.dilation_rate),
        pads=[list(p) for p in pads], rows=taps[0], cols=taps[1], channels=per_channel,
        weighted_sum=weighted, bias=bias, pre_activation=pre, activation=act, value=value,
        map_value=map_value, receptive_field=_field(m, y, x, desc.input_shape), milliseconds=0.0,
    )  # fmt: skip


async def _raw_image(request: Request, limits: ImageLimits) -> bytes:
    """The raw body, counted while it is read (413 past the limit)."""
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise HTTPException(415, "send the image itself as the body, not a multipart form")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limits.max_bytes:
            raise HTTPException(413, f"images may be up to {limits.max_bytes:,} bytes")
        chunks.append(chunk)
    if not total:
        raise HTTPException(400, "empty body: send the image (PNG, JPEG, ...)")
    return b"".join(chunks)


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "empty body"},
    413: {"description": "image over the byte or pixel limit"},
    415: {"description": "not an image, or a multipart form"},
    422: {"description": "no such layer or unit, a damaged image, or (digit runs) no digit in it"},
}


def make_router(predictor: Predictor, limits: ImageLimits | None = None) -> APIRouter:
    """The ``/api/detail`` route for ``predictor``'s network (any 2-D image network)."""
    predictor.require_images("the detail view")
    limits = limits or ImageLimits()
    engine = from_torch(predictor.model, "float32")  # the weights, converted once
    layers = _conv_layers(predictor)
    others = [n for n in predictor.feature_layers if n not in layers]
    limiter = anyio.CapacityLimiter(2)
    router = APIRouter()

    @router.post(
        "/api/detail",
        response_model=DetailResponse,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def detail(
        request: Request,
        layer: str = Query(max_length=200, description="a conv layer, as /api/model lists"),
        channel: int = Query(ge=0, lt=1 << 20, description="the feature map"),
        y: int = Query(ge=0, lt=1 << 20, description="the unit's row in the map"),
        x: int = Query(ge=0, lt=1 << 20, description="the unit's column in the map"),
        invert: bool | None = None,
    ) -> DetailResponse:
        """One unit's weighted sum and receptive field, for the image in the body."""
        if layer in others:
            kind = predictor.description.by_name[layer].layer.class_name
            raise HTTPException(
                422, f"{layer} is a {kind}: the detail view shows plain 2-D convolutions"
            )
        if layer not in layers:
            raise HTTPException(422, f"no conv layer {layer!r}; the maps are: {', '.join(layers)}")
        data = await _raw_image(request, limits)

        def work() -> DetailResponse:
            start = time.perf_counter()
            image = predictor.load(data, invert=invert, limits=limits).x
            answer = unit_detail(engine, layers[layer], image, channel, y, x)
            answer.milliseconds = round((time.perf_counter() - start) * 1000.0, 3)
            return answer

        try:
            return await anyio.to_thread.run_sync(work, limiter=limiter)
        except ImageRejected as exc:
            raise HTTPException(exc.status, str(exc)) from None
        except CnnlabError as exc:
            raise HTTPException(422, str(exc)) from None

    return router
