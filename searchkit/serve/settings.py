"""The names the server's processes share (environment variables) and the check that the ``serve`` extra is there.

Light on purpose: the CLI reads these without loading FastAPI.

>>> TOKEN_ENV
'SEARCHKIT_TOKEN'
"""

from __future__ import annotations

import importlib

from searchkit.types import ConfigError

EXTRA = ("fastapi", "uvicorn", "httptools", "prometheus_client")  # httptools: serve.protocol's parser
TOKEN_ENV = "SEARCHKIT_TOKEN"
"""The environment variable holding the bearer token (``searchkit serve --token``)."""
SPEC_ENV = "SEARCHKIT_SERVE_SPEC"
CONFIG_ENV = "SEARCHKIT_SERVE_CONFIG"
SUPERVISOR_ENV = "SEARCHKIT_SERVE_SUPERVISOR"
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
