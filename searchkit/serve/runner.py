"""Running the server: uvicorn with :func:`searchkit.serve.app.app_from_env` as its app factory.

The settings travel in environment variables (:mod:`searchkit.serve.settings`), so each of ``config.workers``
processes builds the same app; uvicorn is imported when the server starts. Its HTTP/1.1 connections are
:class:`searchkit.serve.protocol.GuardedHttpProtocol`'s (headers' size limit and deadline), and WebSockets are off
(no route uses them).
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

from searchkit.config import ServeConfig, config_to_dict
from searchkit.serve.engine import EngineSpec
from searchkit.serve.settings import (
    CONFIG_ENV,
    FEEDBACK_ENV,
    SPEC_ENV,
    SUPERVISOR_ENV,
    TOKEN_ENV,
    FeedbackSettings,
    require_extra,
)

PROTOCOL = "searchkit.serve.protocol:GuardedHttpProtocol"


def serve(
    spec: EngineSpec,
    config: ServeConfig = ServeConfig(),  # noqa: B008 - frozen dataclass, safe as a default
    *,
    token: str | None = None,
    feedback: FeedbackSettings | None = None,
) -> None:
    """Serve ``spec`` with uvicorn until interrupted (Ctrl+C or SIGTERM; SIGHUP reloads the index); ``feedback``:
    log impressions and feedback (:mod:`searchkit.serve.feedback`).

    The settings travel in environment variables, so that each of ``config.workers`` processes builds the same app
    (uvicorn's factory :func:`searchkit.serve.app.app_from_env`).
    """
    require_extra()
    import uvicorn

    os.environ[SPEC_ENV] = spec.to_json()
    os.environ[CONFIG_ENV] = json.dumps(config_to_dict(config))
    if token:
        os.environ[TOKEN_ENV] = token
    if feedback is not None:
        os.environ[FEEDBACK_ENV] = feedback.to_json()
    else:
        os.environ.pop(FEEDBACK_ENV, None)
    if config.workers > 1:  # uvicorn's supervisor (this process) restarts every worker on SIGHUP
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
    else:
        os.environ.pop(SUPERVISOR_ENV, None)
    extra: dict[str, Any] = {}
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        # a restarted worker opens the index and loads its models before it is ready: seconds, not uvicorn's 5
        extra["timeout_worker_healthcheck"] = config.worker_ready_seconds
    uvicorn.run(
        "searchkit.serve.app:app_from_env",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        access_log=False,  # one log line a request costs more than a BM25 query; /metrics counts them
        server_header=False,
        http=PROTOCOL,
        ws="none",
        **extra,
    )
