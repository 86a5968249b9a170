"""Examination propensity per rank, estimated from the feedback log's randomized adjacent swaps.

People click what they look at, and they look at the top more: a click at rank 5 says more about a document than one
at rank 1. Unbiased learning to rank weighs each click by ``1 / p(rank)``, the inverse of the probability that
rank was examined (Joachims et al. 2017), and ``p`` has to be measured. ``serve``'s ``explore`` setting swaps the
results at ranks ``r`` and ``r + 1`` for a small random share of the traffic (the log's ``swapped`` column); under
the position-based model the click rate of a document is ``p(rank) * relevance``, so the same documents' click
rates at ``r + 1`` and at ``r`` estimate ``p(r + 1) / p(r)``. This is intervention harvesting (Agarwal et al.
2019): for every (query, document) shown at both ranks, in any impressions of the log (swaps, or two model versions
that ranked it differently),

    ratio(r) = sum over those pairs of clickrate(r + 1)  /  sum over them of clickrate(r)

and the ratios chain to ``p(r) / p(1)`` (rank 1 is 1). The confidence interval is a seeded bootstrap over queries
(the unit that is sampled: a query's impressions share its documents). A link ``r -> r + 1`` with fewer than
``min_swaps`` swapped impressions (or no click to divide by) takes the prior's ratio instead (the position-based
model's standard examination probabilities, :data:`PBM_PRIOR`), said in one log line, and every rank below it is
marked ``prior``.

>>> propensities = prior_propensities(4)
>>> [round(p, 3) for p in propensities.values], propensities.source
([1.0, 0.897, 0.706, 0.5], ('prior', 'prior', 'prior', 'prior'))
>>> propensities.weight(4, clip=10.0)
2.0
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from searchkit.config import FEEDBACK_MIN_SWAPS
from searchkit.formats import Feedback, Impression
from searchkit.types import ConfigError

logger = logging.getLogger(__name__)

PBM_PRIOR = (0.68, 0.61, 0.48, 0.34, 0.28, 0.20, 0.11, 0.10, 0.08, 0.06)
"""Examination probability at ranks 1-10 of the position-based model as commonly parameterised (e.g. the ULTRA
toolkit's and the Baidu-ULTR simulations); ranks past 10 take the last value."""

MIN_SWAPS = FEEDBACK_MIN_SWAPS
"""Swapped impressions a rank link needs before its estimate replaces the prior's."""


@dataclass(frozen=True)
class Propensities:
    """Relative examination propensity ``p(r) / p(1)`` for ranks ``1 .. len(values)``, with its interval.

    ``lower``/``upper``: the ``confidence`` bootstrap interval (equal to ``values`` where nothing was estimated);
    ``swaps[r - 1]``: swapped impressions of the link ``r -> r + 1``; ``source[r - 1]``: ``estimated`` or
    ``prior`` (the rank's chain holds a link taken from the prior).
    """

    values: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    swaps: tuple[int, ...]
    source: tuple[str, ...]
    confidence: float = 0.95

    def at(self, rank: int) -> float:
        """``p(rank) / p(1)``; ranks past the estimated ones take the last value."""
        if rank < 1:
            raise ConfigError(f"ranks start at 1, got {rank}")
        return self.values[min(rank, len(self.values)) - 1]

    def weight(self, rank: int, clip: float | None = None) -> float:
        """The inverse-propensity weight of a click at ``rank``, ``1 / p(rank)``, at most ``clip``."""
        value = 1.0 / max(self.at(rank), 1e-12)
        return value if clip is None else min(value, clip)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (for an export's sidecar and a model card)."""
        return {
            "values": [round(v, 6) for v in self.values],
            "lower": [round(v, 6) for v in self.lower],
            "upper": [round(v, 6) for v in self.upper],
            "swaps": list(self.swaps),
            "source": list(self.source),
            "confidence": self.confidence,
        }


def prior_propensities(depth: int = len(PBM_PRIOR), prior: Sequence[float] = PBM_PRIOR) -> Propensities:
    """The prior's relative propensities for ranks ``1 .. depth``, nothing estimated."""
    values = tuple(_prior_ratios(depth, prior))
    return Propensities(values, values, values, (0,) * max(depth - 1, 0), ("prior",) * depth)


def _prior_ratios(depth: int, prior: Sequence[float]) -> list[float]:
    if not prior or any(p <= 0 for p in prior):
        raise ConfigError("the propensity prior needs examination probabilities > 0")
    extended = [prior[min(r, len(prior) - 1)] for r in range(depth)]
    return [p / extended[0] for p in extended]


def estimate_propensities(
    impressions: Iterable[Impression],
    feedback: Iterable[Feedback],
    *,
    depth: int = 10,
    min_swaps: int = MIN_SWAPS,
    prior: Sequence[float] = PBM_PRIOR,
    confidence: float = 0.95,
    bootstrap: int = 200,
    seed: int = 0,
) -> Propensities:
    """Estimate ``p(r) / p(1)`` for ranks ``1 .. depth`` from a log's impressions and their clicks (other kinds of
    feedback are ignored; a click on a document its impression did not show is dropped). See the module docstring.

    >>> order = [("a", "b"), ("b", "a")]  # as shown: the odd impressions swapped ranks 1 and 2
    >>> shown = [Impression(f"r{i}", i, "q", "bm25", order[i % 2], 0, "", "", i % 2 or None) for i in range(4)]
    >>> clicks = [Feedback("r0", 0, "a", 1, "click"), Feedback("r1", 1, "a", 2, "click"),
    ...           Feedback("r2", 2, "a", 1, "click")]
    >>> estimated = estimate_propensities(shown, clicks, depth=2, min_swaps=2)
    >>> estimated.values, estimated.source, estimated.swaps
    ((1.0, 0.5), ('estimated', 'estimated'), (2,))
    """
    if depth < 1:
        raise ConfigError(f"propensity depth must be >= 1, got {depth}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    clicked: dict[str, set[str]] = {}
    for event in feedback:
        if event.kind == "click":
            clicked.setdefault(event.request_id, set()).add(event.doc_id)
    links = depth - 1
    swaps = np.zeros(max(links, 0), dtype=np.int64)
    # per (query, doc): impressions and clicks at each rank
    shown_at: dict[tuple[str, str], np.ndarray] = {}
    clicks_at: dict[tuple[str, str], np.ndarray] = {}
    for impression in impressions:
        if impression.swapped is not None and 1 <= impression.swapped <= links:
            swaps[impression.swapped - 1] += 1
        hits = clicked.get(impression.request_id, set())
        for position, doc in enumerate(impression.doc_ids[:depth]):
            key = (impression.query, doc)
            if key not in shown_at:
                shown_at[key] = np.zeros(depth)
                clicks_at[key] = np.zeros(depth)
            shown_at[key][position] += 1
            if doc in hits:
                clicks_at[key][position] += 1
    queries = sorted({query for query, _ in shown_at})
    row = {query: i for i, query in enumerate(queries)}
    above = np.zeros((len(queries), max(links, 0)))  # sum of click rates at r (the upper rank of the link)
    below = np.zeros((len(queries), max(links, 0)))  # ... at r + 1
    for key, shown in shown_at.items():
        if links == 0:
            break
        both = (shown[:-1] > 0) & (shown[1:] > 0)
        if not both.any():
            continue
        rate = np.divide(clicks_at[key], shown, out=np.zeros(depth), where=shown > 0)
        above[row[key[0]]] += np.where(both, rate[:-1], 0.0)
        below[row[key[0]]] += np.where(both, rate[1:], 0.0)

    prior_ratio = np.array(_prior_ratios(depth, prior))
    prior_links = prior_ratio[1:] / prior_ratio[:-1]
    total_above, total_below = above.sum(axis=0), below.sum(axis=0)
    estimated = (swaps >= min_swaps) & (total_above > 0)
    ratios = np.where(estimated, np.divide(total_below, total_above, out=np.ones(links), where=total_above > 0), 1.0)
    ratios = np.where(estimated, ratios, prior_links)
    values = np.concatenate([[1.0], np.cumprod(ratios)])
    lower, upper = values.copy(), values.copy()
    if estimated.any() and queries:
        rng = np.random.default_rng(seed)
        counts = np.stack([np.bincount(rng.integers(len(queries), size=len(queries)), minlength=len(queries))
                           for _ in range(bootstrap)]).astype(np.float64)  # fmt: skip
        top, bottom = counts @ above, counts @ below
        with np.errstate(divide="ignore", invalid="ignore"):
            sampled = np.where(estimated, bottom / top, prior_links)
        chained = np.concatenate([np.ones((bootstrap, 1)), np.cumprod(sampled, axis=1)], axis=1)
        tail = (1 - confidence) / 2
        with np.errstate(invalid="ignore"):
            lower = np.nanquantile(np.where(np.isfinite(chained), chained, np.nan), tail, axis=0)
            upper = np.nanquantile(np.where(np.isfinite(chained), chained, np.nan), 1 - tail, axis=0)
    source = ["estimated" if estimated.any() or not links else "prior"] * depth  # rank 1 is 1 by definition
    for link in range(links):
        if not estimated[link]:
            source[link + 1 :] = ["prior"] * (depth - link - 1)
    if links and not estimated.all():
        missing = [f"{link + 1}->{link + 2}" for link in range(links) if not estimated[link]]
        logger.warning(
            "propensity: %d of %d rank links have fewer than %d swapped impressions (or no clicks): %s take the "
            "position-based prior's ratio (%s), so ranks from %d on are not estimated from this log",
            len(missing),
            links,
            min_swaps,
            ", ".join(missing),
            ", ".join(f"{p:g}" for p in prior[:depth]),
            int(np.argmin(estimated)) + 2,
        )
    return Propensities(
        tuple(float(v) for v in values),
        tuple(float(v) for v in lower),
        tuple(float(v) for v in upper),
        tuple(int(s) for s in swaps),
        tuple(source),
        confidence,
    )
