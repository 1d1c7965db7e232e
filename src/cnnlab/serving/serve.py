"""A small web application: upload, drop or draw an image, see what the network sees and predicts.

``create_app(run_dir_or_predictor, limits, options)`` builds a FastAPI app with the page
(``/``), a JSON API (``POST /api/predict``, ``GET /api/model``, ``GET /api/health``,
``POST /api/detail`` for one feature-map unit: :mod:`cnnlab.serving.detail`), the
mechanism page (``/mechanism``, ``GET|POST /api/mechanism``: :mod:`cnnlab.serving.mechanism`)
and its OpenAPI schema (``/openapi.json``; no ``/docs``, whose pages load from a CDN). The
page serves any 2-D image network (H x W x 1, 3 or 4): an uploaded or dropped image file
is made the run's way (:mod:`cnnlab.train.run_inputs`) and the answer names the classes; a
network trained on MNIST digits also gets the drawing pad. It shows the maps of whatever
conv layers ``/api/model`` lists. Series and clip networks are refused in one line.

Clients are untrusted (:mod:`cnnlab.serving.guards`): every response carries security
headers, a foreign Host or Origin is refused, a body is read within a byte limit, a
deadline and a memory budget shared by all uploads, and an image's pixel count is checked
from its header before it is decoded. Connections are bounded too
(:mod:`cnnlab.serving.server`). Every bad request gets a 4xx (or a 503 when busy) with a
JSON ``detail`` line; the server keeps serving.
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
from starlette.datastructures import UploadFile

from cnnlab import __version__
from cnnlab.data.preprocess import ImageLimits, ImageRejected
from cnnlab.errors import CnnlabError
from cnnlab.serving import detail, mechanism
from cnnlab.serving.guards import BodyLimit, ServerOptions, harden
from cnnlab.serving.predict import Prediction, Predictor
from cnnlab.serving.schemas import (
    ErrorDetail,
    FeatureLayer,
    FeatureMapGrid,
    Health,
    LayerShape,
    ModelInfo,
    PredictResponse,
    TopClass,
)
from cnnlab.serving.server import background_server, bind, raise_fd_limit, run
from cnnlab.train.run_inputs import image_png

__all__ = ["BodyLimit", "ServerOptions", "background_server", "create_app", "describe", "serve"]

STATIC = Path(__file__).parent / "static"
MULTIPART_SLACK = 64 * 1024  # form boundaries and headers around an uploaded file
GRID_COLUMNS = 8
TOP_K = 5  # classes in an answer's top list
DRAW_BLOCK = ("<!-- draw -->", "<!-- /draw -->")  # the pad's markup, left out where no drawing


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorDetail, "description": text}
    for code, text in {
        400: "empty body or malformed form",
        413: "body over the byte limit, or image over the pixel limit",
        415: "not an image, or a format that is not supported",
        422: "damaged image, or (digit runs) no digit found in it",
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
    predictor.require_images("cnnlab serve (a page for image networks)")
    limits = limits or ImageLimits()
    options = options or ServerOptions()
    model_info = describe(predictor)
    index_html = page(predictor)
    what = "Draw or upload a digit" if predictor.drawing else "Upload an image"

    app = FastAPI(
        title="cnnlab",
        version=__version__,
        description=f"{what}; the CNN {predictor.name!r}, trained with cnnlab, predicts its "
        f"class ({', '.join(predictor.class_names[:10])}"
        f"{', ...' if predictor.classes > 10 else ''}).",
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
        """The network: input shape, class names, whether it takes drawn digits, how images
        are made its inputs, each layer's output shape, the feature maps."""
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
        """Predict the class of an image.

        The image is made the run's way (``/api/model``'s ``preprocessing``): for a run
        trained on MNIST digits, MNIST-style (grey, inverted if dark-on-light unless
        ``invert`` says otherwise, cropped, scaled into 20x20, centred by mass in 28x28);
        for any other image network, decoded as its training images were (orientation,
        channels, fit, resize; ``invert`` is not used). ``maps=false`` leaves out the
        feature maps.
        """
        data = await _image_bytes(request, limits)

        def work() -> PredictResponse:  # in a worker thread: decoding and torch are CPU-bound
            start = time.perf_counter()
            result = predictor.predict_image(data, invert=invert, limits=limits, feature_maps=maps)
            return _response(predictor, result, start)

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


def page(predictor: Predictor) -> str:
    """The page's HTML: with the drawing pad for a digit run, without it otherwise."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    if predictor.drawing:
        return html.replace("__TITLE__", "draw a digit")
    start, end = DRAW_BLOCK
    while start in html:
        head, rest = html.split(start, 1)
        html = head + rest.split(end, 1)[1]
    return html.replace("__TITLE__", "classify an image")


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
        class_names=predictor.class_names,
        drawing=predictor.drawing,
        preprocessing=predictor.recipe.describe(),
        input_scale=predictor.recipe.scale.reason,
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


def _response(predictor: Predictor, result: Prediction, start: float) -> PredictResponse:
    """The JSON answer; ``start`` is when work on the request began (perf_counter)."""
    activations = predictor.activations
    grids = [_grid(name, m, activations[name]) for name, m in result.feature_maps.items()]
    p = result.probabilities
    order = np.argsort(-p, kind="stable")[:TOP_K]
    top = [
        TopClass(index=int(k), label=predictor.class_names[k], probability=round(float(p[k]), 6))
        for k in order
    ]
    return PredictResponse(
        label=result.label,
        class_index=result.class_index,
        digit=result.class_index,
        probabilities=[round(float(v), 6) for v in p],
        top=top,
        inverted=bool(result.inverted),
        input_png=_data_url(image_png(result.input)),
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
