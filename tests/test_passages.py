"""Passage windows (searchkit.text.passages): spans and counts worked out by hand, the aggregates against numpy,
and PassageConfig's checks and manifest round trip."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from searchkit.config import DenseConfig, PassageConfig, RerankConfig, config_from_dict, config_to_dict
from searchkit.text.passages import aggregate_scores, passage_spans, split_passages
from searchkit.types import ConfigError


def test_spans_by_hand() -> None:
    assert passage_spans(0, tokens=4, stride=2) == [(0, 0)]  # an empty document keeps one (empty) passage
    assert passage_spans(3, tokens=4, stride=2) == [(0, 3)]
    assert passage_spans(4, tokens=4, stride=2) == [(0, 4)]  # exactly one window: no second one
    assert passage_spans(5, tokens=4, stride=2) == [(0, 4), (2, 5)]
    assert passage_spans(6, tokens=4, stride=2) == [(0, 4), (2, 6)]
    assert passage_spans(7, tokens=4, stride=2) == [(0, 4), (2, 6), (4, 7)]
    assert passage_spans(10, tokens=4, stride=3) == [(0, 4), (3, 7), (6, 10)]
    assert passage_spans(9, tokens=3, stride=3) == [(0, 3), (3, 6), (6, 9)]  # stride == tokens: disjoint


@pytest.mark.parametrize(("tokens", "stride"), [(4, 2), (5, 3), (3, 3), (8, 1), (128, 64)])
def test_count_formula_and_coverage(tokens: int, stride: int) -> None:
    for length in range(0, 300):
        spans = passage_spans(length, tokens, stride)
        expected = 1 if length <= tokens else 1 + math.ceil((length - tokens) / stride)
        assert len(spans) == expected, length
        assert spans[-1][1] == length  # the last passage reaches the end
        assert all(end - start <= tokens for start, end in spans)
        assert all(b[0] - a[0] == stride for a, b in itertools.pairwise(spans))
        covered = set().union(*(range(start, end) for start, end in spans))
        assert covered == set(range(length))  # every token is in some passage


def test_split_keeps_documents_in_order() -> None:
    docs = [list(range(10)), [], [7, 8]]
    passages, counts = split_passages(docs, tokens=4, stride=3)
    assert counts.tolist() == [3, 1, 1]
    assert passages == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [], [7, 8]]


def test_aggregates_equal_numpy() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 6, size=40)
    scores = rng.standard_normal(int(counts.sum()))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    want_max = [scores[a:b].max() for a, b in itertools.pairwise(bounds)]
    want_first = [scores[a] for a in bounds[:-1]]
    np.testing.assert_array_equal(aggregate_scores(scores, counts, "max"), want_max)
    np.testing.assert_array_equal(aggregate_scores(scores, counts, "first"), want_first)
    with pytest.raises(ConfigError, match="do not match"):
        aggregate_scores(scores[:-1], counts, "max")
    with pytest.raises(ConfigError, match="max or first"):
        aggregate_scores(scores, counts, "mean")


def test_config_checks_and_round_trip() -> None:
    for bad in ({"tokens": 0}, {"stride": 0}, {"tokens": 4, "stride": 5}, {"aggregate": "mean"}):
        with pytest.raises(ConfigError):
            PassageConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown PassageConfig setting 'size'"):
        DenseConfig(passages={"size": 3})  # type: ignore[arg-type]
    dense = DenseConfig(passages=PassageConfig(tokens=100, stride=50, aggregate="first"))
    saved = config_to_dict(dense)
    assert saved["passages"] == {"tokens": 100, "stride": 50, "aggregate": "first"}
    assert config_from_dict(DenseConfig, saved) == dense
    rerank = RerankConfig("m", passages=PassageConfig())
    assert config_from_dict(RerankConfig, config_to_dict(rerank)) == rerank
    assert DenseConfig().passages is None and RerankConfig("m").passages is None
