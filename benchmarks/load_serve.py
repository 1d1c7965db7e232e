"""Load check of ``cnnlab serve``: many concurrent predictions over loopback.

Run: ``.venv/bin/python benchmarks/load_serve.py [RUN_DIR] [--requests 2000]
[--concurrency 16] [--clients 32] [--duration 20] [--slow-clients 300] [--no-maps]
[--json PATH]``

Starts ``cnnlab serve RUN_DIR`` in its own process on a free loopback port (or uses
``--url`` of a running server), then sends the request the page sends while one draws:
a 280x280 PNG of a drawn digit, asking for the feature maps too. Three phases:

1. one request at a time (``--sequential`` of them): the latency of a single prediction;
2. ``--requests`` requests from ``--concurrency`` clients at once: throughput, latency
   under load and errors (anything but a 200, or no answer);
3. under attack: ``--clients`` clients for ``--duration`` seconds while ``--slow-clients``
   hostile connections run alongside, half trickling their headers a byte a second, half
   sending headers and then trickling the body; each reconnects when the server cuts it
   off. Reported: p50/p99, 5xx count (must be 0), how fast the slow ones were cut, a
   health probe's latency every half second, and the server's peak RSS (VmHWM, must stay
   under 1 GB; only for the server this script starts).

Phases 1 and 2 are bounded in time (``--max-seconds``), phase 3 by ``--duration``.
Without RUN_DIR an untrained case1 model is used: the network's weights do not change
its speed. Client and server share the machine, so the client's own time is part of
every number.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image, ImageDraw

from cnnlab import fileio
from cnnlab.models import build_module, resolve
from cnnlab.train import checkpoint, runs

STROKES = {  # digits as the page would send them: black pen on a white 280x280 pad
    "1": [(140, 40), (140, 250)],
    "3": [(85, 70), (150, 40), (200, 80), (145, 135), (205, 200), (150, 245), (80, 220)],
    "7": [(70, 60), (210, 60), (130, 250)],
}


def payloads() -> list[bytes]:
    out = []
    for points in STROKES.values():
        img = Image.new("RGBA", (280, 280), (255, 255, 255, 255))
        ImageDraw.Draw(img).line(points, fill=(0, 0, 0, 255), width=20, joint="curve")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def untrained_run(folder: Path) -> Path:
    torch.manual_seed(0)
    desc = resolve("case1")
    runs.save_torch(folder / "best.pt", checkpoint.make_checkpoint(desc, build_module(desc), 0))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run_dir: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cnnlab.cli", "serve", str(run_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"server exited with {proc.returncode}: {err[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


async def phase(
    url: str, bodies: list[bytes], n: int, concurrency: int, maps: bool, max_seconds: float
) -> dict[str, Any]:
    """Send ``n`` requests from ``concurrency`` workers; latency per request, errors."""
    latencies: list[float] = []
    server_ms: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(n))
    params = {"maps": "true" if maps else "false"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    deadline = time.monotonic() + max_seconds

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            for i in counter:
                if time.monotonic() > deadline:
                    return
                start = time.perf_counter()
                try:
                    r = await client.post(
                        "/api/predict",
                        content=bodies[i % len(bodies)],
                        headers={"content-type": "image/png"},
                        params=params,
                    )
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - start)
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                else:
                    server_ms.append(r.json()["milliseconds"])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000.0
    done = len(latencies)
    return {
        "requests": done,
        "concurrency": concurrency,
        "seconds": round(wall, 3),
        "requests_per_s": round(done / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if done else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if done else None,
        "server_p50_ms": round(float(np.percentile(server_ms, 50)), 2) if server_ms else None,
        "errors": sum(errors.values()),
        "server_errors": sum(v for k, v in errors.items() if k.startswith("5")),
        "error_kinds": errors,
        "cut_short": done < n,
    }


async def slow_client(
    url: str, kind: int, stop: asyncio.Event, cuts: dict[int, list[float]]
) -> None:
    """A hostile connection: trickles headers (kind 0) or a body (kind 1), a byte a second;
    reconnects whenever the server cuts it off, until ``stop``."""
    parts = httpx.URL(url)
    host, port = parts.host, parts.port or 80
    head = f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
    if kind == 1:
        head += b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        start = time.monotonic()
        cut = False
        try:
            writer.write(head)
            while not stop.is_set() and not cut:
                writer.write(b"x" if kind == 0 else b"\x89")
                await writer.drain()
                try:  # an answer (a 408) or the end of the stream: the server cut it off
                    await asyncio.wait_for(reader.read(65536), 1.0)
                    cut = True
                except TimeoutError:
                    continue
        except OSError:
            cut = True
        finally:
            writer.close()
        if cut:
            cuts[kind].append(time.monotonic() - start)
        await asyncio.sleep(0.1)


async def probe(url: str, stop: asyncio.Event) -> dict[str, Any]:
    """GET /api/health every half second: latency, and how often it failed."""
    lat: list[float] = []
    failed = 0
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                ok = (await client.get("/api/health")).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                lat.append((time.perf_counter() - start) * 1000.0)
            failed += not ok
            await asyncio.sleep(0.5)
    return {
        "probes": len(lat) + failed,
        "failed": failed,
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat else None,
        "max_ms": round(max(lat), 2) if lat else None,
    }


async def attack(
    url: str, bodies: list[bytes], clients: int, duration: float, slow: int, maps: bool
) -> dict[str, Any]:
    """Phase 3: ``clients`` for ``duration`` s with ``slow`` hostile connections alongside."""
    stop = asyncio.Event()
    cuts: dict[int, list[float]] = {0: [], 1: []}
    hostile = [asyncio.ensure_future(slow_client(url, k % 2, stop, cuts)) for k in range(slow)]
    health = asyncio.ensure_future(probe(url, stop))
    await asyncio.sleep(1.0)  # let the slow clients connect first
    loaded = await phase(url, bodies, 10**9, clients, maps, duration)
    stop.set()
    await asyncio.gather(*hostile, return_exceptions=True)
    slow_result = {
        name: {
            "cut": len(cuts[k]),
            "cut_p50_s": round(float(np.percentile(cuts[k], 50)), 2) if cuts[k] else None,
        }
        for k, name in ((0, "headers"), (1, "body"))
    }
    return {**loaded, "slow_clients": slow, "slow": slow_result, "health": await health}


def peak_rss_mib(pid: int) -> float | None:
    """The peak resident memory (VmHWM) of process ``pid`` in MiB, where /proc has it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="run folder (default: untrained)")
    parser.add_argument("--url", default=None, help="use this running server instead")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=200, help="requests one at a time")
    parser.add_argument("--clients", type=int, default=32, help="clients under attack")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds under attack")
    parser.add_argument("--slow-clients", type=int, default=300, help="hostile connections")
    parser.add_argument("--no-maps", action="store_true", help="leave out the feature maps")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="cap per phase")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or untrained_run(Path(tmp))
        url = args.url
        if url is None:
            port = free_port()
            proc = start_server(run_dir, port)
            url = f"http://127.0.0.1:{port}"
        try:
            bodies = payloads()
            maps = not args.no_maps
            asyncio.run(phase(url, bodies, 30, 1, maps, args.max_seconds))  # warm-up
            single = asyncio.run(phase(url, bodies, args.sequential, 1, maps, args.max_seconds))
            loaded = asyncio.run(
                phase(url, bodies, args.requests, args.concurrency, maps, args.max_seconds)
            )
            attacked = asyncio.run(
                attack(url, bodies, args.clients, args.duration, args.slow_clients, maps)
            )
            peak = peak_rss_mib(proc.pid) if proc is not None else None
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    result = {
        "benchmark": "load_serve",
        "url": url if args.url else "loopback subprocess",
        "model": str(args.run_dir) if args.run_dir else "untrained case1",
        "feature_maps": not args.no_maps,
        "sequential": single,
        "concurrent": loaded,
        "under_attack": attacked,
        "server_peak_rss_mib": peak,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    for name, r in (("one at a time", single), (f"{args.concurrency} at once", loaded)):
        print(
            f"{name:>14}: {r['requests']} requests in {r['seconds']:.1f} s = "
            f"{r['requests_per_s']:.0f} req/s; latency p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms "
            f"(server p50 {r['server_p50_ms']} ms); errors {r['errors']} {r['error_kinds'] or ''}"
        )
    a, h = attacked, attacked["health"]
    print(
        f"{'under attack':>14}: {a['concurrency']} clients for {a['seconds']:.1f} s with "
        f"{a['slow_clients']} slow ones: {a['requests']} requests = {a['requests_per_s']:.0f} "
        f"req/s; p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms; 5xx {a['server_errors']}, "
        f"errors {a['errors']} {a['error_kinds'] or ''}"
    )
    hs, bs = a["slow"]["headers"], a["slow"]["body"]
    print(
        f"{'':>14}  slow clients cut off: trickled headers {hs['cut']} times (p50 after "
        f"{hs['cut_p50_s']} s), trickled bodies {bs['cut']} times (p50 after "
        f"{bs['cut_p50_s']} s); health: {h['probes'] - h['failed']}/{h['probes']} "
        f"answered, p50 {h['p50_ms']} ms, max {h['max_ms']} ms; server peak RSS "
        f"{peak if peak is not None else 'unknown'} MiB"
    )
    if args.json:
        fileio.write_json(args.json, result)
        print(f"wrote {args.json}")
    ok = single["errors"] == 0 and loaded["errors"] == 0 and a["server_errors"] == 0
    ok = ok and h["failed"] == 0 and (peak is None or peak < 1024)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
