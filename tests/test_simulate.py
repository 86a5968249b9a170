"""The click simulator (searchkit.training.simulate): click rates per rank match the position-based model's
probabilities, swaps are adjacent and uniform, and everything lands in the feedback log."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from searchkit.formats import FeedbackLog
from searchkit.training.simulate import ClickModel, simulate_clicks
from searchkit.types import ConfigError

RANKINGS = {"alpha": [f"a{r}" for r in range(10)], "beta": [f"b{r}" for r in range(10)]}
RELEVANT = {"alpha": {"a0", "a3", "a7"}, "beta": {"b1", "b2", "b8", "b9"}}


@pytest.mark.parametrize("eta", [1.0, 2.0])
def test_click_rates_match_the_model(tmp_path: Path, eta: float) -> None:
    model = ClickModel(eta=eta)
    sessions = 20_000
    with FeedbackLog(tmp_path / "log.sqlite") as log:
        counts = simulate_clicks(log, RANKINGS, RELEVANT, sessions, model, explore=0.0, seed=11)
        clicks = list(log.feedback())
        impressions = list(log.impressions())
    assert counts.sessions == len(impressions) == sessions and counts.swapped == 0 and counts.clicks == len(clicks)
    assert {i.query for i in impressions} == set(RANKINGS)
    assert sum(i.query == "alpha" for i in impressions) == sessions // 2  # cycled through the queries
    query_of = {i.request_id: i.query for i in impressions}
    observed_clicks = Counter((query_of[c.request_id], c.doc_id, c.rank) for c in clicks)
    for query, docs in RANKINGS.items():
        shown = sum(i.query == query for i in impressions)
        for rank, doc in enumerate(docs, start=1):
            p = model.click_probability(rank, doc in RELEVANT[query])
            observed = observed_clicks[(query, doc, rank)]
            tolerance = 4.5 * np.sqrt(p * (1 - p) / shown) + 1e-9  # a binomial count's 4.5 sigma
            assert abs(observed / shown - p) <= tolerance, (query, rank, observed / shown, p)
    abandoned = len({i.request_id for i in impressions} - {c.request_id for c in clicks})
    assert counts.abandoned == abandoned


def test_explore_swaps_adjacent_pairs_uniformly(tmp_path: Path) -> None:
    with FeedbackLog(tmp_path / "log.sqlite") as log:
        counts = simulate_clicks(log, RANKINGS, RELEVANT, 9000, ClickModel(), explore=0.5, seed=2, start_time=100.0)
        impressions = list(log.impressions())
        clicks = list(log.feedback())
    swapped = [i for i in impressions if i.swapped is not None]
    assert counts.swapped == len(swapped)
    assert abs(len(swapped) / 9000 - 0.5) < 4.5 * np.sqrt(0.25 / 9000)
    per_rank = np.bincount([i.swapped or 0 for i in swapped], minlength=10)[1:]
    expected = len(swapped) / 9
    assert np.all(np.abs(per_rank - expected) < 4.5 * np.sqrt(expected))
    for impression in swapped:
        original = list(RANKINGS[impression.query])
        r = impression.swapped
        assert r is not None
        original[r - 1], original[r] = original[r], original[r - 1]
        assert list(impression.doc_ids) == original
    assert impressions[0].time == 100.0 and impressions[-1].time == 100.0 + 8999
    by_id = {i.request_id: i for i in impressions}
    assert all(by_id[c.request_id].doc_ids[c.rank - 1] == c.doc_id for c in clicks)


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eta"):
        ClickModel(eta=0)
    with pytest.raises(ConfigError, match="examination"):
        ClickModel(examination=(0.5, 1.5))
    with FeedbackLog(tmp_path / "log.sqlite") as log:
        with pytest.raises(ConfigError, match="explore"):
            simulate_clicks(log, RANKINGS, RELEVANT, 10, ClickModel(), explore=2.0)
        with pytest.raises(ConfigError, match="no query"):
            simulate_clicks(log, {"q": []}, {}, 10, ClickModel())
