"""Load check of ``cnnlab serve``: many concurrent predictions over loopback.

Run: ``.venv/bin/python benchmarks/load_serve.py [RUN_DIR] [--requests 2000]
[--concurrency 16] [--no-maps] [--json PATH]``

Starts ``cnnlab serve RUN_DIR`` in its own process on a free loopback port (or uses
``--url`` of a running server), then sends the request the page sends while one draws:
a 280x280 PNG of a drawn digit, asking for the feature maps too. Two phases:

1. one request at a time (``--sequential`` of them): the latency of a single prediction;
2. ``--requests`` requests from ``--concurrency`` clients at once: throughput, latency
   under load and errors (anything but a 200, or no answer).

Each phase is bounded in time (``--max-seconds``). Without RUN_DIR an untrained case1
model is used: the network's weights do not change its speed. Client and server share
the machine, so the client's own time is part of every number.
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
from cnnlab.models import create_model
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
    ckpt = {"format": checkpoint.FORMAT, "case": "case1", "epoch": 0}
    runs.save_torch(folder / "best.pt", {**ckpt, "model": create_model("case1").state_dict()})
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
        "error_kinds": errors,
        "cut_short": done < n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="run folder (default: untrained)")
    parser.add_argument("--url", default=None, help="use this running server instead")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=200, help="requests one at a time")
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
    if args.json:
        fileio.write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0 if single["errors"] == 0 and loaded["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
