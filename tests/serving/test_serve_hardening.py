"""The web server against hostile clients: headers, Host, Origin, slow clients, memory.

Protocol-level checks use raw sockets against a real server on 127.0.0.1 (a free port,
always stopped); header, Host and Origin checks use the in-process test client.
"""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageDraw
from starlette.exceptions import StarletteDeprecationWarning

from cnnlab.cli.main import main
from cnnlab.data.preprocess import ImageLimits
from cnnlab.serving.guards import ByteBudget, ServerOptions
from cnnlab.serving.predict import Predictor
from cnnlab.serving.serve import background_server, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

LIMITS = ImageLimits(max_bytes=200_000, max_pixels=1_000_000)
FAST = ServerOptions(header_timeout=1.0, body_timeout=1.5, max_uploads=2, queue_timeout=0.5)
HEADERS = ("x-content-type-options", "content-security-policy", "referrer-policy")


def seven() -> bytes:
    img = Image.new("L", (140, 140), 255)
    ImageDraw.Draw(img).line([(40, 30), (100, 30), (60, 115)], 0, 10)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


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
def predictor(run_dir: Path) -> Predictor:
    return Predictor.from_run(run_dir)


def client(predictor: Predictor, base: str = "http://localhost", **options: object) -> TestClient:
    app = create_app(predictor, LIMITS, ServerOptions(**options))  # type: ignore[arg-type]
    return TestClient(app, base_url=base, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def local(predictor: Predictor) -> Iterator[TestClient]:
    with client(predictor) as c:
        yield c


def test_security_headers_on_every_response(local: TestClient) -> None:
    responses = [
        local.get("/"),
        local.get("/static/app.js"),
        local.get("/api/health"),
        local.get("/nowhere"),
        local.post("/api/predict", content=b"x" * 300_000),
        local.post("/api/predict", content=b"text", headers={"origin": "http://evil.example"}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 413, 403]
    for r in responses:
        assert all(name in r.headers for name in HEADERS), r.headers
        assert r.headers["x-content-type-options"] == "nosniff"
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY"
        assert "unsafe-inline" not in csp and "default-src 'none'" in csp


def test_docs_pages_are_off_and_the_schema_stays(local: TestClient) -> None:
    assert local.get("/docs").status_code == 404 and local.get("/redoc").status_code == 404
    assert "/api/predict" in local.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("base", "host", "ok"),
    [
        ("http://localhost", None, True),
        ("http://127.0.0.1", None, True),
        ("http://[::1]", None, True),
        ("http://evil.example", None, False),
        ("http://localhost", "localhost:9999", False),  # a localhost name, another port
        ("http://localhost", "LOCALHOST.", True),
        ("http://localhost", "local host", False),
    ],
)
def test_host_header(local: TestClient, base: str, host: str | None, ok: bool) -> None:
    """DNS rebinding: an attacker's name resolving to 127.0.0.1 must not be answered."""
    headers = {"host": host} if host else {}
    r = local.get(base + "/api/health", headers=headers)
    assert r.status_code == (200 if ok else 403), r.text
    if not ok:
        assert "--allow-host" in r.json()["detail"]


def test_allow_host(predictor: Predictor) -> None:
    hosts = ("app.example", "b.example:8443")
    with client(predictor, "http://app.example", allow_hosts=hosts) as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("http://app.example:81/api/health").status_code == 200  # any port
        assert c.get("http://b.example:8443/api/health").status_code == 200
        assert c.get("http://b.example:8444/api/health").status_code == 403
        assert c.get("http://evil.example/api/health").status_code == 403
    with client(predictor, "http://any.example", allow_hosts=("*",)) as c:
        assert c.get("/api/health").status_code == 200


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://evil.example", 403),
        ("null", 403),
        ("http://localhost:8000", 403),  # same name, another port: another origin
        ("https://localhost", 200),  # the page's own host (TLS ended by a proxy)
        ("http://localhost", 200),
        (None, 200),
    ],
)
def test_origin_on_a_simple_post(local: TestClient, origin: str | None, status: int) -> None:
    """text/plain and multipart POSTs skip the preflight: the server must refuse them."""
    headers = {"content-type": "text/plain"} | ({"origin": origin} if origin else {})
    r = local.post("/api/predict", content=seven(), headers=headers)
    assert r.status_code == status, r.text
    if status == 403:
        assert "--allow-origin" in r.json()["detail"] and "digit" not in r.json()


