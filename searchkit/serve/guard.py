"""The server's front door, as plain ASGI in front of FastAPI: the bearer token, the body-size limit, request metrics.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which costs a task and a stream per request. Every
request is counted and timed by route (unknown paths share the route ``other``, so a scanner cannot grow the
metrics). With a token set, every route needs ``Authorization: Bearer TOKEN`` except the page's static files and
the API docs, which hold no data; ``/admin/`` routes need it always (no token set: they are refused). A body over
``max_body_bytes`` is refused with 413 before the app reads it, whether or not the client sent its length.
"""

from __future__ import annotations

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


class Guard:
    """Wrap ``app``: check the token and the body size, count and time every request in ``metrics``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServeMetrics,
        routes: set[str],
        public: set[str],
        token: str | None,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.public = public
        self.expected = None if not token else f"Bearer {token}".encode()
        self.max_body_bytes = max_body_bytes

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
            refusal = self._refusal(scope, path)
            if refusal is not None:
                code, detail = refusal
                extra = {"www-authenticate": "Bearer"} if code == 401 else {}
                await send_json(counted, code, {"detail": detail}, extra)
                return
            body = await self._body(scope, receive)
            if body is None:
                await send_json(counted, 413, {"detail": f"request body over {self.max_body_bytes} bytes"})
                return
            await self.app(scope, _replay(body, receive), counted)
        finally:
            route = path if path in self.routes else "other"
            self.metrics.request(route, status, time.perf_counter() - start)

    def _refusal(self, scope: Scope, path: str) -> tuple[int, str] | None:
        admin = path.startswith(ADMIN_PREFIX)
        if self.expected is None:
            if admin:
                return 403, f"admin routes need a token: start the server with --token or {TOKEN_ENV}"
            return None
        if path in self.public and not admin:
            return None
        given = dict(scope["headers"]).get(b"authorization")
        if given is None:
            return 401, "missing token: send the header 'Authorization: Bearer TOKEN'"
        if not hmac.compare_digest(given, self.expected):
            return 401, "wrong token"
        return None

    async def _body(self, scope: Scope, receive: Receive) -> list[Message] | None:
        """The request's body messages, read ahead (None when it is over the limit)."""
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return []
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return None
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages  # the client went away: the app sees it
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives the messages read ahead, then what the client sends next (a disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
