"""The web app's JSON API: predictions, the page, OpenAPI, and every kind of bad request.

Bad requests must get a 4xx with a JSON ``detail`` line, never a 500, and the server
must answer the next good request as before.
"""

from __future__ import annotations

import base64
import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from starlette.exceptions import StarletteDeprecationWarning

from cnnlab.data import Splits
from cnnlab.data.preprocess import ImageLimits, to_png
from cnnlab.errors import CnnlabError
from cnnlab.models import parse_compact
from cnnlab.serving.predict import Predictor
from cnnlab.serving.serve import background_server, create_app

with warnings.catch_warnings():  # starlette would like httpx2; httpx is what we pin
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

LIMITS = ImageLimits(max_bytes=200_000, max_pixels=1_000_000)
LOCAL = "http://localhost"  # the server answers to localhost names only (DNS rebinding)
# A user's own network: three conv layers, two activations and one without.
OWN = (
    "Input(28,28,1) Conv2D(6,3,relu,name=c1) Conv2D(8,3,2,same,tanh,name=c2) "
    "MaxPooling2D(2,name=pool) Conv2D(12,3,name=c3) GlobalMaxPooling2D(name=gmp) "
    "Dense(10,softmax,name=out)"
)


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def drawn_seven(size: int = 280) -> bytes:
    img = Image.new("L", (size, size), 255)
    s = size / 280
    ImageDraw.Draw(img).line([(80 * s, 60 * s), (200 * s, 60 * s), (120 * s, 230 * s)], 0, 20)
    return png_bytes(img)


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming width x height with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 10_000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def predictor(tiny_run: dict[str, Path]) -> Predictor:
    return Predictor.from_run(tiny_run["case1"])


@pytest.fixture(scope="module")
def own_run(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> Path:
    """One epoch of the user's own network (OWN) on the synthetic digits."""
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.loop import fit

    out = tmp_path_factory.mktemp("own")
    desc = parse_compact(OWN, "mine")
    fit(
        TrainConfig(model=OWN, epochs=1),
        tiny_splits,
        out,
        description=desc,
        progress=False,
        log=lambda _m: None,
    )
    return out


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    # raise_server_exceptions=False: a crash must show up as the 500 a browser would get.
    with TestClient(
        create_app(predictor, LIMITS), raise_server_exceptions=False, base_url=LOCAL
    ) as c:
        yield c


def post_image(client: TestClient | httpx.Client, body: bytes, **params: str) -> httpx.Response:
    return client.post(
        "/api/predict", content=body, headers={"content-type": "image/png"}, params=params
    )


def assert_still_serving(client: TestClient | httpx.Client) -> None:
    r = post_image(client, drawn_seven())
    assert r.status_code == 200, r.text


def test_health(client: TestClient) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "model": "case1",
        "version": r.json()["version"],
        "max_bytes": LIMITS.max_bytes,
        "max_pixels": LIMITS.max_pixels,
    }


def test_model_reports_the_layers(client: TestClient) -> None:
    info = client.get("/api/model").json()
    assert info["name"] == "case1" and info["input_shape"] == [28, 28, 1]
    assert info["classes"] == 10 and info["params"] > 0
    assert [(x["name"], x["class_name"]) for x in info["layers"]][:3] == [
        ("conv1", "Conv2D"),
        ("pool1", "MaxPooling2D"),
        ("conv2", "Conv2D"),
    ]
    assert info["layers"][0]["output_shape"] == [26, 26, 16]
    assert info["feature_maps"] == [
        {"layer": "conv1", "activation": "relu", "channels": 16, "height": 26, "width": 26},
        {"layer": "conv2", "activation": "relu", "channels": 64, "height": 11, "width": 11},
    ]


