"""Running the web app with uvicorn: sockets bound first, and a connection-level guard.

:func:`bind` binds the listening sockets before uvicorn starts, so a busy port or a bad
host is one :class:`CnnlabError` line. :class:`GuardedH11` is uvicorn's h11 protocol with
the bounds it lacks: a client that does not deliver a request's headers within
``header_timeout`` seconds is answered 408 and closed, one that stalls reading a response
for ``send_timeout`` seconds is dropped, and past ``max_connections`` the longest-idle
connection is closed (503 for the newcomer when every connection is busy), so slow
clients cannot hold every descriptor.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from cnnlab.errors import CnnlabError
from cnnlab.serving.guards import ServerOptions

FD_RESERVE = 64  # descriptors kept for files, threads and torch beyond the connections
CLOSE_GRACE = 2.0  # seconds a closing connection may take to flush before it is aborted


def _raw_response(status: str, text: str, *extra: str) -> bytes:
    body = text.encode("ascii")
    head = [f"HTTP/1.1 {status}", "content-type: text/plain; charset=utf-8", *extra]
    head += ["connection: close", f"content-length: {len(body)}", "", ""]
    return "\r\n".join(head).encode("ascii") + body


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with header and send timeouts and a connection cap."""

    header_timeout: ClassVar[float] = 10.0
    send_timeout: ClassVar[float] = 30.0
    max_connections: ClassVar[int] = 512

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None
        self.lost = False
        super().connection_made(transport)
        self._watch()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.idle_since = None
        for timer in (self._timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.send_timeout, self._abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def send_400_response(self, msg: str) -> None:
        """A malformed request (a bad chunk size, a bad header): 400 and close, in raw bytes.

        uvicorn's own answer goes through h11, which raises (a traceback in the log) when
        a response to this request has already begun; then the connection is only closed.
        uvicorn has logged its one warning line already.
        """
        if self.lost or self.transport.is_closing():
            return
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.write(_raw_response("400 Bad Request", "malformed HTTP request"))
        if self.cycle is not None:  # the app's sends are dropped, its receive sees the end
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()
        self.loop.call_later(CLOSE_GRACE, self._abort)

    def _watch(self) -> None:
        """Time the wait for the next request's headers; none while a request runs."""
        if self.lost or self.transport.is_closing():
            return
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and self._timer is None:
            self.idle_since = self.loop.time()
            self._timer = self.loop.call_later(self.header_timeout, self._expire)
        elif not waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self.idle_since = None

    def _expire(self) -> None:
        self._timer = None
        secs = f"{self.header_timeout:g}"
        self._close(_raw_response("408 Request Timeout", f"no complete request within {secs} s"))

    def _close(self, answer: bytes | None = None) -> None:
        """Close, answering first if the client has sent part of a request."""
        if self.lost or self.transport.is_closing():
            return
        if answer is not None and (self.conn.trailing_data[0] or self.conn.their_state != h11.IDLE):
            self.transport.write(answer)
        self.transport.close()
        self.loop.call_later(CLOSE_GRACE, self._abort)  # a client that never reads

    def _abort(self) -> None:
        if not self.lost:
            self.transport.abort()

    def _make_room(self) -> None:
        """Over the cap: close the connection idle the longest, or refuse this one."""
        idle = [
            c
            for c in self.connections
            if isinstance(c, GuardedH11) and c is not self and c.idle_since is not None
        ]
        if idle:
            oldest = min(idle, key=lambda c: c.idle_since or 0.0)
            oldest._close(_raw_response("408 Request Timeout", "closed to make room"))
            return
        busy = _raw_response("503 Service Unavailable", "too many connections", "retry-after: 5")
        self.transport.write(busy)
        self.transport.close()
        self.loop.call_later(CLOSE_GRACE, self._abort)


def guarded_protocol(options: ServerOptions) -> type[GuardedH11]:
    """A GuardedH11 subclass with the timeouts and cap of ``options``."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = options.max_connections
    if soft != resource.RLIM_INFINITY:
        cap = max(8, min(cap, soft - FD_RESERVE))
    attrs = {
        "header_timeout": options.header_timeout,
        "send_timeout": options.send_timeout,
        "max_connections": cap,
    }
    return type("Guarded", (GuardedH11,), attrs)


def raise_fd_limit(wanted: int = 8192) -> None:
    """Raise the soft descriptor limit towards the hard one (many open connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def _bind_error(host: str, port: int, exc: OSError) -> CnnlabError:
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    if exc.errno == errno.EADDRINUSE:
        return CnnlabError(f"cannot listen on {where}: the port is in use; choose another --port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return CnnlabError(f"cannot listen on {where}: {host} is not an address of this machine")
    if exc.errno == errno.EACCES:
        return CnnlabError(f"cannot listen on {where}: permission denied (ports < 1024 need root)")
    return CnnlabError(f"cannot listen on {where}: {exc.strerror or exc}")


def bind(host: str, port: int, backlog: int = 2048) -> list[socket.socket]:
    """Listening sockets for every address of ``host`` (one port; 0 picks a free one)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise CnnlabError(f"cannot listen on {host!r}: unknown host ({reason})") from None
    socks: list[socket.socket] = []
    errors: list[OSError] = []
    for family, kind, proto, _, addr in dict.fromkeys(infos):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr[0], port, *addr[2:]))
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        socks.append(sock)
        port = port or sock.getsockname()[1]  # the same free port for every address
    busy = [e for e in errors if e.errno == errno.EADDRINUSE]
    if busy or not socks:
        for sock in socks:
            sock.close()
        raise _bind_error(host, port, (busy or errors)[0])
    return socks


def make_server(app: Any, options: ServerOptions, log_level: str = "warning") -> Any:
    """A uvicorn.Server for ``app`` with the guarded protocol and no websockets."""
    import uvicorn

    config = uvicorn.Config(
        app,
        http=guarded_protocol(options),
        ws="none",
        log_level=log_level,
        timeout_keep_alive=options.keep_alive,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=16 * 1024,
    )
    return uvicorn.Server(config)


def options_of(app: Any) -> ServerOptions:
    """The ServerOptions that create_app stored on the app (defaults for another app)."""
    state = getattr(app, "state", None)
    found = getattr(state, "server_options", None)
    return found if isinstance(found, ServerOptions) else ServerOptions()


@contextmanager
def background_server(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a thread (tests, benchmarks); yields its base URL, then stops it.

    ``port=0`` lets the system pick a free port, so parallel runs never collide.
    """
    socks = bind(host, port)
    server = make_server(app, options_of(app))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": socks}, name="cnnlab-serve", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise CnnlabError(f"the web server did not start on {host}:{port}")
            time.sleep(0.02)
        bound = socks[0].getsockname()[1]
        yield f"http://{host}:{bound}" if ":" not in host else f"http://[{host}]:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30.0)
        for sock in socks:
            sock.close()


def run(app: Any, socks: list[socket.socket], log_level: str = "info") -> None:
    """Serve ``app`` on the bound ``socks`` until interrupted (Ctrl-C)."""
    server = make_server(app, options_of(app), log_level)
    try:
        server.run(sockets=socks)
    except SystemExit as exc:  # uvicorn exits (code 3) when the app's startup fails
        raise CnnlabError(f"the web server failed to start (uvicorn exit {exc.code})") from None
