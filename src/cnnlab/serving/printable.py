"""Error bodies of the web APIs as printable text: no control characters, no huge echoes.

An error's ``detail`` may hold what the client sent: a ``class_name`` with newlines and
terminal escapes, a 1 MB string, a 524,000-entry list (FastAPI's 422 echoes each bad
``input`` whole). :class:`PrintableErrors` rewrites every JSON error body (status 400 and
up) so that each string in it is one printable line of bounded length
(:func:`cnnlab.errors.printable`) and each list holds a bounded number of entries.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnnlab.errors import printable

MAX_TEXT = 300  # characters of one string in an error body
MAX_ITEMS = 20  # entries of one list in an error body (422s list one per bad field)
MAX_ERROR_BODY = 1 << 20  # a larger error body is not rewritten but replaced


def tidy(value: Any, depth: int = 0) -> Any:
    """``value`` (parsed JSON) with strings printable and short, lists and depth bounded."""
    if depth > 8:
        return "…"
    if isinstance(value, str):
        return printable(value, MAX_TEXT)
    if isinstance(value, list):
        items = [tidy(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"… ({len(value):,} entries)")
        return items
    if isinstance(value, dict):
        return {printable(k, 80): tidy(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
    return value


def _rewrite(body: bytes) -> bytes:
    if len(body) > MAX_ERROR_BODY:
        return json.dumps(
            {"detail": f"the request was refused ({len(body):,}-byte error)"}
        ).encode()
    try:
        data = json.loads(body)
    except ValueError:  # not JSON after all: leave it as sent
        return body
    return json.dumps(tidy(data), ensure_ascii=True, allow_nan=False).encode()


class PrintableErrors:
    """ASGI middleware: JSON error bodies (status >= 400) rewritten by :func:`tidy`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_printable(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                is_json = headers.get("content-type", "").startswith("application/json")
                if message["status"] >= 400 and is_json:
                    start = message  # held until the whole body is here
                    return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _rewrite(b"".join(chunks))
            MutableHeaders(scope=start)["content-length"] = str(len(body))
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, send_printable)
