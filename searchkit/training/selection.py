"""Which epoch ships, and the dev guard against the model training started from (a fine-tuned model that ends up
worse than its start must not go unnoticed)."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def guard_report(history: list[dict[str, Any]], best: int, metric: str, what: str, name: str) -> dict[str, Any] | None:
    """The dev guard's verdict: the shipped epoch against the starting model (the parent, or the base model).

    Compared as shipped: interpolated with the first stage when dev has one, else the reranker alone.
    """
    start, shipped = history[0].get("dev"), history[best].get("dev")
    if not start or not shipped:
        return None
    key = "interpolated" if "interpolated" in start else "reranker"
    improved = shipped[key] > start[key]
    if not improved:
        logger.warning(
            "dev guard: the result does not beat its %s %s on dev %s (%.4f vs %.4f)",
            what,
            name,
            metric,
            shipped[key],
            start[key],
        )
    return {
        "compared_with": what,
        "model": name,
        "metric": metric,
        "score": key,
        "start": start[key],
        "shipped": shipped[key],
        "improved": improved,
    }


def better_epoch(entry: dict[str, Any], best: dict[str, Any], metric: str) -> bool:
    if "dev" not in entry:  # no dev set: the latest epoch is the one kept
        return True
    return bool(entry["dev"]["reranker"] > best["dev"]["reranker"])
