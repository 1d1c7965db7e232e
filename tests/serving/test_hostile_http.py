"""Issue 21 on the web: fuzzed headers and bodies get a 4xx, never a 5xx, and no traceback.

Against every route of ``serve`` (with the mechanism and detail APIs it carries) and of
the stand-alone ``mechanism`` app: Host headers with a huge, non-numeric or empty port,
wrong content types, and error bodies that echo what was sent (each string in them one
printable line, bounded). Bad chunking goes over raw sockets to a real server, whose log
(stderr) must hold no traceback.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from cnnlab.data.preprocess import ImageLimits
from cnnlab.serving import mechanism
from cnnlab.serving.predict import Predictor
from cnnlab.serving.serve import background_server, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

BIG = "9" * 5000
LIMITS = ImageLimits(max_bytes=200_000, max_pixels=1_000_000)
ROUTES = [  # (method, path) of serve; the mechanism app has the last three and "/"
    ("GET", "/"),
    ("GET", "/api/health"),
    ("GET", "/api/model"),
    ("POST", "/api/predict"),
    ("POST", "/api/detail"),
    ("GET", "/mechanism"),
    ("GET", "/api/mechanism"),
    ("POST", "/api/mechanism"),
]
HOSTS = {
    "huge-port": f"127.0.0.1:{BIG}",
    "port-over-65535": "localhost:65536",
    "non-numeric-port": "localhost:http",
    "superscript-port": "localhost:\u00b2",
    "empty-port": "localhost:",
    "empty": "",
    "huge-name": "a" * 60_000,
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained case1 run folder (its weights do not matter here): made in a second."""
    import torch

    from cnnlab.models import build_module, resolve
    from cnnlab.train import checkpoint, runs

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("untrained")
    desc = resolve("case1")
    runs.save_torch(folder / "best.pt", checkpoint.make_checkpoint(desc, build_module(desc), 0))
    return folder


@pytest.fixture(scope="module")
def apps(run_dir: Path) -> dict[str, Any]:
    return {
        "serve": create_app(Predictor.from_run(run_dir), LIMITS),
        "mech": mechanism.create_app(),
    }


def routes(app: str) -> list[tuple[str, str]]:
    return ROUTES if app == "serve" else [("GET", "/"), *ROUTES[-3:]]


def assert_printable_error(r: Any) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert len(r.content) < 20_000, len(r.content)
    if r.headers.get("content-type", "").startswith("application/json"):
        strings: list[str] = []

        def walk(v: object) -> None:
            if isinstance(v, str):
                strings.append(v)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
            elif isinstance(v, dict):
                for k, x in v.items():
                    walk(k)
                    walk(x)

        walk(r.json())
        assert all(s.isprintable() and len(s) < 400 for s in strings), r.text[:300]


@pytest.mark.parametrize("app", ["serve", "mech"])
@pytest.mark.parametrize("host", list(HOSTS))
def test_fuzzed_host_is_4xx_on_every_route(apps: dict[str, Any], app: str, host: str) -> None:
    with TestClient(apps[app], raise_server_exceptions=False) as c:
        for method, path in routes(app):
            r = c.request(method, path, headers={"host": HOSTS[host].encode("latin-1")})
            assert_printable_error(r)


BODIES: dict[str, tuple[str, str, dict[str, str], bytes]] = {
    # name: (method, path, headers, body)
    "predict-json": ("POST", "/api/predict", {"content-type": "application/json"}, b'{"a": 1}'),
    "predict-xml": ("POST", "/api/predict", {"content-type": "text/xml"}, b"<a/>"),
    "predict-multipart-no-boundary": (
        "POST",
        "/api/predict",
        {"content-type": "multipart/form-data"},
        b"--x\r\n\r\n",
    ),
    "detail-json": ("POST", "/api/detail", {"content-type": "application/json"}, b"{}"),
    "mechanism-png": ("POST", "/api/mechanism", {"content-type": "image/png"}, b"\x89PNG"),
    "mechanism-text-not-json": ("POST", "/api/mechanism", {"content-type": "text/plain"}, b"{"),
    "mechanism-huge-int": (
        "POST",
        "/api/mechanism",
        {"content-type": "application/json"},
        b'{"input_size": ' + BIG.encode() + b"}",
    ),
    "mechanism-escapes": (
        "POST",
        "/api/mechanism",
        {"content-type": "application/json"},
        json.dumps({"padding": "x\n\u001b[2J" * 2000}).encode(),
    ),
    "mechanism-long-list": (
        "POST",
        "/api/mechanism",
        {"content-type": "application/json"},
        json.dumps({"input": ["x"] * 5000}).encode(),
    ),
    "mechanism-query-huge-int": ("GET", f"/api/mechanism?input_size={BIG}", {}, b""),
    "mechanism-query-escapes": ("GET", "/api/mechanism?padding=%1b%5b2J%0a" + "x" * 5000, {}, b""),
}


