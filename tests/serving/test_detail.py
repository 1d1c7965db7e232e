"""The detail API: each unit's weighted sum equals the network's own feature map (torch), its
window equals the torch activations feeding the layer, and its receptive field equals the
autograd support of the unit."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from cnnlab.models import ModelDescription, Network, parse_compact
from cnnlab.models import layers as L
from cnnlab.serving.predict import Predictor
from cnnlab.serving.serve import create_app

LOCAL = "http://127.0.0.1"
# even kernel + stride 2 + same, dilation, same max-pooling of 3 by 2, even kernel + same
OWN = (
    "Input(28,28,1) Conv2D(4,4,2,same,relu,name=c1) "
    "Conv2D(6,3,dilation_rate=2,activation=tanh,name=c2) MaxPooling2D(3,2,same,name=pool) "
    "Conv2D(5,2,same,name=c3) Flatten(name=flat) Dense(10,softmax,name=out)"
)


def seven_png() -> bytes:
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).line([(40, 40), (160, 40), (90, 180)], fill=0, width=20)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


PNG = seven_png()


def own_predictor() -> Predictor:
    torch.manual_seed(1)
    model = Network(parse_compact(OWN, "mine"))
    with torch.no_grad():  # biases too, so that they show in the sum
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    return Predictor(model)


@pytest.fixture(scope="module", params=["case1", "own"])
def site(request: pytest.FixtureRequest, tiny_run: dict[str, Path]) -> Iterator[Any]:
    """(predictor, client) for a trained case1 run and an own network of three conv layers."""
    predictor = Predictor.from_run(tiny_run["case1"]) if request.param == "case1" else None
    predictor = predictor or own_predictor()
    app = create_app(predictor)  # with the detail and mechanism routes
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as client:
        yield predictor, client


def ask(client: TestClient, body: bytes = PNG, **params: Any) -> Any:
    return client.post(
        "/api/detail", params=params, content=body, headers={"content-type": "image/png"}
    )


def torch_activations(model: Network, x: torch.Tensor, upto: str) -> dict[str, torch.Tensor]:
    """Every child's output (channels first) up to and including ``upto``."""
    out = {}
    for name, module in model.named_children():
        x = module(x)
        out[name] = x
        if name == upto:
            break
    return out


