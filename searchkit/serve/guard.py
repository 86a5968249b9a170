"""The server's front door, as plain ASGI in front of FastAPI: the bearer token, the body's type, size and deadline,
request metrics.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which costs a task and a stream per request. Every
request is counted and timed by route (unknown paths share the route ``other``, so a scanner cannot grow the
metrics). With a token set, every route needs ``Authorization: Bearer TOKEN`` (the scheme in any case, as RFC 7235
has it) except the page's static files and the API docs, which hold no data; ``/admin/`` routes need it always (no
token set: they are refused). A POST that carries a body must say ``Content-Type: application/json`` (else 415): a
web page on another site can send ``text/plain`` or a form to 127.0.0.1 without asking (a CORS "simple request"),
but not JSON. A body over ``max_body_bytes`` is refused with 413 before the app reads it, whether or not the client
sent its length, and one not received within ``read_timeout_s`` with 408 (the headers' size and deadline are
:mod:`searchkit.serve.protocol`'s, as the app sees a request only once they are complete). Every refusal closes the
connection, so that what the client still sends is never read.

>>> bearer_token(b"bearer  s3cret"), bearer_token(b"Basic czNjcmV0"), bearer_token(b"s3cret")
(b's3cret', None, None)
>>> is_json(b"application/json; charset=utf-8"), is_json(b"Application/JSON"), is_json(b"text/plain")
(True, True, False)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from searchkit.serve.metrics import ServeMetrics
from searchkit.serve.settings import TOKEN_ENV

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ADMIN_PREFIX = "/admin/"


async def send_json(send: Send, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
    """Answer ``payload`` as JSON with ``status`` (and ``headers``)."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


CLOSE = {"connection": "close"}


class Refused(Exception):
    """A request the guard answers itself: ``status`` and a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def bearer_token(authorization: bytes) -> bytes | None:
    """The token of an ``Authorization: Bearer TOKEN`` header's value (the scheme in any case); None for another
    scheme or none."""
    scheme, _, token = authorization.partition(b" ")
    return token.strip(b" ") if scheme.lower() == b"bearer" else None


def is_json(content_type: bytes) -> bool:
    """Whether a Content-Type header's value names JSON (``application/json``, any parameters, any case)."""
    return content_type.partition(b";")[0].strip().lower() == b"application/json"


class Guard:
    """Wrap ``app``: check the token and the body's type, size and deadline; count and time every request in
    ``metrics``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServeMetrics,
        routes: set[str],
        public: set[str],
        token: str | None,
        max_body_bytes: int,
        read_timeout_s: float,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.public = public
        self.token = None if not token else token.encode()
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        status = 500  # what a request that raised is counted as

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = dict(scope["headers"])
            try:
                self._check(scope["method"], path, headers)
                body = await self._body(headers, receive)
            except Refused as refused:
                extra = {"www-authenticate": "Bearer", **CLOSE} if refused.status == 401 else CLOSE
                await send_json(counted, refused.status, {"detail": refused.detail}, extra)
                return
            await self.app(scope, _replay(body, receive), counted)
        finally:
            route = path if path in self.routes else "other"
            self.metrics.request(route, status, time.perf_counter() - start)

    def _check(self, method: str, path: str, headers: Mapping[bytes, bytes]) -> None:
        """Refused when the request is refused before its body is read: the token, then the body's type."""
        self._check_token(path, headers)
        if method == "POST" and _has_body(headers):
            content_type = headers.get(b"content-type")
            if content_type is None or not is_json(content_type):
                got = "none" if content_type is None else repr(content_type.decode("latin-1"))
                raise Refused(415, f"send the body as JSON, with 'Content-Type: application/json' (got {got})")

    def _check_token(self, path: str, headers: Mapping[bytes, bytes]) -> None:
        admin = path.startswith(ADMIN_PREFIX)
        if self.token is None:
            if admin:
                raise Refused(403, f"admin routes need a token: start the server with --token or {TOKEN_ENV}")
            return
        if path in self.public and not admin:
            return
        given = headers.get(b"authorization")
        if given is None:
            raise Refused(401, "missing token: send the header 'Authorization: Bearer TOKEN'")
        token = bearer_token(given)
        if token is None:
            raise Refused(401, "not a bearer token: send the header 'Authorization: Bearer TOKEN'")
        if not hmac.compare_digest(token, self.token):
            raise Refused(401, "wrong token")

    async def _body(self, headers: Mapping[bytes, bytes], receive: Receive) -> list[Message]:
        """The request's body messages, read ahead whatever the method (so that a GET's body too must arrive in
        time); Refused when it is over the limit (413) or late (408)."""
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            raise self._too_big()
        messages, size = [], 0
        try:
            async with asyncio.timeout(self.read_timeout_s):
                while True:
                    message = await receive()
                    messages.append(message)
                    if message["type"] != "http.request":
                        return messages  # the client went away: the app sees it
                    size += len(message.get("body", b""))
                    if size > self.max_body_bytes:
                        raise self._too_big()
                    if not message.get("more_body", False):
                        return messages
        except TimeoutError:
            raise Refused(408, f"the request body did not arrive within {self.read_timeout_s:g} s") from None

    def _too_big(self) -> Refused:
        return Refused(413, f"request body over {self.max_body_bytes} bytes")


def _has_body(headers: Mapping[bytes, bytes]) -> bool:
    """Whether a request carries a body (HTTP/1.1: one without a length or chunked encoding has none)."""
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives the messages read ahead, then what the client sends next (a disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