def test_own_network_with_three_conv_layers(own_run: Path) -> None:
    """The page's API follows the network: every conv layer's maps, shapes as described."""
    predictor = Predictor.from_run(own_run)
    with TestClient(
        create_app(predictor, LIMITS), raise_server_exceptions=False, base_url=LOCAL
    ) as c:
        info = c.get("/api/model").json()
        assert info["name"] == "mine"
        expected = [
            ("c1", "relu", 6, 26, 26),
            ("c2", "tanh", 8, 13, 13),
            ("c3", "linear", 12, 4, 4),
        ]
        assert [tuple(f.values()) for f in info["feature_maps"]] == expected
        assert c.get("/api/health").json()["model"] == "mine"
        r = post_image(c, drawn_seven())
        assert r.status_code == 200, r.text
        data = r.json()
        ref = predictor.predict_image(drawn_seven(), feature_maps=True)
        np.testing.assert_allclose(data["probabilities"], ref.probabilities, atol=1e-5)
        assert data["digit"] == ref.digit
        grids = [
            (g["layer"], g["activation"], g["channels"], g["height"], g["width"])
            for g in data["feature_maps"]
        ]
        assert grids == expected
        for g in data["feature_maps"]:
            img = decode_data_url(g["png"])
            rows = -(-g["channels"] // g["columns"])
            assert img.size == (g["columns"] * (g["width"] + 1) - 1, rows * (g["height"] + 1) - 1)
        assert post_image(c, b"nope").status_code == 415


def test_series_networks_are_refused(tmp_path: Path) -> None:
    from cnnlab.models import build_module
    from cnnlab.train import checkpoint, runs

    desc = parse_compact("Input(40,3) Conv1D(4,3,relu) GlobalAveragePooling1D Dense(2,softmax)")
    runs.save_torch(tmp_path / "best.pt", checkpoint.make_checkpoint(desc, build_module(desc), 0))
    with pytest.raises(CnnlabError, match=r"cnnlab serve .*takes images.*40x3 inputs, not images"):
        create_app(tmp_path)


def test_page_and_its_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text and "static/app.js" in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "api/predict" in js.text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../serve.py").status_code == 404


def test_prediction_matches_the_python_api(client: TestClient, predictor: Predictor) -> None:
    body = drawn_seven()
    r = post_image(client, body)
    assert r.status_code == 200, r.text
    data = r.json()
    ref = predictor.predict_image(body, feature_maps=True)
    assert data["digit"] == ref.digit
    np.testing.assert_allclose(data["probabilities"], ref.probabilities, atol=1e-5)
    assert data["inverted"] is True
    seen = decode_data_url(data["input_png"])
    assert seen.size == (28, 28) and seen.mode == "L"
    np.testing.assert_array_equal(
        np.asarray(seen), np.asarray(Image.open(io.BytesIO(to_png(ref.input))))
    )
    grids = {g["layer"]: g for g in data["feature_maps"]}
    assert {k: (g["channels"], g["height"], g["width"]) for k, g in grids.items()} == {
        "conv1": (16, 26, 26),
        "conv2": (64, 11, 11),
    }
    for name, g in grids.items():
        img = np.asarray(decode_data_url(g["png"]).convert("RGB"))
        rows = -(-g["channels"] // g["columns"])
        h, w = g["height"], g["width"]
        assert img.shape == (rows * (h + 1) - 1, g["columns"] * (w + 1) - 1, 3)
        maps = ref.feature_maps[name]  # (C, H, W)
        for k in range(g["channels"]):
            r0, c0 = divmod(k, g["columns"])
            tile = img[r0 * (h + 1) : r0 * (h + 1) + h, c0 * (w + 1) : c0 * (w + 1) + w]
            if maps[k].max() > 0:  # the brightest pixel of the map is the brightest of the tile
                peak = np.unravel_index(np.argmax(maps[k]), maps[k].shape)
                assert tile[peak].astype(int).sum() == tile.astype(int).sum(axis=2).max()
            else:  # a silent map is one flat colour
                assert (tile == tile[0, 0]).all()


def test_multipart_upload_and_options(client: TestClient) -> None:
    body = drawn_seven()
    raw = post_image(client, body).json()
    form = client.post("/api/predict", files={"file": ("seven.png", body, "image/png")})
    assert form.status_code == 200, form.text
    assert form.json()["probabilities"] == raw["probabilities"]
    bare = post_image(client, body, maps="false").json()
    assert bare["feature_maps"] == [] and bare["probabilities"] == raw["probabilities"]
    forced = post_image(client, body, invert="true").json()
    assert forced["inverted"] is True and forced["probabilities"] == raw["probabilities"]


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/api/predict"]["post"]
    assert set(post["requestBody"]["content"]) == {"image/*", "multipart/form-data"}
    assert {"200", "400", "413", "415", "422"} <= set(post["responses"])
    assert {p["name"] for p in post["parameters"]} == {"invert", "maps"}
    assert "PredictResponse" in spec["components"]["schemas"]
    assert "/api/health" in spec["paths"] and "/api/model" in spec["paths"]
    # Swagger UI and ReDoc would load their scripts from a CDN: switched off.
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


def big_image(side: int) -> bytes:
    return png_bytes(Image.new("L", (side, side), 255))


BAD_REQUESTS = {
    "empty body": (b"", "image/png", 400, "empty body"),
    "text": (b"just some words", "text/plain", 415, "not an image"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml", 415, "not an image"),
    "truncated png": (drawn_seven()[:300], "image/png", 422, "damaged or truncated"),
    "blank page": (big_image(64), "image/png", 422, "no digit found"),
    "bomb over pillow's limit": (bomb_png(100_000, 100_000), "image/png", 413, "too large"),
    "bomb under pillow's limit": (bomb_png(5_000, 5_000), "image/png", 413, "pixels"),
    "too many pixels": (big_image(1_200), "image/png", 413, "limit is 1,000,000"),
    "too many bytes": (b"\x89PNG" + bytes(300_000), "image/png", 413, "up to 200,000 bytes"),
    "form without file": (
        b'--xx\r\nContent-Disposition: form-data; name="other"\r\n\r\nhi\r\n--xx--\r\n',
        "multipart/form-data; boundary=xx",
        400,
        "field named 'file'",
    ),
    "garbled form": (b"\x00\x01garbage", "multipart/form-data", 400, "boundary"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_get_a_clear_4xx(client: TestClient, name: str) -> None:
    body, ctype, status, message = BAD_REQUESTS[name]
    r = client.post("/api/predict", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert_still_serving(client)


def test_bad_query_and_method(client: TestClient) -> None:
    assert post_image(client, drawn_seven(), invert="perhaps").status_code == 422
    assert client.get("/api/predict").status_code == 405
    assert_still_serving(client)


def test_streamed_body_is_cut_at_the_limit(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting can stop it
        for _ in range(1000):
            yield bytes(10_000)

    r = client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413
    assert "too large" in r.json()["detail"]
    assert_still_serving(client)


def assert_4xx_or_ok(r: httpx.Response) -> None:
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text)
    if r.status_code != 200:
        assert r.json()["detail"]


FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SMALL_SEVEN = Image.open(io.BytesIO(drawn_seven(64)))
GOOD = {"PNG": png_bytes(SMALL_SEVEN, "PNG"), "JPEG": png_bytes(SMALL_SEVEN, "JPEG")}


@FUZZ
@given(body=st.binary(max_size=2000))
def test_random_bodies_never_fail_the_server(client: TestClient, body: bytes) -> None:
    assert_4xx_or_ok(post_image(client, body))


@FUZZ
@given(
    fmt=st.sampled_from(["PNG", "JPEG"]),
    at=st.integers(0, 10_000),
    patch=st.binary(min_size=1, max_size=8),
)
def test_corrupted_images_never_fail_the_server(
    client: TestClient, fmt: str, at: int, patch: bytes
) -> None:
    """Real PNG/JPEG files with a few bytes overwritten: 200 or 4xx, never 5xx."""
    good = GOOD[fmt]
    at %= len(good)
    assert_4xx_or_ok(post_image(client, good[:at] + patch + good[at + len(patch) :]))


def test_a_real_server_keeps_serving(predictor: Predictor) -> None:
    """Over a real socket: oversized and broken uploads, then a good one, on one client."""
    with (
        background_server(create_app(predictor, LIMITS)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        assert http.get("/api/health").json()["status"] == "ok"
        assert post_image(http, bytes(5_000_000)).status_code == 413
        assert post_image(http, b"not an image").status_code == 415
        assert post_image(http, bomb_png(100_000, 100_000)).status_code == 413
        assert_still_serving(http)
