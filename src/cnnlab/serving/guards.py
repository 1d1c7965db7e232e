"""ASGI guards of the web app: security headers, Host and Origin checks, bounded bodies.

Outermost first: :class:`SecurityHeaders` adds the headers to every response;
:class:`HostOriginGuard` refuses (403) a ``Host`` the server does not answer to (DNS
rebinding) and a foreign ``Origin`` (cross-site requests, which text/plain and multipart
POSTs make without a preflight); :class:`BodyGuard` reads each body before the app does,
within a byte limit (413), a deadline (408) and a memory budget shared by all requests
(503 with ``Retry-After`` when it stays full).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


@dataclass(frozen=True)
class ServerOptions:
    """What the server accepts from clients, and how long and how much it waits for them."""

    bound_host: str = "127.0.0.1"  # the address listened on: accepted in Host, as localhost
    allow_hosts: tuple[str, ...] = ()  # more Host names: "name" (any port), "name:port", "*"
    allow_origins: tuple[str, ...] = ()  # foreign origins allowed ("https://site"), or "*"
    header_timeout: float = 10.0  # seconds to deliver a request's line and headers
    body_timeout: float = 30.0  # seconds to deliver a whole request body
    send_timeout: float = 30.0  # longest stall of a client reading a response
    keep_alive: int = 5  # seconds an idle connection stays open
    max_connections: int = 512  # open connections; past it the longest-idle one is closed
    max_uploads: int = 16  # full-size bodies buffered at once; more wait, then get a 503
    queue_timeout: float = 10.0  # seconds a body waits for buffer room before the 503


def split_host(value: str, default_port: int | None = None) -> tuple[str, int | None] | None:
    """``"Name:port"`` or ``"[::1]:port"`` -> ("name", port); None if malformed."""
    value = value.strip().lower()
    if value.count(":") > 1 and not value.startswith("["):  # a bare IPv6 address
        ok = all(c in "0123456789abcdef:." for c in value)
        return (value, default_port) if ok else None
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket:
            return None
    else:
        name, colon, rest = value.partition(":")
        rest = colon + rest
    if not name or any(c in name for c in "/@ \\") or (rest and not rest.startswith(":")):
        return None
    if not rest:
        return name.rstrip("."), default_port
    port = rest[1:]
    # ASCII digits, at most 5, before int(): "²" passes isdigit() and 5,000 digits fail int()
    if not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 < int(port) < 65536:
        return None
    return name.rstrip("."), int(port)


def _site(name: str, port: int | None) -> tuple[str, int | None]:
    """A comparable (name, port): the default ports of http and https count as none."""
    return name, None if port in (80, 443) else port


Refusal = tuple[int, str, dict[str, str]]  # status, detail, extra headers


async def refuse(scope: Scope, receive: Receive, send: Send, why: Refusal) -> None:
    """A JSON ``detail`` answer that closes the connection (any unread body is dropped)."""
    status, detail, headers = why
    response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: nosniff, a same-origin CSP, no framing and no referrer, everywhere."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostOriginGuard:
    """ASGI middleware: 403 for a Host the server does not answer to, or a foreign Origin.

    Localhost names and ``bound_host`` are accepted with the port the request came in on;
    an ``allow_hosts`` entry without a port with any port (a reverse proxy's public name).
    A request without Origin (not from a browser, or a same-origin GET) passes; one whose
    Origin is the page's own (the Host it asked for) or in ``allow_origins`` passes too.
    """

    def __init__(self, app: ASGIApp, options: ServerOptions) -> None:
        self.app = app
        names = [split_host(n) for n in (*LOCAL_NAMES, options.bound_host)]
        self.local = {n[0] for n in names if n is not None}
        self.any_host = "*" in options.allow_hosts
        self.hosts = {h for h in map(split_host, options.allow_hosts) if h is not None}
        self.any_origin = "*" in options.allow_origins
        self.origins = {o.strip().lower().rstrip("/") for o in options.allow_origins}

    def host_allowed(self, host: tuple[str, int | None], local_port: int | None) -> bool:
        name, port = host
        if self.any_host or (name, None) in self.hosts or (name, port) in self.hosts:
            return True
        return name in self.local and (port == local_port or local_port is None)

    def origin_allowed(self, origin: str, host: tuple[str, int | None] | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if self.any_origin or origin in self.origins:
            return True
        try:
            parts = urlsplit(origin)
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname or host is None:
            return False
        return _site(parts.hostname.rstrip("."), port) == _site(*host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = (b"host", b"origin")
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in wanted}
        server = scope.get("server")
        local_port = server[1] if server else None
        default = 443 if scope.get("scheme") == "https" else 80
        host = split_host(headers["host"], default) if "host" in headers else None
        origin = headers.get("origin")
        if "host" in headers and (host is None or not self.host_allowed(host, local_port)):
            detail = (
                f"Host {headers['host'][:100]!r} is not one this server answers to: "
                "start cnnlab serve with --allow-host NAME to accept it"
            )
        elif origin is not None and not self.origin_allowed(origin, host):
            detail = (
                f"cross-origin request from {origin[:100]!r} refused: "
                "start cnnlab serve with --allow-origin ORIGIN to allow it"
            )
        else:
            await self.app(scope, receive, send)
            return
        await refuse(scope, receive, send, (403, detail, {}))


class ByteBudget:
    """Bytes of request bodies held in memory at once, shared by all requests (FIFO)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, n: int, timeout: float) -> bool:
        """Hold ``n`` more bytes, waiting up to ``timeout`` s for room; False if none came."""
        if not self._waiters and self.used + n <= self.capacity:
            self.used += n
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except TimeoutError:
            if fut.done():  # granted just as the wait ended
                self.give(n)
            return False
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.give(n)
            raise
        finally:
            if not fut.done():
                fut.cancel()
            self._wake()

    def give(self, n: int) -> None:
        """Return ``n`` bytes and let waiting requests in."""
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
            elif self.used + n <= self.capacity:
                self.used += n
                fut.set_result(None)
                self._waiters.popleft()
            else:
                break