def units(predictor: Predictor) -> list[tuple[str, int, int, int]]:
    """Corners (padding for same layers), the centre and a few random units of every map."""
    rng = np.random.default_rng(0)
    out = []
    for name, info in predictor.feature_layers.items():
        h, w, c = info.out_shape
        out += [(name, 0, 0, 0), (name, c - 1, h - 1, w - 1), (name, c // 2, h // 2, w // 2)]
        out += [(name, int(rng.integers(c)), int(rng.integers(h)), int(rng.integers(w)))]
    return out


def test_weighted_sum_is_the_networks_feature_map(site: Any) -> None:
    predictor, client = site
    shown = predictor.predict_image(PNG, feature_maps=True)  # what /api/predict's maps show
    x = torch.from_numpy(shown.input)[None, None].double()
    model = copy.deepcopy(predictor.model).double()
    names = list(dict(model.named_children()))
    for layer, c, y, xx in units(predictor):
        d = ask(client, layer=layer, channel=c, y=y, x=xx).json()
        want = float(shown.feature_maps[layer][c, y, xx])
        assert d["value"] == pytest.approx(want, rel=1e-5, abs=1e-6), (layer, c, y, xx)
        assert d["map_value"] == pytest.approx(want, rel=1e-5, abs=1e-6)
        # the sum shown is the sum of the products shown, and products are inputs x weights
        inputs = np.array([ch["inputs"] for ch in d["channels"]])  # (C_in, kh, kw)
        weights = np.array([ch["weights"] for ch in d["channels"]])
        products = np.array([ch["products"] for ch in d["channels"]])
        np.testing.assert_allclose(products, inputs * weights, rtol=1e-12)
        np.testing.assert_allclose([ch["sum"] for ch in d["channels"]], products.sum((1, 2)))
        assert d["weighted_sum"] == pytest.approx(products.sum(), rel=1e-12, abs=1e-12)
        assert d["pre_activation"] == pytest.approx(d["weighted_sum"] + d["bias"], abs=1e-12)
        # the weights and bias are the torch layer's; the window is the torch input to it
        conv = dict(model.named_children())[layer]
        np.testing.assert_allclose(weights, conv.weight[c].detach().numpy(), rtol=1e-6)
        assert d["bias"] == pytest.approx(float(conv.bias[c].detach()), rel=1e-6)
        index = names.index(layer)
        with torch.no_grad():
            acts = torch_activations(model, x, layer)
        source = x[0] if index == 0 else acts[names[index - 1]][0]  # (C_in, H, W)
        assert d["source"] == ("input" if index == 0 else names[index - 1])
        for r_i, r in enumerate(d["rows"]):
            for c_i, col in enumerate(d["cols"]):
                inside = 0 <= r < source.shape[1] and 0 <= col < source.shape[2]
                want_in = source[:, r, col].numpy() if inside else np.zeros(source.shape[0])
                np.testing.assert_allclose(inputs[:, r_i, c_i], want_in, rtol=1e-5, atol=1e-6)


def autograd_support(model: Network, x: torch.Tensor, layer: str, unit: tuple[int, ...]) -> Any:
    x = x.clone().requires_grad_(True)
    c, y, xx = unit
    torch_activations(model, x, layer)[layer][0, c, y, xx].backward()
    return (x.grad[0, 0] != 0).numpy()  # type: ignore[index]


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def test_receptive_field_is_the_autograd_support(site: Any) -> None:
    """With positive weights and biases, average pooling in place of max and a positive input,
    nothing cancels and no path is switched off: the gradient reaches exactly the input
    pixels that can affect the unit. With the real weights on a digit it reaches fewer."""
    predictor, client = site
    desc = predictor.description
    avg = tuple(replace(x, kind="average") if isinstance(x, L.Pool) else x for x in desc.layers)
    structural = Network(ModelDescription(desc.name, desc.input_shape, avg)).double()
    structural.load_state_dict(predictor.model.state_dict())
    with torch.no_grad():
        for name, p in structural.named_parameters():
            p.copy_(torch.full_like(p, 0.1) if name.endswith("bias") else p.abs() + 0.01)
    gen = torch.Generator().manual_seed(0)
    positive = torch.rand(1, 1, 28, 28, dtype=torch.float64, generator=gen) + 0.5
    real = copy.deepcopy(predictor.model).double()
    digit = torch.from_numpy(predictor.predict_image(PNG).input)[None, None].double()
    for layer, c, y, x in units(predictor):
        f = ask(client, layer=layer, channel=c, y=y, x=x).json()["receptive_field"]
        rect = (f["top"], f["left"], f["bottom"], f["right"])
        support = autograd_support(structural, positive, layer, (c, y, x))
        assert bbox(support) == rect, (layer, c, y, x)
        assert support[rect[0] : rect[2] + 1, rect[1] : rect[3] + 1].all()  # no holes here
        assert [f["rows"][1] - f["rows"][0] + 1, f["cols"][1] - f["cols"][0] + 1] == f["size"]
        seen = autograd_support(real, digit, layer, (c, y, x))
        assert not (seen & ~support).any()  # the real unit sees no pixel outside its field


BAD = [
    (dict(layer="nope", channel=0, y=0, x=0), 422, "no conv layer"),
    (dict(layer="dense1", channel=0, y=0, x=0), 422, "no conv layer"),
    (dict(layer="LAYER", channel=10_000, y=0, x=0), 422, "no unit"),
    (dict(layer="LAYER", channel=0, y=99, x=0), 422, "no unit"),
    (dict(layer="LAYER", channel=0, y=0, x=-1), 422, ""),
    (dict(layer="LAYER", channel="a", y=0, x=0), 422, ""),
    (dict(layer="LAYER", channel=0, y=0, x=10**30), 422, ""),
    (dict(layer="LAYER", y=0, x=0), 422, ""),
]


@pytest.mark.parametrize("params,status,text", BAD)
def test_bad_units_are_4xx(site: Any, params: dict[str, Any], status: int, text: str) -> None:
    predictor, client = site
    first = next(iter(predictor.feature_layers))
    params = {k: first if v == "LAYER" else v for k, v in params.items()}
    r = ask(client, **params)
    assert r.status_code == status, r.text
    assert text in str(r.json()["detail"])


def test_bad_images_are_4xx(site: Any) -> None:
    predictor, client = site
    unit = dict(layer=next(iter(predictor.feature_layers)), channel=0, y=0, x=0)
    assert ask(client, b"", **unit).status_code == 400
    assert ask(client, b"not an image at all", **unit).status_code == 415
    blank = io.BytesIO()
    Image.new("L", (40, 40), 255).save(blank, format="PNG")
    r = ask(client, blank.getvalue(), **unit)
    assert r.status_code == 422 and "no digit" in r.json()["detail"]
    form = client.post("/api/detail", params=unit, files={"file": ("a.png", PNG, "image/png")})
    assert form.status_code == 415
    big = ask(client, PNG + b"\0" * (5 * 1024 * 1024), **unit)
    assert big.status_code == 413


def test_routers_join_the_digit_app(site: Any) -> None:
    _, client = site
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/detail", "/api/mechanism", "/api/predict"} <= set(paths)
    page = client.get("/mechanism")
    assert (
        page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    )
    assert 'id="digits-link"' in page.text  # back to the digit page
    assert client.get("/api/mechanism", params={"stride": 2}).json()["output_shape"] == [3, 3]
    # the digit app's body cap is an image's: the mechanism route keeps its own, smaller one
    big = client.post("/api/mechanism", content=b"[" + b"1," * 40000 + b"1]")
    assert big.status_code == 413 and "65,536" in big.json()["detail"]
    index = client.get("/").text
    assert 'src="static/detail.js"' in index and 'id="rf"' in index
