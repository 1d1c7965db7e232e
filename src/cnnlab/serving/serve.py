"""A small web application: draw a digit, see what the network sees and predicts.

``create_app(run_dir_or_predictor, limits, options)`` builds a FastAPI app with the digit
page (``/``), a JSON API (``POST /api/predict``, ``GET /api/model``, ``GET /api/health``,
``POST /api/detail`` for one feature-map unit: :mod:`cnnlab.serving.detail`), the
mechanism page (``/mechanism``, ``GET|POST /api/mechanism``: :mod:`cnnlab.serving.mechanism`)
and its OpenAPI schema (``/openapi.json``; no ``/docs``, whose pages load from a CDN). The
digit page needs a network with 28x28x1 inputs (drawn digits) and shows the maps of
whatever conv layers ``/api/model`` lists.

Clients are untrusted (:mod:`cnnlab.serving.guards`): every response carries security
headers, a foreign Host or Origin is refused, a body is read within a byte limit, a
deadline and a memory budget shared by all uploads, and an image's pixel count is checked
from its header before it is decoded (:func:`cnnlab.data.preprocess.open_image`).
Connections are bounded too (:mod:`cnnlab.serving.server`). Every bad request gets a 4xx
(or a 503 when busy) with a JSON ``detail`` line; the server keeps serving.
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from cnnlab import __version__
from cnnlab.data.preprocess import ImageLimits, ImageRejected, to_png
from cnnlab.errors import CnnlabError
from cnnlab.serving import detail, mechanism
from cnnlab.serving.guards import BodyLimit, ServerOptions, harden
from cnnlab.serving.predict import Prediction, Predictor
from cnnlab.serving.server import background_server, bind, raise_fd_limit, run

__all__ = ["BodyLimit", "ServerOptions", "background_server", "create_app", "describe", "serve"]

STATIC = Path(__file__).parent / "static"
MULTIPART_SLACK = 64 * 1024  # form boundaries and headers around an uploaded file
GRID_COLUMNS = 8


class FeatureMapGrid(BaseModel):
    layer: str = Field(description="the conv layer's name (its output, after its activation)")
    activation: str = Field(description="the conv layer's activation (Keras' name)")
    channels: int
    height: int = Field(description="height of one map in pixels")
    width: int = Field(description="width of one map in pixels")
    columns: int = Field(description="maps per row in the grid image")
    png: str = Field(description="data URL of a PNG grid of all maps, each scaled to its max")


class PredictResponse(BaseModel):
    digit: int = Field(description="the predicted class (the digit, for MNIST's 10 classes)")
    probabilities: list[float] = Field(description="softmax probabilities of the classes")
    inverted: bool = Field(description="whether the image was dark-on-light and was inverted")
    input_png: str = Field(description="data URL of the 28x28 PNG the network saw")
    feature_maps: list[FeatureMapGrid]
    milliseconds: float = Field(
        description="server time to decode, predict and encode the images (no queueing)"
    )


class Health(BaseModel):
    status: str
    model: str = Field(description="the network's name")
    version: str
    max_bytes: int
    max_pixels: int


class FeatureLayer(BaseModel):
    layer: str = Field(description="a conv layer, whose maps /api/predict returns")
    activation: str
    channels: int
    height: int
    width: int


class LayerShape(BaseModel):
    name: str
    class_name: str = Field(description="Keras' layer class, e.g. Conv2D")
    output_shape: list[int] = Field(description="channels last, without the batch axis")


class ModelInfo(BaseModel):
    name: str
    input_shape: list[int] = Field(description="channels last, without the batch axis")
    classes: int
    params: int
    layers: list[LayerShape]
    feature_maps: list[FeatureLayer]


class ErrorDetail(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorDetail, "description": text}
    for code, text in {
        400: "empty body or malformed form",
        413: "body over the byte limit, or image over the pixel limit",
        415: "not an image, or a format that is not supported",
        422: "damaged image, or no digit found in it",
    }.items()
}

_REQUEST_BODY = {
    "required": True,
    "description": "an image file (PNG, JPEG, GIF, BMP, WEBP, TIFF): the raw bytes, "
    "or a multipart form with the image in the field 'file'",
    "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
    },
}


def create_app(
    source: Predictor | str | Path,
    limits: ImageLimits | None = None,
    options: ServerOptions | None = None,
) -> FastAPI:
    """The web app for a run folder (its best checkpoint) or a ready Predictor."""
    predictor = source if isinstance(source, Predictor) else Predictor.from_run(Path(source))
    predictor.require_images("cnnlab serve (the draw-a-digit page)")
    limits = limits or ImageLimits()
    options = options or ServerOptions()
    model_info = describe(predictor)
    index_html = (STATIC / "index.html").read_text(encoding="utf-8")

    app = FastAPI(
        title="cnnlab digits",
        version=__version__,
        description=f"Draw or upload a digit; the CNN {predictor.name!r}, trained with cnnlab, "
        "predicts it.",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: blank offline
        redoc_url=None,
    )
    limiter = anyio.CapacityLimiter(os.cpu_count() or 1)
    app.state.predictor = predictor
    app.state.limits = limits
    app.state.server_options = options
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html)

    @app.get("/api/health", response_model=Health)
    async def health() -> Health:
        """Liveness, the model's name and the upload limits."""
        return Health(
            status="ok",
            model=predictor.name,
            version=__version__,
            max_bytes=limits.max_bytes,
            max_pixels=limits.max_pixels,
        )

    @app.get("/api/model", response_model=ModelInfo)
    async def model() -> ModelInfo:
        """The network: input shape, classes, each layer's output shape, the feature maps."""
        return model_info

    @app.post(
        "/api/predict",
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra={"requestBody": _REQUEST_BODY},
    )
    async def predict(
        request: Request, invert: bool | None = None, maps: bool = True
    ) -> PredictResponse:
        """Predict the digit in an image.

        The image is made MNIST-style first (grey, inverted if dark-on-light unless
        ``invert`` says otherwise, cropped, scaled into 20x20, centred by mass in 28x28).
        ``maps=false`` leaves out the feature maps.
        """
        data = await _image_bytes(request, limits)

        def work() -> PredictResponse:  # in a worker thread: decoding and torch are CPU-bound
            start = time.perf_counter()
            result = predictor.predict_image(data, invert=invert, limits=limits, feature_maps=maps)
            return _response(result, predictor.activations, start)

        try:
            # As many predictions at once as there are cores: more only fight over them.
            return await anyio.to_thread.run_sync(work, limiter=limiter)
        except ImageRejected as exc:
            raise HTTPException(exc.status, str(exc)) from None
        except CnnlabError as exc:
            raise HTTPException(422, str(exc)) from None

    app.include_router(detail.make_router(predictor, limits))  # click a feature-map pixel
    app.include_router(mechanism.router)  # /mechanism: how a convolution slides

    # The byte cap covers a multipart form's framing around a file of max_bytes.
    app.add_middleware(
        harden,
        max_bytes=limits.max_bytes + MULTIPART_SLACK,
        detail=f"request body too large: images may be up to {limits.max_bytes:,} bytes",
        options=options,
    )
    return app


