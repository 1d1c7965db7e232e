"""The mechanism API against independent references: torch and scipy in float64, explicit pads.

The references never call cnnlab: TensorFlow's ``same`` padding is re-derived here from its
definition, pooling with ``same`` is a brute-force loop over the real cells of each window.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from scipy import signal

from cnnlab.serving import mechanism

STATIC = mechanism.STATIC


@pytest.fixture(scope="module")
def client() -> TestClient:
    # raise_server_exceptions=False: a crash must show up as the 500 a browser would get
    return TestClient(
        mechanism.create_app(), base_url="http://127.0.0.1", raise_server_exceptions=False
    )


def ref_pads(n: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    """(before, after) zeros: TensorFlow's rule for same, written out from its definition."""
    eff = (k - 1) * d + 1
    if padding == "valid":
        return 0, 0
    if padding == "full":
        return eff - 1, eff - 1
    total = max((math.ceil(n / s) - 1) * s + eff - n, 0)
    return total // 2, total - total // 2  # the odd one after


def ref_conv(x: np.ndarray, k: np.ndarray, s: int, d: int, padding: str) -> np.ndarray | None:
    """torch.nn.functional.conv1d/2d in float64 on the explicitly padded input (None: no fit)."""
    pads = [ref_pads(n, kk, s, d, padding) for n, kk in zip(x.shape, k.shape, strict=True)]
    if any(
        n + b + a < (kk - 1) * d + 1 for n, kk, (b, a) in zip(x.shape, k.shape, pads, strict=True)
    ):
        return None
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad: last axis first
    xt = F.pad(torch.from_numpy(x)[None, None], flat)
    kt = torch.from_numpy(k)[None, None]
    conv = F.conv1d if x.ndim == 1 else F.conv2d
    return conv(xt, kt, stride=s, dilation=d)[0, 0].numpy()


def scipy_conv(x: np.ndarray, k: np.ndarray, s: int, d: int, padding: str) -> np.ndarray:
    """scipy.signal.correlate2d on the padded input with the dilated kernel, then strided."""
    pads = [ref_pads(n, kk, s, d, padding) for n, kk in zip(x.shape, k.shape, strict=True)]
    dilated = np.zeros([(kk - 1) * d + 1 for kk in k.shape])
    dilated[::d, ::d] = k
    full = signal.correlate2d(np.pad(x, pads), dilated, mode="valid")
    return full[::s, ::s]


def ref_pool(y: np.ndarray, kind: str, size: int, s: int, padding: str) -> np.ndarray:
    """Keras pooling by brute force: each window over its real (non-padding) cells only."""
    per_axis = []
    for m in y.shape:
        before = ref_pads(m, size, s, 1, padding)[0]
        out = math.ceil(m / s) if padding == "same" else (m - size) // s + 1
        per_axis.append(
            [range(max(o * s - before, 0), min(o * s - before + size, m)) for o in range(out)]
        )
    z = np.zeros([len(a) for a in per_axis])
    for idx in np.ndindex(*z.shape):
        window = y[np.ix_(*[list(per_axis[ax][i]) for ax, i in enumerate(idx)])]
        z[idx] = window.max() if kind == "max" else window.mean()
    return z


def get(client: TestClient, **params: Any) -> Any:
    return client.get("/api/mechanism", params=params)


