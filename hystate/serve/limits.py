"""Limits on what one client may hold of the server: the size of a request's body, the time it
may take to send it, and the time it may take to send its request head.

uvicorn reads a body as fast as it comes and holds it whole (Strawberry and the actions read
``request.body()``): without a limit, one request without a token could make the server as
large as its body. It also waits forever for a request head that never ends (slowloris: one
file descriptor per such connection). ``BodyLimit`` reads the body before the application sees
it (413 when it is larger than ``MAX_BODY``, 408 when it is slower than ``BODY_TIMEOUT``);
``TimedH11Protocol`` closes a connection whose request head is not complete within
``HEAD_TIMEOUT`` seconds. An event stream, once its head is read, is not affected.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_BODY = 64 * 1024  # a GraphQL query is at most 1,000 tokens; an action's body one reason
BODY_TIMEOUT = 10.0  # seconds to send a body of at most MAX_BODY bytes
HEAD_TIMEOUT = 10.0  # seconds to send a request head


class BodyLimit:
    """Reads each HTTP request's body (at most ``MAX_BODY`` bytes, within ``BODY_TIMEOUT``
    seconds) before the application runs, and hands it over as one message."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _refuse(send, 413, f"the request body is over {self.max_body} bytes")
            return
        try:
            body = await asyncio.wait_for(self._read(receive), BODY_TIMEOUT)
        except _TooLarge:
            await _refuse(send, 413, f"the request body is over {self.max_body} bytes")
            return
        except TimeoutError:
            await _refuse(send, 408, f"the request body took over {BODY_TIMEOUT:g} seconds")
            return
        except _Gone:
            return
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the disconnect, for a stream

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection that has not sent a whole request
    head within ``HEAD_TIMEOUT`` seconds of connecting (or of starting its next request)."""

    head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Armed while the client owes a request head; stopped once the head is in."""
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_too_slow)
        else:
            self._stop_head_timer()

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_options() -> dict[str, Any]:
    """uvicorn.Config's options for the protocol above."""
    return {"http": TimedH11Protocol}