def describe(predictor: Predictor) -> ModelInfo:
    """What ``/api/model`` reports of the predictor's network."""
    desc = predictor.description
    maps = []
    for name, info in predictor.feature_layers.items():
        (h, w, c), act = info.out_shape, predictor.activations[name]
        maps.append(FeatureLayer(layer=name, activation=act, channels=c, height=h, width=w))
    layers = [
        LayerShape(name=i.layer.name, class_name=i.layer.class_name, output_shape=list(i.out_shape))
        for i in desc.info
    ]
    return ModelInfo(
        name=predictor.name,
        input_shape=list(desc.input_shape),
        classes=predictor.classes,
        params=desc.params,
        layers=layers,
        feature_maps=maps,
    )


async def _image_bytes(request: Request, limits: ImageLimits) -> bytes:
    """The image bytes: the raw body, or the 'file' part of a multipart form."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        # Starlette answers a malformed form with a 400 itself.
        form = await request.form(max_files=1, max_fields=8, max_part_size=limits.max_bytes)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, "the multipart form needs the image in a field named 'file'")
        data = await upload.read()
        await form.close()
    else:
        data = await request.body()
    if not data:
        raise HTTPException(400, "empty body: send an image file (PNG, JPEG, ...)")
    return data


def _response(result: Prediction, activations: dict[str, str], start: float) -> PredictResponse:
    """The JSON answer; ``start`` is when work on the request began (perf_counter)."""
    grids = [_grid(name, m, activations[name]) for name, m in result.feature_maps.items()]
    return PredictResponse(
        digit=result.digit,
        probabilities=[round(float(p), 6) for p in result.probabilities],
        inverted=bool(result.inverted),
        input_png=_data_url(to_png(result.input)),
        feature_maps=grids,
        milliseconds=round((time.perf_counter() - start) * 1000.0, 3),
    )


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _palette() -> list[int]:
    """Viridis in entries 0-254 (dark = 0), white in 255 for the gaps between maps."""
    from matplotlib import colormaps

    lut = colormaps["viridis"](np.linspace(0.0, 1.0, 255))[:, :3]  # (255, 3) floats
    rgb = np.rint(lut * 255).astype(np.uint8).tolist()
    return [v for colour in rgb for v in colour] + [255, 255, 255]


_PALETTE = _palette()
_GAP = 255


def _grid(name: str, maps: np.ndarray, activation: str) -> FeatureMapGrid:
    """(C, H, W) activations -> one PNG grid, each map scaled to its own max (0 = dark).

    A palette PNG: one byte per pixel encodes 3x faster and smaller than RGB.
    """
    c, h, w = maps.shape
    cols = min(GRID_COLUMNS, c)
    rows = math.ceil(c / cols)
    peak = maps.reshape(c, -1).max(axis=1)  # (C,)
    scaled = maps / np.where(peak > 0, peak, 1.0)[:, None, None]
    levels = np.clip(np.rint(scaled * (_GAP - 1)), 0, _GAP - 1).astype(np.uint8)  # (C, H, W)
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), _GAP, dtype=np.uint8)
    for k in range(c):
        r, q = divmod(k, cols)
        grid[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = levels[k]
    img = Image.fromarray(grid)
    img.putpalette(_PALETTE)  # "L" becomes "P": the levels index the palette
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return FeatureMapGrid(
        layer=name,
        activation=activation,
        channels=c,
        height=h,
        width=w,
        columns=cols,
        png=_data_url(buf.getvalue()),
    )


def serve(
    source: Predictor | str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ImageLimits | None = None,
    options: ServerOptions | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the app with uvicorn until interrupted; ``on_ready(url)`` once it listens.

    The port is bound before uvicorn starts: a busy port or a bad host is a CnnlabError.
    Torch runs one thread per request: a 28x28 image is far too small to gain from
    splitting one convolution over cores, and concurrent requests already use them all
    (one noisy benchmarks/load_serve.py run each, 16 clients on 2 shared cores: the
    server's p50 time per request was 18 ms with torch's default 2 threads, 9 ms with 1).
    """
    import torch

    options = replace(options or ServerOptions(), bound_host=host)
    raise_fd_limit()
    socks = bind(host, port)
    try:
        app = create_app(source, limits, options)
        torch.set_num_threads(1)
        bound = socks[0].getsockname()[1]
        if on_ready is not None:
            on_ready(f"http://{host}:{bound}/" if ":" not in host else f"http://[{host}]:{bound}/")
        run(app, socks)
    finally:
        for sock in socks:
            sock.close()
