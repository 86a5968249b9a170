"""The HTTP/1.1 connection: uvicorn's httptools protocol, with a limit on a request's headers and a deadline for them.

uvicorn bounds neither. httptools buffers a header of any size, and uvicorn's keep-alive timer runs only between
requests (each byte received disarms it), so a client that sends its headers a byte a second holds a connection,
and the memory of what it sent, for as long as it likes; a hundred such clients hold a hundred. The app cannot
help, since it is called once the headers are complete. Here a request's line and headers may take
``ServeConfig.max_header_bytes`` (more: 431) and must arrive within ``ServeConfig.read_timeout_s`` of the
connection, or on a kept-alive connection of the request's first byte (later: 408); either answer closes the
connection. The body's size and deadline are :class:`searchkit.serve.guard.Guard`'s, in ASGI.

uvicorn loads the class by name (``http="searchkit.serve.protocol:GuardedHttpProtocol"``) in each worker process,
and it reads the limits from the settings :func:`searchkit.serve.runner.serve` put in the environment.
"""

from __future__ import annotations

import asyncio
import functools
import http
import json
import logging
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from searchkit.config import ServeConfig, config_from_dict
from searchkit.serve.guard import CLOSE, Receive, Scope, Send, send_json
from searchkit.serve.settings import CONFIG_ENV

logger = logging.getLogger(__name__)

LINGER_S = 1.0
"""How long a refused connection's input is still read (and dropped) before it is closed."""


@functools.cache
def limits(settings: str) -> tuple[int, float]:
    """(max_header_bytes, read_timeout_s) of the ServeConfig in JSON ``settings`` ("": the defaults)."""
    config = config_from_dict(ServeConfig, json.loads(settings or "{}"))
    return config.max_header_bytes, config.read_timeout_s


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 431 to headers over ``max_header_bytes`` and 408 to headers that
    take longer than ``read_timeout_s`` (one connection: one instance)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes, self.read_timeout_s = limits(os.environ.get(CONFIG_ENV, ""))
        self._in_head = True  # from the end of a request (or the connection's start) to the next one's headers
        self._head_received = 0  # bytes received meanwhile, which the parser may be holding
        self._head_size = 0  # the request line and headers parsed so far
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False  # answered 408 or 431 itself; closing

    # ------------------------------------------------------------------ the connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a client that connects and sends nothing is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # dropped: the connection is closing
        if self._in_head:
            self._head_received += len(data)
        super().data_received(data)
        if self._in_head and self._head_received > self.max_header_bytes:
            self._refuse(431, f"request headers over {self.max_header_bytes} bytes")

    # ------------------------------------------------------------------ the parser's callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        if self._deadline is None:  # the first byte of the next request on a kept-alive connection
            self._arm()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_received = 0
        self._disarm()
        if self._head_size <= self.max_header_bytes:
            super().on_headers_complete()
            return
        # answered in turn as any request is (after those in flight), by an app that refuses it
        served, self.app = self.app, _refusal(431, f"request headers over {self.max_header_bytes} bytes")
        try:
            super().on_headers_complete()
        finally:
            self.app = served

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next is the next request

    # ------------------------------------------------------------------ refusing
    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.read_timeout_s, self._late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        if self._in_head:
            self._refuse(408, f"the request headers did not arrive within {self.read_timeout_s:g} s")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` to the request whose headers are incomplete, and close the connection (after the
        answer to a request still in flight on it, if any)."""
        self._disarm()
        if self.transport.is_closing() or self._refused:
            return
        logger.debug("%s: %d %s", _client(self.client), status, detail)
        if self.cycle is not None and not self.cycle.response_complete:
            self.flow.pause_reading()  # nothing more from this client is read,
            self.cycle.keep_alive = False  # and the connection closes once that answer is sent
            return
        self._refused = True
        body = json.dumps({"detail": detail}).encode()
        phrase = http.HTTPStatus(status).phrase
        head = f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.transport.write(head.encode("ascii") + b"connection: close\r\n\r\n" + body)
        # A lingering close: what the client is still sending is read and dropped for a moment, since closing a
        # socket with unread data resets the connection, and the client would lose the answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def _refusal(status: int, detail: str) -> Any:
    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, status, {"detail": detail}, CLOSE)

    return refuse


def _client(address: tuple[str, int] | None) -> str:
    return "a client" if address is None else f"{address[0]}:{address[1]}"
