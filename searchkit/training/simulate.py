"""A click simulator: sessions of simulated people clicking a ranking, written into a feedback log.

There are no real users here, so learning from clicks is measured against a known click model: the position-based
model (PBM), where a result at rank ``r`` is examined with probability ``examination[r] ** eta`` and an examined
result is clicked with probability ``click_relevant`` (1.0) when it is relevant, ``click_nonrelevant`` (0.1) when
not. ``eta`` sets how steep the position bias is (1: the standard parameters, :data:`PBM_PRIOR`; 2: a harder case).
Each session shows one query's ranking; with probability ``explore`` it swaps a uniformly chosen adjacent pair
``(r, r + 1)`` first, as ``serve``'s explore setting does. Impressions and clicks go through
:class:`searchkit.formats.FeedbackLog`, so what is trained from simulated clicks is read by the same export path as
real ones (:mod:`searchkit.training.feedback`).

>>> model = ClickModel(eta=2.0)
>>> round(model.examination_at(2), 4), model.click_probability(2, relevant=False) == 0.61 ** 2 * 0.1
(0.3721, True)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from searchkit.formats import Feedback, FeedbackLog, Impression
from searchkit.training.propensity import PBM_PRIOR
from searchkit.types import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClickModel:
    """The position-based click model: ``P(click at r) = examination[r] ** eta * (1.0 | 0.1)``."""

    examination: tuple[float, ...] = PBM_PRIOR
    eta: float = 1.0
    click_relevant: float = 1.0
    click_nonrelevant: float = 0.1

    def __post_init__(self) -> None:
        if not self.examination or not all(0 < p <= 1 for p in self.examination):
            raise ConfigError("ClickModel: examination probabilities must be in (0, 1]")
        if self.eta <= 0 or not (0 <= self.click_nonrelevant <= 1 and 0 <= self.click_relevant <= 1):
            raise ConfigError("ClickModel: eta must be > 0 and click probabilities in [0, 1]")

    def examination_at(self, rank: int) -> float:
        """``P(examined | rank)``; ranks past the table take its last value."""
        return float(self.examination[min(rank, len(self.examination)) - 1] ** self.eta)

    def click_probability(self, rank: int, relevant: bool) -> float:
        """``P(click | rank, relevance)``."""
        return self.examination_at(rank) * (self.click_relevant if relevant else self.click_nonrelevant)


@dataclass(frozen=True)
class SimulationCounts:
    """What a simulation wrote: sessions (impressions), swapped ones, clicks, sessions without a click."""

    sessions: int
    swapped: int
    clicks: int
    abandoned: int


def simulate_clicks(
    log: FeedbackLog,
    rankings: Mapping[str, Sequence[str]],
    relevant: Mapping[str, set[str] | frozenset[str]],
    sessions: int,
    model: ClickModel,
    *,
    explore: float = 0.05,
    seed: int = 0,
    start_time: float = 0.0,
    mode: str = "bm25",
    generation: int = 0,
    index_fingerprint: str = "",
    model_name: str = "",
) -> SimulationCounts:
    """Simulate ``sessions`` sessions over ``rankings`` (query text -> doc ids shown, best first), cycling through the
    queries in a seeded order, and append their impressions and clicks to ``log``. ``relevant``: query text -> the
    relevant doc ids (e.g. grade > 0 in the qrels). Session ``i`` is logged at ``start_time + i`` seconds under
    request id ``sim<seed>-<i>``; clicks one tenth of a second after their impression.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.sqlite"
    >>> with FeedbackLog(path) as log:
    ...     counts = simulate_clicks(log, {"q": ["a", "b"]}, {"q": {"a"}}, 20, ClickModel(), seed=1)
    >>> counts.sessions, counts.clicks > 0
    (20, True)
    """
    if sessions < 0 or not 0 <= explore <= 1:
        raise ConfigError("simulate_clicks: sessions must be >= 0 and explore in [0, 1]")
    queries = [query for query, docs in rankings.items() if docs]
    if not queries:
        raise ConfigError("simulate_clicks: no query has a ranking to show")
    rng = np.random.default_rng(seed)
    order = [queries[i] for i in rng.permutation(len(queries))]
    swapped_total = clicks_total = abandoned = 0
    chunk = 4096
    for start in range(0, sessions, chunk):
        impressions: list[Impression] = []
        events: list[Feedback] = []
        for i in range(start, min(start + chunk, sessions)):
            query = order[i % len(order)]
            shown = list(rankings[query])
            swap: int | None = None
            if len(shown) > 1 and rng.random() < explore:
                swap = int(rng.integers(1, len(shown)))  # 1-based rank swapped with the next
                shown[swap - 1], shown[swap] = shown[swap], shown[swap - 1]
                swapped_total += 1
            request_id, time = f"sim{seed}-{i}", start_time + i
            impressions.append(
                Impression(request_id, time, query, mode, tuple(shown), generation, index_fingerprint, model_name, swap)
            )
            good = relevant.get(query, frozenset())
            probabilities = [model.click_probability(rank, doc in good) for rank, doc in enumerate(shown, start=1)]
            clicked = rng.random(len(shown)) < np.array(probabilities)
            for rank in np.flatnonzero(clicked):
                events.append(Feedback(request_id, time + 0.1, shown[rank], int(rank) + 1, "click"))
            clicks_total += int(clicked.sum())
            abandoned += int(not clicked.any())
        log.append_impressions(impressions)
        log.append_feedback(events)
    logger.info(
        "simulated %d sessions over %d queries (eta %g, explore %g): %d swapped, %d clicks, %d without a click",
        sessions,
        len(queries),
        model.eta,
        explore,
        swapped_total,
        clicks_total,
        abandoned,
    )
    return SimulationCounts(sessions, swapped_total, clicks_total, abandoned)
