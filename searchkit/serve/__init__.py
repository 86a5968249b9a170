"""``searchkit serve``: an HTTP search API over one index, a search page, Prometheus metrics, hot index reload.

Needs the ``serve`` extra (``pip install 'searchkit[serve]'``: FastAPI, uvicorn, prometheus-client); importing this
package does not load them. Modules: ``engine`` (the served index generation and its searchers, the swap),
``batcher`` (grouping concurrent queries into one call), ``service`` (what each route does), ``schemas``
(request and response bodies), ``guard`` (token, body size, request metrics), ``metrics``, ``app`` (FastAPI
wiring, the page's static files), ``load`` (a server in a child process, load on it, the bare-Searcher baseline).

>>> from searchkit.config import ServeConfig
>>> ServeConfig().host   # loopback unless told otherwise
'127.0.0.1'
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from typing import TYPE_CHECKING, Any

from searchkit.config import ServeConfig, config_to_dict
from searchkit.types import ConfigError

if TYPE_CHECKING:
    from searchkit.serve.engine import EngineSpec

EXTRA = ("fastapi", "uvicorn", "prometheus_client")
TOKEN_ENV = "SEARCHKIT_TOKEN"
"""The environment variable holding the bearer token (``searchkit serve --token``)."""
INSTALL_HINT = "pip install 'searchkit[serve]'"


def require_extra() -> None:
    """ConfigError naming the install command when a library of the ``serve`` extra is missing."""
    missing = []
    for name in EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name.replace("_", "-"))
    if missing:
        raise ConfigError(f"searchkit serve needs {', '.join(missing)}: {INSTALL_HINT}")


def serve(spec: EngineSpec, config: ServeConfig = ServeConfig(), *, token: str | None = None) -> None:  # noqa: B008
    """Serve ``spec`` with uvicorn until interrupted (Ctrl+C or SIGTERM; SIGHUP reloads the index).

    The settings travel in environment variables, so that each of ``config.workers`` processes builds the same app
    (uvicorn's factory :func:`searchkit.serve.app.app_from_env`).
    """
    require_extra()
    import uvicorn

    from searchkit.serve.app import CONFIG_ENV, SPEC_ENV, SUPERVISOR_ENV

    os.environ[SPEC_ENV] = spec.to_json()
    os.environ[CONFIG_ENV] = json.dumps(config_to_dict(config))
    if token:
        os.environ[TOKEN_ENV] = token
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
        **extra,
    )
