"""The names the server's processes share (environment variables) and the check that the ``serve`` extra is there.

Light on purpose: the CLI reads these without loading FastAPI.

>>> TOKEN_ENV
'SEARCHKIT_TOKEN'
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from dataclasses import dataclass

from searchkit.config import check_types
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


FEEDBACK_ENV = "SEARCHKIT_SERVE_FEEDBACK"
SALT_ENV = "SEARCHKIT_FEEDBACK_SALT"
"""The salt of hashed queries (``hash_queries``); without it, one is made once and kept beside the log
(``LOG.salt``, readable by its owner only), so hashes stay comparable across restarts."""


@dataclass(frozen=True)
class FeedbackSettings:
    """What ``searchkit serve --feedback-log`` records (:mod:`searchkit.serve.feedback`).

    ``log``: the SQLite file (:class:`searchkit.formats.FeedbackLog`); its folder must exist. ``retention_days``:
    impressions older than this are deleted with their feedback, at start and hourly (0: kept forever).
    ``hash_queries``: store each query as its salted sha256 (:func:`searchkit.formats.hash_query`, salt from
    ``$SEARCHKIT_FEEDBACK_SALT`` or ``LOG.salt``) instead of its text. ``explore``: the share of ``/search``
    answers in which one random adjacent pair of the shown hits is swapped (recorded as ``Impression.swapped``),
    for estimating position bias. ``seed``: the explorer's random seed (None: from the system). ``max_pending``:
    impressions waiting for the writer thread (more: the newest are not logged, counted in the metrics, and the
    search is answered all the same).

    >>> FeedbackSettings("fb.sqlite", explore=0.05).explore
    0.05
    >>> FeedbackSettings("fb.sqlite", explore=2.0)
    Traceback (most recent call last):
    ...
    searchkit.types.ConfigError: FeedbackSettings.explore must be in [0, 1], got 2.0
    """

    log: str
    retention_days: float = 90.0
    hash_queries: bool = False
    explore: float = 0.0
    seed: int | None = None
    max_pending: int = 10_000

    def __post_init__(self) -> None:
        check_types(self)
        if not self.log:
            raise ConfigError("FeedbackSettings.log must name a file")
        if not 0.0 <= self.explore <= 1.0:
            raise ConfigError(f"FeedbackSettings.explore must be in [0, 1], got {self.explore}")
        if not 0.0 <= self.retention_days < math.inf:
            raise ConfigError(f"FeedbackSettings.retention_days must be >= 0 (0: forever), got {self.retention_days}")
        if self.max_pending < 1:
            raise ConfigError(f"FeedbackSettings.max_pending must be >= 1, got {self.max_pending}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FeedbackSettings:
        return cls(**json.loads(text))
