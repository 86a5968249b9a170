"""Propensity estimation from randomized adjacent swaps (searchkit.training.propensity): on logs simulated from a
known position-based model the estimate recovers the true p(r) / p(1) within its interval; too few swaps fall
back to the prior with one log line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from searchkit.formats import FeedbackLog
from searchkit.training.propensity import PBM_PRIOR, Propensities, estimate_propensities, prior_propensities
from searchkit.training.simulate import ClickModel, simulate_clicks
from searchkit.types import ConfigError


def _simulated_log(path: Path, *, eta: float, sessions: int, explore: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rankings = {f"query {q}": [f"d{q}-{r}" for r in range(10)] for q in range(300)}
    relevant = {query: {doc for doc in docs if rng.random() < 0.35} for query, docs in rankings.items()}
    with FeedbackLog(path) as log:
        simulate_clicks(log, rankings, relevant, sessions, ClickModel(eta=eta), explore=explore, seed=seed)
    return path


def _estimate(path: Path, **kwargs: Any) -> Propensities:
    with FeedbackLog(path, readonly=True) as log:
        return estimate_propensities(log.impressions(), log.feedback(), **kwargs)


@pytest.mark.parametrize(("eta", "depth"), [(1.0, 10), (2.0, 7)])
def test_recovers_the_true_propensities_within_the_interval(tmp_path: Path, eta: float, depth: int) -> None:
    path = _simulated_log(tmp_path / "log.sqlite", eta=eta, sessions=40_000, explore=0.5, seed=4)
    estimated = _estimate(path, depth=depth, confidence=0.99, seed=1)
    truth = [(p / PBM_PRIOR[0]) ** eta for p in PBM_PRIOR[:depth]]
    assert estimated.source == ("estimated",) * depth
    for rank, (low, value, high, true) in enumerate(
        zip(estimated.lower, estimated.values, estimated.upper, truth, strict=True),
        start=1,
    ):
        assert low <= true <= high, (rank, low, value, high, true)
        assert low < value < high or rank == 1
    # the interval is informative: at rank 2 it is narrow (about 1700 swaps a link)
    assert estimated.upper[1] - estimated.lower[1] < 0.15
    assert abs(estimated.values[1] - truth[1]) < 0.05


def test_naive_click_rates_would_be_wrong_and_swaps_fix_them(tmp_path: Path) -> None:
    """Without swaps every document is seen at one rank only: nothing can be estimated and the prior is used."""
    path = _simulated_log(tmp_path / "log.sqlite", eta=1.0, sessions=3000, explore=0.0, seed=4)
    estimated = _estimate(path, depth=5, min_swaps=1)
    assert estimated.source == ("prior",) * 5
    assert estimated.values == prior_propensities(5).values


def test_too_few_swaps_fall_back_to_the_prior_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _simulated_log(tmp_path / "log.sqlite", eta=1.0, sessions=2000, explore=0.1, seed=5)
    with FeedbackLog(path, readonly=True) as log:
        swaps = np.bincount([i.swapped for i in log.impressions() if i.swapped], minlength=10)[1:]
    threshold = int(np.sort(swaps[:4])[1]) + 1  # more than some of the first four links have
    with caplog.at_level(logging.WARNING, logger="searchkit.training.propensity"):
        estimated = _estimate(path, depth=5, min_swaps=threshold)
    lines = [r.getMessage() for r in caplog.records if r.name == "searchkit.training.propensity"]
    assert len(lines) == 1 and f"fewer than {threshold} swapped impressions" in lines[0]
    first_prior = int(np.argmax(swaps[:4] < threshold))  # the first link that falls back
    assert estimated.source[first_prior + 1 :] == ("prior",) * (4 - first_prior)
    assert list(estimated.swaps) == list(swaps[:4])
    with caplog.at_level(logging.WARNING, logger="searchkit.training.propensity"):
        caplog.clear()
        everything = _estimate(path, depth=5, min_swaps=0)
    assert everything.source == ("estimated",) * 5 and not caplog.records


def test_weights_clip_and_extend_past_the_estimated_ranks() -> None:
    prior = prior_propensities(10)
    assert prior.weight(1) == 1.0
    assert prior.weight(10) == pytest.approx(0.68 / 0.06)
    assert prior.weight(10, clip=10.0) == 10.0 and prior.weight(25, clip=5.0) == 5.0
    assert prior.at(40) == prior.at(10)
    with pytest.raises(ConfigError, match="ranks start at 1"):
        prior.at(0)
    with pytest.raises(ConfigError, match="confidence"):
        estimate_propensities([], [], confidence=1.0)