UNBUDGETED = 64 * 1024  # body bytes a request may buffer before it must hold budget


class _Body:
    """One request's buffered body and the budget it holds."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.reserved = 0


class BodyGuard:
    """ASGI middleware: read each request body before the app, bounded in bytes, time and
    memory, then replay it to the app chunk by chunk.

    413 past ``max_bytes`` (declared or counted); 408 if the client takes more than
    ``body_timeout`` seconds in all to send it. Memory: a body past its first
    ``UNBUDGETED`` bytes reserves its whole declared size (``max_bytes`` if undeclared) at
    once from a budget of ``max_uploads`` full-size bodies shared by all requests, so
    slow bodies (which never get that far) hold none, and no two requests each hold part
    of what the other waits for. While a request waits for room its client is not read
    from (TCP back-pressure); after ``queue_timeout`` seconds the rest of its body is
    read and dropped, then it gets a 503 with ``Retry-After``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, detail: str, options: ServerOptions) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = detail
        self.options = options
        self.budget = ByteBudget(max(1, options.max_uploads) * max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        # Transfer-Encoding wins over Content-Length (as h11 reads it): "0" with it is a body
        if b"transfer-encoding" not in headers and declared in (None, b"0"):
            await self.app(scope, receive, send)  # no body
            return
        # bounded digits before int(): a 5,000-digit length is simply too large
        raw: bytes = declared or b""
        size = int(raw) if raw.isdigit() and len(raw) <= 18 else None
        if (size is not None and size > self.max_bytes) or (raw.isdigit() and size is None):
            await refuse(scope, receive, send, (413, self.detail, {}))
            return
        body = _Body()
        try:
            problem = await self._read(receive, body, size or self.max_bytes)
            if problem is not None:
                if problem[0] != 499:  # 499: the client went away, nobody to answer
                    await refuse(scope, receive, send, problem)
                return
            chunks = body.chunks or deque([b""])

            async def replay() -> Message:
                if chunks:
                    data = chunks.popleft()
                    return {"type": "http.request", "body": data, "more_body": bool(chunks)}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.budget.give(body.reserved)

    async def _read(self, receive: Receive, body: _Body, need: int) -> Refusal | None:
        """Fill ``body`` (reserving ``need`` bytes once past UNBUDGETED); why it is refused."""
        loop = asyncio.get_running_loop()
        left = self.options.body_timeout
        total = 0
        refusal: Refusal | None = None
        more = True
        while more:
            start = loop.time()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    message = await receive()
            except TimeoutError:
                secs = self.options.body_timeout
                return 408, f"the request body did not arrive within {secs:g} s", {}
            left -= loop.time() - start
            if message["type"] == "http.disconnect":
                return 499, "the client disconnected", {}
            data: bytes = message.get("body", b"")
            total += len(data)
            if total > self.max_bytes:
                return 413, self.detail, {}
            if refusal is None and not body.reserved and total > UNBUDGETED:
                if await self.budget.take(need, self.options.queue_timeout):
                    body.reserved = need
                else:  # drop the rest of the body: a close with unread data would reset
                    busy = "the server is busy with other uploads: try again in a moment"
                    refusal = (503, busy, {"Retry-After": "2"})
                    body.chunks.clear()
            if refusal is None and data:
                body.chunks.append(data)
            more = message.get("more_body", False)
        return refusal


class BodyLimit(BodyGuard):
    """A :class:`BodyGuard` with default options: ``BodyLimit(app, max_bytes, detail)``."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        detail: str | None = None,
        options: ServerOptions | None = None,
    ) -> None:
        detail = detail or f"request body is over the limit of {max_bytes:,} bytes"
        super().__init__(app, max_bytes, detail, options or ServerOptions())


def harden(app: ASGIApp, max_bytes: int, detail: str, options: ServerOptions) -> ASGIApp:
    """``app`` inside the guards, outermost first: headers, printable error bodies,
    Host/Origin, CORS, body."""
    inner: ASGIApp = BodyGuard(app, max_bytes, detail, options)
    if options.allow_origins:
        from starlette.middleware.cors import CORSMiddleware

        inner = CORSMiddleware(
            inner,
            allow_origins=list(options.allow_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["content-type"],
            max_age=600,
        )
    from cnnlab.serving.printable import PrintableErrors

    return SecurityHeaders(PrintableErrors(HostOriginGuard(inner, options)))


def bad_hosts(entries: Iterable[str]) -> list[str]:
    """The entries that are not host names, ``name:port`` or ``*`` (for the command line)."""
    return [e for e in entries if e != "*" and split_host(e) is None]