@pytest.mark.parametrize(
    ("app", "case"),
    [(a, c) for c in BODIES for a in ("serve", "mech") if a == "serve" or "mech" in BODIES[c][1]],
)
def test_wrong_bodies_are_4xx_with_printable_errors(
    apps: dict[str, Any], app: str, case: str
) -> None:
    method, path, headers, body = BODIES[case]
    with TestClient(apps[app], base_url="http://localhost", raise_server_exceptions=False) as c:
        assert_printable_error(c.request(method, path, headers=headers, content=body))


# Real server, raw sockets: h11 reads the chunking ----------------------------------------


@pytest.fixture(scope="module", params=["serve", "mech"])
def server(request: pytest.FixtureRequest, apps: dict[str, Any]) -> Iterator[tuple[str, int]]:
    with background_server(apps[request.param]) as url:
        parts = urlsplit(url)
        yield str(parts.hostname), int(parts.port or 80)


def exchange(addr: tuple[str, int], head: bytes, later: bytes) -> bytes:
    """Send ``head``, wait for the server to act on it, send ``later``; all it answers."""
    with socket.create_connection(addr) as sock:
        sock.sendall(head)
        time.sleep(0.3)
        try:
            sock.sendall(later)
        except OSError:  # closed already: its answer is still there to read
            pass
        sock.settimeout(3)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    return data


CHUNKING = {
    "bad-size": (b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", b"ZZZ\r\nabc\r\n0\r\n\r\n"),
    "huge-size": (b"Transfer-Encoding: chunked\r\n\r\n", BIG.encode() + b"\r\nabc\r\n"),
    "length-0-and-chunked": (
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"3\r\nabc\r\nZZZ\r\n",
    ),
    "chunked-then-length-0": (
        b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        b"3\r\nabc\r\nZZZ\r\n",
    ),
    "huge-content-length": (b"Content-Length: " + BIG.encode() + b"\r\n\r\n", b"abc"),
}


@pytest.fixture
def server_log() -> Iterator[list[logging.LogRecord]]:
    """What the server logs (uvicorn's and asyncio's loggers, where h11 errors end up)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "asyncio")]
    for logger in loggers:
        logger.addHandler(keep)
    yield records
    for logger in loggers:
        logger.removeHandler(keep)


@pytest.mark.parametrize("case", list(CHUNKING))
@pytest.mark.parametrize("path", ["/api/mechanism", "/api/health", "/"])
def test_bad_chunking_is_4xx_and_no_traceback_in_the_log(
    server: tuple[str, int], case: str, path: str, server_log: list[logging.LogRecord]
) -> None:
    head, later = CHUNKING[case]
    host = b"Host: %s:%d\r\n" % (server[0].encode(), server[1])
    request = b"POST " + path.encode() + b" HTTP/1.1\r\n" + host
    data = exchange(server, request + b"Content-Type: application/json\r\n" + head, later)
    status = data.split(b" ", 2)[1] if data.startswith(b"HTTP/1.1 ") else b""
    assert status.startswith(b"4"), data[:200]
    time.sleep(0.2)  # the server logs after it answers
    lines = [r.getMessage() for r in server_log]
    assert not any(r.exc_info for r in server_log), lines  # a traceback in the log
    assert len(lines) <= 2 and all("\n" not in line for line in lines), lines
