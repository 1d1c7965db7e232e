"""The page's API for image networks trained on folders: uploads, class names, feature maps,
the detail view on a colour input, and hostile uploads.

References: the loaded PyTorch module on ``load_image_bytes``' pixels scaled by hand (the
probabilities), and a float64 NumPy computation of one conv unit from the module's own
weights (the detail view).
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_runs import CLASSES, decoding, encoded, make_folder, picture, train_run
from image_runs import reference as ref_probs
from PIL import Image
from starlette.exceptions import StarletteDeprecationWarning

from cnnlab.data import load_image_bytes
from cnnlab.data.preprocess import ImageLimits
from cnnlab.serving.predict import Predictor
from cnnlab.serving.serve import create_app
from cnnlab.train import checkpoint

from .test_serve import bomb_png

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

LIMITS = ImageLimits(max_bytes=200_000, max_pixels=1_000_000)
LOCAL = "http://localhost"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """{kind: (run folder, test client)} for the RGB and the grey run."""
    root = tmp_path_factory.mktemp("served")
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        clients = []
        for kind, mode in (("rgb", "RGB"), ("grey", "L")):
            run = train_run(kind, make_folder(root / kind, mode), root / f"run-{kind}", root / "c")
            c = TestClient(create_app(run, LIMITS), base_url=LOCAL, raise_server_exceptions=False)
            clients.append(c.__enter__())
            out[kind] = (run, clients[-1])
        yield out
        for c in clients:
            c.__exit__(None, None, None)


def upload(client: TestClient, body: bytes, ctype: str = "image/png", **params: str) -> Any:
    return client.post("/api/predict", content=body, headers={"content-type": ctype}, params=params)


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


@pytest.mark.parametrize("kind", ["rgb", "grey"])
def test_model_and_page(served: dict[str, Any], kind: str) -> None:
    _, client = served[kind]
    info = client.get("/api/model").json()
    shape = [20, 24, 3] if kind == "rgb" else [28, 28, 1]
    assert info["input_shape"] == shape and info["classes"] == 3
    assert info["class_names"] == CLASSES and info["drawing"] is False
    assert info["preprocessing"] == (
        "20x24 RGB, bilinear, stretch" if kind == "rgb" else "28x28 grey, nearest, crop"
    )
    assert "divided by 255" in info["input_scale"]
    assert [f["layer"] for f in info["feature_maps"]] == ["c1", "c2"]
    page = client.get("/").text
    assert "<canvas" not in page and 'id="clear"' not in page  # no drawing for these
    assert 'id="drop"' in page and 'id="file"' in page and "classify an image" in page


@pytest.mark.parametrize("kind", ["rgb", "grey"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_upload_names_the_class(served: dict[str, Any], kind: str, fmt: str) -> None:
    run, client = served[kind]
    body = encoded(picture("ring", (70, 41), 5), fmt)  # a colour photo, any size
    r = upload(client, body, f"image/{fmt.lower()}")
    assert r.status_code == 200, r.text
    data = r.json()
    pixels = load_image_bytes(body, **decoding(kind))
    want = ref_probs(run, pixels[None], 255.0)[0]
    np.testing.assert_allclose(data["probabilities"], want, atol=1e-5)
    k = int(want.argmax())
    assert data["class_index"] == data["digit"] == k and data["label"] == CLASSES[k]
    order = np.argsort(-want)
    assert [t["label"] for t in data["top"]] == [CLASSES[i] for i in order]
    assert [t["index"] for t in data["top"]] == list(order) and data["inverted"] is False
    seen = decode_data_url(data["input_png"])
    assert seen.mode == ("RGB" if kind == "rgb" else "L")
    np.testing.assert_array_equal(np.asarray(seen).reshape(pixels.shape), pixels)
    maps = {g["layer"]: (g["channels"], g["height"], g["width"]) for g in data["feature_maps"]}
    assert maps == ({"c1": (4, 18, 22), "c2": (6, 9, 11)} if kind == "rgb"
                    else {"c1": (4, 26, 26), "c2": (6, 7, 7)})  # fmt: skip
    form = client.post("/api/predict", files={"file": ("ring.jpg", body, "image/jpeg")})
    assert form.status_code == 200 and form.json()["probabilities"] == data["probabilities"]
    ignored = upload(client, body, invert="true")  # invert is for digit runs: not used
    assert ignored.json()["probabilities"] == data["probabilities"]
    blank = upload(client, encoded(Image.new("RGB", (50, 50), "white")))
    assert blank.status_code == 200  # a blank image is an image: no digit is needed


def conv_unit(x: np.ndarray, kernel: np.ndarray, bias: float, y: int, xx: int) -> float:
    """A 'valid', stride-1 convolution's pre-activation at (y, xx), in float64:
    x (H, W, C_in), kernel (kh, kw, C_in)."""
    kh, kw, _ = kernel.shape
    return float((x[y : y + kh, xx : xx + kw] * kernel).sum() + bias)


def test_detail_on_a_colour_input(served: dict[str, Any]) -> None:
    run, client = served["rgb"]
    body = encoded(picture("bar 10", (48, 40), 11))
    x = load_image_bytes(body, **decoding("rgb")).astype(np.float64) / 255  # (20, 24, 3)
    model, _ = checkpoint.load_model(run)
    sd = {k: v.double().numpy() for k, v in model.state_dict().items()}
    kernel = np.transpose(sd["c1.weight"], (2, 3, 1, 0))  # (3, 3, C_in, filters)
    for c, y, xx in [(0, 0, 0), (3, 17, 21), (2, 9, 5)]:
        d = client.post(
            "/api/detail", params=dict(layer="c1", channel=c, y=y, x=xx), content=body,
            headers={"content-type": "image/png"},
        ).json()  # fmt: skip
        pre = conv_unit(x, kernel[..., c], float(sd["c1.bias"][c]), y, xx)
        assert d["pre_activation"] == pytest.approx(pre, abs=1e-5)
        assert d["value"] == pytest.approx(max(pre, 0.0), abs=1e-5)
        assert d["source"] == "input" and d["source_shape"] == [20, 24, 3]
        assert [ch["channel"] for ch in d["channels"]] == [0, 1, 2]  # red, green, blue
        for ch in d["channels"]:
            window = x[y : y + 3, xx : xx + 3, ch["channel"]]
            np.testing.assert_allclose(ch["inputs"], window, atol=1e-6)
            np.testing.assert_allclose(ch["weights"], kernel[..., ch["channel"], c], atol=1e-6)
            assert ch["sum"] == pytest.approx((window * kernel[..., ch["channel"], c]).sum(), 1e-5)
        f = d["receptive_field"]
        assert (f["top"], f["left"], f["bottom"], f["right"]) == (y, xx, y + 2, xx + 2)
    # c2 reads the pooled c1 maps ('same' padding): its value is the network's own map
    xt = torch.from_numpy(np.moveaxis(x, -1, 0)[None].copy())
    w = {k: torch.from_numpy(v) for k, v in sd.items()}
    with torch.no_grad():
        h = F.max_pool2d(torch.relu(F.conv2d(xt, w["c1.weight"], w["c1.bias"])), 2)
        h = torch.tanh(F.conv2d(h, w["c2.weight"], w["c2.bias"], padding=1))
    for c, y, xx in [(0, 0, 0), (5, 8, 10), (3, 4, 7)]:
        d = client.post(
            "/api/detail", params=dict(layer="c2", channel=c, y=y, x=xx), content=body,
            headers={"content-type": "image/png"},
        ).json()  # fmt: skip
        assert d["source"] == "pool" and len(d["channels"]) == 4
        assert d["value"] == pytest.approx(float(h[0, c, y, xx]), abs=1e-5)
        assert d["map_value"] == pytest.approx(d["value"], abs=1e-5)


HOSTILE = {
    "empty body": (b"", 400, "empty body"),
    "text": (b"just some words", 415, "not a PNG, JPEG"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg"/>', 415, "not a PNG, JPEG"),
    "truncated png": (encoded(picture("ring", (200, 200), 1))[:300], 422, "does not decode"),
    "bomb over pillow's limit": (bomb_png(100_000, 100_000), 413, "bomb"),
    "bomb under pillow's limit": (bomb_png(5_000, 5_000), 413, "decompression bomb"),
    "too many pixels": (encoded(Image.new("L", (1200, 1200))), 413, "limit of 1,000,000"),
    "too many bytes": (b"\x89PNG" + bytes(300_000), 413, "up to 200,000 bytes"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_uploads_are_4xx(served: dict[str, Any], name: str) -> None:
    body, status, message = HOSTILE[name]
    for path in ("/api/predict", "/api/detail"):
        params = {} if path == "/api/predict" else dict(layer="c1", channel=0, y=0, x=0)
        r = upload_to(served["rgb"][1], path, body, params)
        assert r.status_code == status, (path, r.text)
        assert message in r.json()["detail"], (path, r.text)
    ok = upload(served["rgb"][1], encoded(picture("ring", (30, 30), 2)))
    assert ok.status_code == 200  # still serving


def upload_to(client: TestClient, path: str, body: bytes, params: dict[str, Any]) -> Any:
    return client.post(path, content=body, headers={"content-type": "image/png"}, params=params)


GOOD = encoded(picture("bar 2", (40, 40), 3))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(at=st.integers(0, 10_000), patch=st.binary(min_size=1, max_size=8))
def test_corrupted_uploads_never_fail_the_server(
    served: dict[str, Any], at: int, patch: bytes
) -> None:
    at %= len(GOOD)
    r = upload(served["rgb"][1], GOOD[:at] + patch + GOOD[at + len(patch) :])
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text)


def test_predictor_and_app_agree(served: dict[str, Any]) -> None:
    run, client = served["rgb"]
    body = encoded(picture("bar 10", (33, 60), 8), "JPEG")
    ref = Predictor.from_run(run).predict_image(body, feature_maps=True)
    data = upload(client, body).json()
    np.testing.assert_allclose(data["probabilities"], ref.probabilities, atol=1e-6)
    assert data["label"] == ref.label
