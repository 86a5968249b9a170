"""The HTTP app: FastAPI routes over a :class:`searchkit.serve.service.Service`, the search page, metrics, reload.

Routes (documented at ``/docs``): ``POST /search``, ``POST /search/batch``, ``POST /explain``, ``POST /feedback``,
``GET /health``, ``GET /metrics``, ``POST /admin/reload`` and the page at ``/``. Bad input is answered with a 4xx
and a one-line ``detail``, never a traceback: malformed bodies 422 (bad JSON 400; a value of the wrong type, such as
``"k": true``, is malformed), unknown modes, empty queries and values over the limits 400, a missing or wrong token
401, a body that is not JSON 415, a body over the limit 413 and one too slow 408 (:mod:`searchkit.serve.guard`);
headers over the limit 431 and too slow 408 (:mod:`searchkit.serve.protocol`); feedback on an unknown ``request_id``
404. No public route takes a path from the client: reload re-opens the folder the server was started on, or, given a
model path (an admin route, so always behind the token), loads that reranker only if its card's dev guard passed;
the page's files are read once from the package. With a feedback log (:mod:`searchkit.serve.feedback`) every
``/search`` answer carries the ``request_id`` it was logged under.

The three search routes are answered by :class:`JsonRoutes` in front of FastAPI's own per-request machinery
(dependency solving, its middleware layers), which costs more CPU than a BM25 query: the same pydantic model parses
the body and the same Service method answers, so FastAPI's routes (``lean=False`` serves them) and these agree.

>>> import tempfile, pathlib
>>> from fastapi.testclient import TestClient
>>> from searchkit.index import Index
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "idx"
>>> _ = Index.build("tests/data/tiny", folder)
>>> with TestClient(create_app(EngineSpec(str(folder)))) as client:
...     client.post("/search", json={"query": "cats chasing mice", "k": 1}).json()["hits"][0]["doc_id"]
'd1'
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from searchkit.config import ServeConfig, config_from_dict
from searchkit.serve.batcher import QueueFull
from searchkit.serve.engine import EngineSpec, SearchEngine
from searchkit.serve.feedback import FeedbackRecorder, FeedbackRefused
from searchkit.serve.guard import ASGIApp, Guard, Receive, Scope, Send, send_json
from searchkit.serve.metrics import ServeMetrics
from searchkit.serve.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorOut,
    ExplainResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    ReloadRequest,
    ReloadResponse,
    SearchRequest,
    SearchResponse,
)
from searchkit.serve.service import ReloadFailed, Service
from searchkit.serve.settings import CONFIG_ENV, FEEDBACK_ENV, SPEC_ENV, SUPERVISOR_ENV, TOKEN_ENV, FeedbackSettings
from searchkit.types import ConfigError
from searchkit.version import __version__

logger = logging.getLogger(__name__)

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript"),
    "/static/style.css": ("style.css", "text/css"),
}
DOCS = {"/docs", "/openapi.json", "/docs/oauth2-redirect"}
# The page runs only its own script and style, and talks only to this server.
PAGE_POLICY = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 408, 409, 413, 415, 422, 503)
}

JsonHandler = Callable[[Any], Awaitable[dict[str, Any]]]


class _ServeApp(FastAPI):
    """FastAPI with ``front`` (the token, size limit, metrics and the lean search routes) outside its middleware
    stack, so that they run first and requests they answer never enter it."""

    front: Callable[[ASGIApp], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack: ASGIApp = super().build_middleware_stack()
        return stack if self.front is None else self.front(stack)


def create_app(
    spec: EngineSpec | None = None,
    config: ServeConfig = ServeConfig(),  # noqa: B008 - frozen dataclass, safe as a default
    *,
    token: str | None = None,
    engine: SearchEngine | None = None,
    handle_sighup: bool = False,
    supervisor_pid: int | None = None,
    lean: bool = True,
    feedback: FeedbackSettings | None = None,
) -> FastAPI:
    """The app serving ``spec`` (or an already opened ``engine``) with ``config``'s limits and batching.

    ``token``: required as a bearer token on every route but the page and docs, and on admin routes always.
    ``handle_sighup``: reload on SIGHUP (only where the app runs in the main thread, as under uvicorn).
    ``supervisor_pid``: a multi-worker server's supervisor, which ``/admin/reload`` asks to restart the workers.
    ``lean``: answer the search routes in front of FastAPI and leave FastAPI's OpenTelemetry off (False: FastAPI
    answers every route, e.g. to trace them). Use the app in ``with TestClient(app)`` (one event loop for its
    lifetime), or under uvicorn. ``feedback``: log impressions and feedback (:mod:`searchkit.serve.feedback`).
    """
    if engine is None:
        if spec is None:
            raise ConfigError("create_app needs an EngineSpec or a SearchEngine")
        engine = SearchEngine(spec)
    metrics = ServeMetrics()
    recorder = None if feedback is None else FeedbackRecorder(feedback, metrics)
    service = Service(engine, config, metrics, supervisor_pid, recorder)
    background: set[asyncio.Task[Any]] = set()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        hup = handle_sighup and threading.current_thread() is threading.main_thread()
        if hup:

            def on_hup() -> None:
                logger.info("SIGHUP: reloading %s", engine.spec.index)
                task = loop.create_task(service.reload())
                background.add(task)
                task.add_done_callback(_forget(background))

            loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            await service.close()

    telemetry: dict[str, Any] = {"telemetry": {"tracing": False, "metrics": False, "logs": False}} if lean else {}
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        telemetry = {}  # a FastAPI from before its OpenTelemetry support
    app = _ServeApp(
        title="searchkit",
        version=__version__,
        summary="BM25 + dense retrieval, fusion and reranking over one searchkit index.",
        lifespan=lifespan,
        redoc_url=None,
        **telemetry,
    )
    app.state.service, app.state.engine, app.state.metrics = service, engine, metrics
    app.state.batcher = service.batcher

    @app.post("/search", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    async def search(body: SearchRequest) -> Response:
        """Best ``k`` hits for one query (concurrent requests with the same settings are batched)."""
        return _json(await service.search(body))

    @app.post("/search/batch", response_model=BatchResponse, responses=ERRORS, tags=["search"])
    async def search_batch(body: BatchRequest) -> Response:
        """Best ``k`` hits for each of several queries, in one Searcher call."""
        return _json(await service.search_batch(body))

    @app.post("/explain", response_model=ExplainResponse, responses=ERRORS, tags=["search"])
    async def explain(body: SearchRequest) -> Response:
        """The top ``k`` with each hit's rank and score in every stage that ran (as ``searchkit search --explain``)."""
        return _json(await service.explain(body))

    @app.post("/feedback", response_model=FeedbackResponse, responses=ERRORS, tags=["feedback"])
    async def feedback_route(body: FeedbackRequest) -> Response:
        """Record a click, graded judgment or dwell time on a result of a /search answer (its request_id); answered
        once it is committed to the log (an acknowledged event survives a crash)."""
        return _json(await service.feedback(body))

    @app.get("/health", response_model=HealthResponse, responses=ERRORS, tags=["operations"])
    async def health() -> Response:
        """The index generation served (fingerprint, components), modes, models and version."""
        return _json(engine.health())

    @app.get("/metrics", response_class=Response, responses=ERRORS, tags=["operations"])
    async def prometheus() -> Response:
        """Prometheus text: requests, errors, latency per route and stage, batch sizes, queue depth, index, models."""
        content, media_type = metrics.render()
        return Response(content, media_type=media_type)

    @app.post("/admin/reload", response_model=ReloadResponse, responses=ERRORS, tags=["operations"])
    async def reload(body: ReloadRequest | None = None) -> Response:
        """Open the index folder again (after `index build --overwrite` or `index add`) and swap it in; requests in
        flight finish on the old generation. With several workers, each is restarted in turn (202). With
        ``{"model": PATH}``: serve that reranker folder instead, only if its card's dev guard passed (else 409)."""
        status, payload = await service.reload(body)
        return _json(payload, status)

    for route, (name, media_type) in STATIC.items():
        app.add_api_route(route, _static_route(name, media_type), methods=["GET"], include_in_schema=False)
    _add_error_handlers(app)
    _document_bearer(app)

    posted: dict[str, tuple[type[BaseModel], JsonHandler]] = {
        "/search": (SearchRequest, service.search),
        "/search/batch": (BatchRequest, service.search_batch),
        "/explain": (SearchRequest, service.explain),
        "/feedback": (FeedbackRequest, service.feedback),
    }
    routes = {route.path for route in app.routes if hasattr(route, "path")}

    def front(stack: ASGIApp) -> ASGIApp:
        inner = JsonRoutes(stack, posted) if lean else stack
        return Guard(
            inner,
            metrics=metrics,
            routes=routes,
            public=set(STATIC) | DOCS,
            token=token,
            max_body_bytes=config.max_body_bytes,
            read_timeout_s=config.read_timeout_s,
        )

    app.front = front
    return app