CONV_CASES = [
    dict(dims=dims, input_size=n, kernel_size=k, padding=p, stride=s, dilation=d)
    for dims, n, k, p, s, d in itertools.product(
        (2,), (4, 7), (1, 2, 3, 4), ("valid", "same", "full"), (1, 2, 3), (1, 2)
    )
] + [
    dict(dims=1, input_size=n, kernel_size=k, padding=p, stride=s, dilation=d)
    for n, k, p, s, d in itertools.product(
        (5, 16), (2, 3, 7), ("valid", "same", "full"), (1, 2, 4), (1, 3)
    )
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_conv_equals_torch(client: TestClient, case: dict[str, Any]) -> None:
    s, d, padding = case["stride"], case["dilation"], case["padding"]
    r = get(client, **case, seed=7)
    body = r.json()
    x, k = mechanism.make_grids(mechanism.MechanismRequest(**case, seed=7))
    ref = ref_conv(x, k, s, d, padding)
    if ref is None:  # the dilated kernel overhangs the padded input
        assert r.status_code == 422 and "kernel spans" in body["detail"]
        return
    assert r.status_code == 200, body
    np.testing.assert_array_equal(np.array(body["input"]), x)
    np.testing.assert_array_equal(np.array(body["kernel"]), k)
    out = np.array(body["output"])
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    if case["dims"] == 2:
        np.testing.assert_allclose(out, scipy_conv(x, k, s, d, padding), rtol=1e-12, atol=1e-12)
    # the formula: padding, evaluated text and size per axis, as the reference has them
    pads = [ref_pads(n, kk, s, d, padding) for n, kk in zip(x.shape, k.shape, strict=True)]
    assert body["output_shape"] == list(ref.shape) and body["pads"] == [list(p) for p in pads]
    for f, pad, m in zip(body["formula"], pads, ref.shape, strict=True):
        assert (f["pad_before"], f["pad_after"], f["size"]) == (*pad, m)
        assert f["evaluated"][0] in "⌊⌈" and f["evaluated"].endswith(f"= {m}")
        assert ("⌈" in f["general"]) == (padding == "same")
        assert f"/ {s}⌋ + 1 = {m}" in f["evaluated"]  # same too: the floor form, with its pads
    # the padded input and every window: the taps times the kernel sum to the output cell
    padded = np.array(body["padded_input"])
    np.testing.assert_array_equal(padded, np.pad(x, pads))
    assert len(body["windows"]) == out.size
    for cell, window in zip(np.ndindex(*out.shape), body["windows"], strict=True):
        assert np.isclose((padded[np.ix_(*window)] * k).sum(), out[cell], rtol=0, atol=1e-12)


def scipy_convolve(x: np.ndarray, k: np.ndarray, s: int, d: int, padding: str) -> np.ndarray:
    """True convolution by scipy.signal.convolve (1-D) or convolve2d (2-D), float64: the padded
    input with the dilated kernel in valid mode, then every s-th sample."""
    pads = [ref_pads(n, kk, s, d, padding) for n, kk in zip(x.shape, k.shape, strict=True)]
    every = tuple(slice(None, None, d) for _ in k.shape)
    dilated = np.zeros([(kk - 1) * d + 1 for kk in k.shape])
    dilated[every] = k
    xp = np.pad(x, pads)
    if x.ndim == 1:
        full = signal.convolve(xp, dilated, mode="valid", method="direct")
    else:
        full = signal.convolve2d(xp, dilated, mode="valid")
    return full[tuple(slice(None, None, s) for _ in k.shape)]


CONVOLVE_CASES = [
    dict(dims=dims, input_size=n, kernel_size=k, padding=p, stride=s, dilation=d)
    for dims, n, k, p, s, d in itertools.product(
        (1, 2), (5, 8), (2, 3), ("valid", "same", "full"), (1, 2, 3), (1, 2)
    )
]


@pytest.mark.parametrize("case", CONVOLVE_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_convolution_equals_scipy(client: TestClient, case: dict[str, Any]) -> None:
    """operation=convolution: scipy's true convolution, the flipped kernel in every window."""
    s, d, padding = case["stride"], case["dilation"], case["padding"]
    r = get(client, **case, seed=2, operation="convolution")
    body = r.json()
    assert r.status_code == 200, body
    x, k = mechanism.make_grids(mechanism.MechanismRequest(**case, seed=2))
    assert not np.array_equal(k, np.flip(k))  # seed 2: no symmetric kernel hides the flip
    assert body["operation"] == "convolution"
    np.testing.assert_array_equal(np.array(body["kernel"]), k)  # shown as given
    np.testing.assert_array_equal(np.array(body["window_kernel"]), np.flip(k))
    out = np.array(body["output"])
    np.testing.assert_allclose(out, scipy_convolve(x, k, s, d, padding), rtol=1e-12, atol=1e-12)
    if (s, d, padding) == (1, 1, "full"):  # scipy's own full mode, no padding of ours at all
        np.testing.assert_allclose(out, signal.convolve(x, k, mode="full"), atol=1e-12)
    padded, flipped = np.array(body["padded_input"]), np.array(body["window_kernel"])
    for cell, window in zip(np.ndindex(*out.shape), body["windows"], strict=True):
        assert np.isclose((padded[np.ix_(*window)] * flipped).sum(), out[cell], atol=1e-12)
    # the geometry does not depend on the flip
    same = get(client, **case, seed=2).json()
    for key in ("pads", "windows", "formula", "output_shape", "padded_input"):
        assert body[key] == same[key], key
    assert same["operation"] == "correlation" and same["window_kernel"] == same["kernel"]


def test_convolution_flips_an_asymmetric_kernel(client: TestClient) -> None:
    """The two operations differ where the kernel is not symmetric (a test that can fail)."""
    req: dict[str, Any] = dict(dims=1, input=[0, 0, 1, 0, 0], kernel=[1, 2, 3], padding="same")
    corr = client.post("/api/mechanism", json=req).json()
    conv = client.post("/api/mechanism", json=req | {"operation": "convolution"}).json()
    # an impulse: convolution gives back the kernel, correlation the kernel reversed
    assert corr["output"] == [0, 3, 2, 1, 0] and conv["output"] == [0, 1, 2, 3, 0]
    assert conv["window_kernel"] == [3, 2, 1]


@pytest.mark.parametrize("value", ["conv", "", "CONVOLUTION", "1"])
def test_bad_operation_is_one_line_422(client: TestClient, value: str) -> None:
    for r in (
        get(client, operation=value),
        client.post("/api/mechanism", json=dict(operation=value)),
    ):
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"][-1] == "operation" and "\n" not in error["msg"]
        assert "'correlation' or 'convolution'" in error["msg"]


POOL_CASES = list(
    itertools.product(("max", "avg"), (1, 2, 3), (None, 1, 2), ("valid", "same"), (1, 2))
)


@pytest.mark.parametrize("kind,size,stride,padding,dims", POOL_CASES)
def test_pooling_equals_reference(
    client: TestClient, kind: str, size: int, stride: int | None, padding: str, dims: int
) -> None:
    params = dict(dims=dims, input_size=9, kernel_size=2, padding="same", stride=1, pool=kind)
    params |= dict(pool_size=size, pool_padding=padding, seed=3)
    if stride is not None:
        params["pool_stride"] = stride
    body = get(client, **params).json()
    y, pooled = np.array(body["output"]), body["pooled"]
    s = stride or size
    ref = ref_pool(y, kind, size, s, padding)
    np.testing.assert_allclose(np.array(pooled["output"]), ref, rtol=1e-12)
    if padding == "valid" and dims == 2:
        pool = F.max_pool2d if kind == "max" else F.avg_pool2d
        t = pool(torch.from_numpy(y)[None, None], size, s)[0, 0].numpy()
        np.testing.assert_allclose(np.array(pooled["output"]), t, rtol=1e-12)
    assert [f["size"] for f in pooled["formula"]] == list(ref.shape)
    for cell, window in zip(np.ndindex(*ref.shape), pooled["windows"], strict=True):
        values = y[np.ix_(*window)]
        assert (values.max() if kind == "max" else values.mean()) == pytest.approx(ref[cell])


def test_own_grids_by_post(client: TestClient) -> None:
    x = np.arange(30, dtype=float).reshape(5, 6) / 4 - 2
    k = np.array([[0.5, -1.0], [2.0, 0.25]])
    req = dict(input=x.tolist(), kernel=k.tolist(), padding="same", stride=2, pool="avg")
    body = client.post("/api/mechanism", json=req).json()
    np.testing.assert_allclose(np.array(body["output"]), ref_conv(x, k, 2, 1, "same"), rtol=1e-12)
    assert [f["n"] for f in body["formula"]] == [5, 6] and body["output_shape"] == [3, 3]
    one = client.post("/api/mechanism", json=dict(dims=1, input=[1, 2, 3, 4], kernel=[1, -1]))
    np.testing.assert_allclose(one.json()["output"], [-1, -1, -1])


def test_get_and_post_agree(client: TestClient) -> None:
    params = dict(input_size=6, kernel_size=3, padding="full", stride=2, dilation=2, pool="max")
    assert get(client, **params).json() == client.post("/api/mechanism", json=params).json()


BAD_QUERIES = [
    dict(input_size=0), dict(input_size=17), dict(kernel_size=8), dict(kernel_size=0),
    dict(stride=0), dict(stride=5), dict(dilation=4), dict(padding="half"), dict(padding=1),
    dict(pool="min"), dict(pool_size=5), dict(pool_stride=0), dict(pool_padding="full"),
    dict(dims=3), dict(dims="2d"), dict(stride="2.5"), dict(input_size="x"), dict(seed=-1),
    dict(unknown=1), dict(input_size=3, kernel_size=5), dict(input_size=4, dilation=3),
    dict(input_size=2, kernel_size=2, pool="max", pool_size=3),
]  # fmt: skip
BAD_BODIES: list[Any] = [
    dict(input=[[1, 2], [3]]), dict(input=[1, 2, 3]), dict(dims=1, input=[[1]]),
    dict(input=[[0] * 17] * 2), dict(kernel=[[1] * 8]), dict(input=[]), dict(input=[[]]),
    dict(input=[[1e7]]), dict(input=[["a"]]), dict(input=[[1, 2]], kernel=[[1, 2, 3]]),
    [1, 2], "text", None, dict(input=[[True]]) | {"extra": 1},
]  # fmt: skip


@pytest.mark.parametrize("params", BAD_QUERIES, ids=str)
def test_bad_query_is_422(client: TestClient, params: dict[str, Any]) -> None:
    r = get(client, **params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


@pytest.mark.parametrize("body", BAD_BODIES, ids=str)
def test_bad_body_is_422(client: TestClient, body: Any) -> None:
    r = client.post("/api/mechanism", json=body)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("raw", [b"{", b"NaN", b'{"input": [[NaN]]}', b'{"input": [[Infinity]]}'])
def test_malformed_json_is_422(client: TestClient, raw: bytes) -> None:
    r = client.post("/api/mechanism", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text


def test_random_parameters_never_500(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(150):
        params = dict(
            dims=int(rng.integers(0, 4)), input_size=int(rng.integers(-1, 19)),
            kernel_size=int(rng.integers(0, 9)), stride=int(rng.integers(0, 6)),
            dilation=int(rng.integers(0, 5)), padding=str(rng.choice(["valid", "same", "full"])),
            pool=str(rng.choice(["none", "max", "avg"])), pool_size=int(rng.integers(0, 6)),
            pool_padding=str(rng.choice(["valid", "same"])),
        )  # fmt: skip
        status = get(client, **params).status_code
        assert status in (200, 422), params
        seen.add(status)
    assert seen == {200, 422}


def test_largest_request_is_cheap(client: TestClient) -> None:
    import time

    params = dict(input_size=16, kernel_size=7, padding="full", dilation=3, pool="avg")
    start = time.perf_counter()
    r = get(client, **params, pool_padding="same", pool_stride=1)
    assert r.status_code == 200 and r.json()["output_shape"] == [34, 34]
    assert time.perf_counter() - start < 2.0
    big = client.post("/api/mechanism", content=b"[" + b"1," * 40000 + b"1]")
    assert big.status_code == 413


def test_page_and_its_files_are_served_without_inline_code(client: TestClient) -> None:
    page = client.get("/mechanism")
    assert page.status_code == 200 and 'src="static/mechanism.js"' in page.text
    for name in ("mechanism.js", "mechanism.css", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "mechanism"
    assert 'id="digits-link"' not in page.text  # alone, there is no digit page to link to
    for html in ("mechanism.html", "index.html"):
        text = (STATIC / html).read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), html  # no inline script
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", text), html  # no inline style/handler
        assert "http://" not in text and "https://" not in text, html  # no CDN
    for label in ("input", "kernel", "output"):
        assert f'class="tag {dict(input="in", kernel="kern", output="out")[label]}">{label}<' in (
            page.text
        )


def test_mechanism_command_serves_the_page() -> None:
    """``cnnlab mechanism --port 0`` serves the page, behind the server's guards."""
    import subprocess
    import sys

    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab.cli", "mechanism", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://\S+/mechanism", line)
        assert url, line
        assert "mechanism.js" in httpx.get(url.group(0), timeout=10).text
        answer = httpx.get(url.group(0).replace("/mechanism", "/api/mechanism"), timeout=10)
        assert answer.json()["output_shape"] == [5, 5]
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        foreign = httpx.get(url.group(0), headers={"host": "evil.example"}, timeout=10)
        assert foreign.status_code == 403  # DNS rebinding: a Host it does not answer to
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--port", "x"], "--port"),
        (["--port", "70000"], "--port"),
        (["--allow-origin", "nope"], "--allow-origin"),
        (["--host", "no such host.invalid"], "cannot listen"),
    ],
)
def test_mechanism_command_bad_input_is_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnnlab.cli.main import main

    try:
        code = main(["mechanism", *argv])
    except SystemExit as exc:  # argparse's refusal
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_mechanism_command_busy_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from cnnlab.cli.main import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["mechanism", "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: ") and len(err.strip().splitlines()) == 1, err
