"""Which epoch ships, and the dev guard against the model training started from (a fine-tuned model that ends up
worse than its start must not go unnoticed).

One dev score decides both: :func:`shipped_score`, the score of the model as it ships (interpolated with the
first stage when dev has one, else the reranker alone). Keeping epochs on one score and guarding on another let
an untrained epoch ship with a guard reading ``0.5120 vs 0.5120``.

>>> shipped_score({"reranker": 0.61, "interpolated": 0.58})
0.58
>>> better_epoch({"dev": {"reranker": 0.7, "interpolated": 0.5}}, {"dev": {"reranker": 0.6, "interpolated": 0.55}})
False
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def shipped_key(dev: dict[str, Any]) -> str:
    """The key of the dev score that ships: ``"interpolated"`` when dev has a first stage, else ``"reranker"``."""
    return "interpolated" if "interpolated" in dev else "reranker"


def shipped_score(dev: dict[str, Any]) -> float:
    """The dev score of the model as shipped (see the module docstring): the one that picks epochs and guards."""
    return float(dev[shipped_key(dev)])


def guard_report(history: list[dict[str, Any]], best: int, metric: str, what: str, name: str) -> dict[str, Any] | None:
    """The dev guard's verdict: the shipped epoch against the starting model (the parent, or the base model),
    both by :func:`shipped_score`."""
    start, shipped = history[0].get("dev"), history[best].get("dev")
    if not start or not shipped:
        return None
    key = shipped_key(start)
    improved = shipped_score(shipped) > shipped_score(start)
    if not improved:
        logger.warning(
            "dev guard: the result does not beat its %s %s on dev %s (%.4f vs %.4f)",
            what,
            name,
            metric,
            shipped_score(shipped),
            shipped_score(start),
        )
    return {
        "compared_with": what,
        "model": name,
        "metric": metric,
        "score": key,
        "start": shipped_score(start),
        "shipped": shipped_score(shipped),
        "improved": improved,
    }


def better_epoch(entry: dict[str, Any], best: dict[str, Any]) -> bool:
    """Whether ``entry`` (a dev evaluation) beats the ``best`` so far by :func:`shipped_score`; without dev the
    latest epoch is the one kept."""
    if "dev" not in entry:
        return True
    return shipped_score(entry["dev"]) > shipped_score(best["dev"])