def app_from_env() -> FastAPI:
    """The app as ``searchkit serve`` describes it in the environment (uvicorn's factory, in every worker)."""
    spec = EngineSpec.from_json(os.environ[SPEC_ENV])
    config = config_from_dict(ServeConfig, json.loads(os.environ.get(CONFIG_ENV) or "{}"))
    supervisor = os.environ.get(SUPERVISOR_ENV)
    feedback = os.environ.get(FEEDBACK_ENV)
    return create_app(
        spec,
        config,
        token=os.environ.get(TOKEN_ENV) or None,
        handle_sighup=supervisor is None,
        supervisor_pid=int(supervisor) if supervisor else None,
        feedback=FeedbackSettings.from_json(feedback) if feedback else None,
    )


class JsonRoutes:
    """POST routes answered in front of FastAPI: ``routes`` maps a path to its body model and its handler.

    The body is parsed by the same pydantic model FastAPI would use, and errors map to the same statuses and
    one-line details (:func:`failure`, :func:`validation_detail`); other requests go on to ``app``.
    """

    def __init__(self, app: ASGIApp, routes: Mapping[str, tuple[type[BaseModel], JsonHandler]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        model, handler = route
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers: Mapping[str, str] = {}
        body = b"".join(chunks) or b"{}"  # no body: no fields (as FastAPI reads it)
        try:
            status, payload = 200, await handler(model.model_validate_json(body))
        except ValidationError as err:
            status, detail = validation_detail(err.errors(), ("body",))
            payload = {"detail": detail}
        except Exception as err:
            status, detail, headers = failure(err)
            payload = {"detail": detail}
        await send_json(send, status, payload, headers)


# ---------------------------------------------------------------------- errors
def failure(err: Exception) -> tuple[int, str, Mapping[str, str]]:
    """(status, one-line detail, headers) for an exception a route raised; unexpected ones are logged, and answered
    500 without their traceback."""
    if isinstance(err, StarletteHTTPException):
        return err.status_code, _one_line(str(err.detail)), err.headers or {}
    if isinstance(err, ConfigError):
        return 400, _one_line(str(err)), {}
    if isinstance(err, ReloadFailed):
        return 409, _one_line(str(err)), {}
    if isinstance(err, FeedbackRefused):
        return err.status, _one_line(err.detail), {}
    if isinstance(err, QueueFull):
        return 503, str(err), {"retry-after": "1"}
    logger.error("request failed: %s: %s", type(err).__name__, err, exc_info=err)
    return 500, f"internal error ({type(err).__name__}); see the server log", {}


def validation_detail(errors: Any, prefix: tuple[str, ...] = ()) -> tuple[int, str]:
    """(status, one line) for pydantic's errors: bad JSON is 400, anything else malformed 422."""
    first: dict[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        return 400, _one_line(f"the body is not valid JSON ({reason})" if reason else "the body is not valid JSON")
    where = ".".join(str(part) for part in (*prefix, *first.get("loc", ())))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = f"{first.get('msg')}{more}"
    return 422, _one_line(f"{where}: {message}" if where else message)


def _add_error_handlers(app: FastAPI) -> None:
    async def malformed(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        return _error(*validation_detail(err.errors()))

    async def refused(_: Request, err: Exception) -> JSONResponse:
        status, detail, headers = failure(err)
        return _error(status, detail, headers)

    app.add_exception_handler(RequestValidationError, malformed)
    for kind in (StarletteHTTPException, ConfigError, ReloadFailed, FeedbackRefused, QueueFull, Exception):
        app.add_exception_handler(kind, refused)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------- responses
def _json(payload: Any, status: int = 200) -> Response:
    """JSON without FastAPI's re-validation of the payload (the routes build exactly the documented shape)."""
    return Response(json.dumps(payload, ensure_ascii=False), status_code=status, media_type="application/json")


def _error(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=dict(headers or {}))


def _static_route(name: str, media_type: str) -> Any:
    content = (files("searchkit.serve") / "static" / name).read_bytes()  # read once, from the package
    headers = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
    if name.endswith(".html"):
        headers["content-security-policy"] = PAGE_POLICY

    async def static() -> Response:
        return Response(content, media_type=media_type, headers=headers)

    return static


def _forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("SIGHUP reload: %s", task.exception())  # the old generation is still served

    return done


def _document_bearer(app: FastAPI) -> None:
    """Declare the bearer token in the OpenAPI schema, so /docs can send it ("Authorize")."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            document.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            document["security"] = [{"bearer": []}]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]