def test_allow_origin(predictor: Predictor) -> None:
    with client(predictor, allow_origins=("https://app.example",)) as c:
        hdr = {"origin": "https://app.example"}
        r = c.post("/api/predict", content=seven(), headers=hdr | {"content-type": "image/png"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == hdr["origin"]
        pre = c.options(
            "/api/predict", headers=hdr | {"access-control-request-method": "POST"}
        )  # fmt: skip
        assert pre.status_code == 200 and "POST" in pre.headers["access-control-allow-methods"]
        assert c.get("/api/health", headers={"origin": "https://other.example"}).status_code == 403


def test_byte_budget_waits_then_gives_up() -> None:
    async def scenario() -> list[object]:
        budget = ByteBudget(100)
        assert await budget.take(80, 1.0)
        late = await budget.take(30, 0.05)  # no room within the wait
        waiter = asyncio.ensure_future(budget.take(30, 1.0))
        await asyncio.sleep(0.01)
        budget.give(80)
        got = await waiter
        budget.give(30)
        return [late, got, budget.used]

    assert asyncio.run(scenario()) == [False, True, 0]


# Real server, raw sockets ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(predictor: Predictor) -> Iterator[tuple[str, int]]:
    with background_server(create_app(predictor, LIMITS, FAST)) as url:
        parts = urlsplit(url)
        yield str(parts.hostname), int(parts.port or 80)


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """All the server sends until it closes (or ``limit`` s pass); and when it closed."""
    start = time.monotonic()
    sock.settimeout(0.2)
    data = b""
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def health_ok(addr: tuple[str, int]) -> float:
    start = time.monotonic()
    r = httpx.get(f"http://{addr[0]}:{addr[1]}/api/health", timeout=5)
    assert r.status_code == 200
    return time.monotonic() - start


def test_partial_headers_are_cut_off(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        data, took = read_until_closed(sock, 5)
    assert data.startswith(b"HTTP/1.1 408") and took < FAST.header_timeout + 1.0, (data, took)
    with socket.create_connection(server) as idle:  # not a byte sent: closed, no answer
        data, took = read_until_closed(idle, 5)
    assert data == b"" and took < FAST.header_timeout + 1.0


def test_trickled_body_is_cut_off(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as sock:
        sock.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: image/png\r\n"
            b"Content-Length: 5000\r\n\r\n" % (server[0].encode(), server[1])
        )
        start = time.monotonic()
        data = b""
        sock.settimeout(0.1)
        while time.monotonic() - start < 5 and not data:
            try:
                sock.sendall(b"\x89")  # a byte every 0.1 s: never the whole body
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
        took = time.monotonic() - start
        sock.settimeout(2)  # the body may come in a packet of its own: read to the end
        while b"did not arrive" not in data:
            try:
                more = sock.recv(65536)
            except OSError:
                break
            if not more:
                break
            data += more
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b"did not arrive within 1.5 s" in data and took < FAST.body_timeout + 1.0


def test_many_slow_clients_do_not_stop_the_server(server: tuple[str, int]) -> None:
    socks = []
    try:
        for k in range(150):
            s = socket.create_connection(server)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" if k % 2 else b"POST /api/predict HTT")
            socks.append(s)
        assert health_ok(server) < 1.0
        time.sleep(FAST.header_timeout + 0.5)
        closed = 0
        for s in socks:
            s.settimeout(0.5)
            try:
                closed += s.recv(65536) != b"" or s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(socks)
    finally:
        for s in socks:
            s.close()
    assert health_ok(server) < 1.0


def test_connection_cap_closes_the_longest_idle(predictor: Predictor) -> None:
    options = ServerOptions(max_connections=20, header_timeout=30)
    with background_server(create_app(predictor, LIMITS, options)) as url:
        addr = (str(urlsplit(url).hostname), int(urlsplit(url).port or 80))
        socks = [socket.create_connection(addr) for _ in range(40)]
        try:
            assert health_ok(addr) < 1.0  # room was made for it
            first, _ = read_until_closed(socks[0], 2)  # the oldest idle one was closed
            assert first == b""
        finally:
            for s in socks:
                s.close()


def test_uploads_over_the_budget_wait_then_get_503(server: tuple[str, int]) -> None:
    """Two full bodies fill the budget (max_uploads=2); a third waits, then gets a 503."""
    size = LIMITS.max_bytes
    head = (
        b"POST /api/predict HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: image/png\r\n"
        b"Content-Length: %d\r\n\r\n" % (server[0].encode(), server[1], size)
    )
    holders = [socket.create_connection(server) for _ in range(2)]
    try:
        for s in holders:
            s.sendall(head + bytes(size - 1))  # all but the last byte: held, not finished
        time.sleep(0.3)
        r = httpx.post(
            f"http://{server[0]}:{server[1]}/api/predict",
            content=seven() + bytes(size - 5000),
            headers={"content-type": "image/png"},
            timeout=10,
        )
        assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
    finally:
        for s in holders:
            s.close()
    assert health_ok(server) < 1.0


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_concurrent_uploads_keep_server_memory_bounded(run_dir: Path) -> None:
    """40 concurrent 4 MiB uploads: the server's peak RSS grows by far less than 40 x 4 MiB."""
    port = free_port()
    cmd = [sys.executable, "-m", "cnnlab.cli", "serve", str(run_dir), "--port"]
    proc = subprocess.Popen(
        [*cmd, str(port), "--max-uploads", "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        httpx.post(url + "/api/predict", content=seven(), headers={"content-type": "image/png"})
        before = rss_kib(proc.pid, "VmRSS")
        body = seven() + bytes(4 * 1024 * 1024 - 6000)  # a PNG, padded to 4 MiB after IEND

        async def burst() -> list[int]:
            limits = httpx.Limits(max_connections=40)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:
                rs = await asyncio.gather(
                    *(
                        c.post("/api/predict", content=body, headers={"content-type": "image/png"})
                        for _ in range(40)
                    )
                )
            return [r.status_code for r in rs]

        codes = asyncio.run(burst())
        peak = rss_kib(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert set(codes) <= {200, 503} and codes.count(200) >= 20, codes
    grew = (peak - before) / 1024
    assert grew < 120, f"peak RSS grew by {grew:.0f} MiB"  # uncapped: about 6 MiB per upload


def test_busy_port_and_bad_host_are_one_line(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["serve", str(run_dir), "--port", port]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "port is in use" in err, err
    assert main(["serve", str(run_dir), "--host", "no-such-host.invalid"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown host" in err, err
