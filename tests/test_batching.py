from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchkit.text.batching import pad_rows, token_budget_batches
from searchkit.types import ConfigError


def test_budget_batches_by_hand() -> None:
    # lengths 5, 2, 9, 2, 4 sorted longest first: rows 2 (9), 0 (5), 4 (4), 1 (2), 3 (2)
    batches = token_budget_batches([5, 2, 9, 2, 4], max_tokens=10, max_rows=8)
    # 9 -> 1 row fits (10 // 9); 5 -> 2 rows (0, 4); 2 -> the remaining 2 rows
    assert [b.tolist() for b in batches] == [[2], [0, 4], [1, 3]]


def test_max_rows_caps_a_batch_and_overlong_rows_travel_alone() -> None:
    assert [b.tolist() for b in token_budget_batches([1] * 5, max_tokens=100, max_rows=2)] == [[0, 1], [2, 3], [4]]
    assert [b.tolist() for b in token_budget_batches([50, 1], max_tokens=10, max_rows=8)] == [[0], [1]]
    assert token_budget_batches([], max_tokens=10, max_rows=2) == []
    assert [b.tolist() for b in token_budget_batches([0, 0], max_tokens=1, max_rows=4)] == [[0], [1]]


def test_bad_budgets_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_tokens > 0"):
        token_budget_batches([1], max_tokens=0, max_rows=1)


@given(
    st.lists(st.integers(min_value=0, max_value=300), max_size=60),
    st.integers(min_value=1, max_value=2000),
    st.integers(min_value=1, max_value=64),
)
def test_budget_batches_cover_every_row_once_within_limits(lengths: list[int], budget: int, rows: int) -> None:
    batches = token_budget_batches(lengths, max_tokens=budget, max_rows=rows)
    flat = np.concatenate(batches).tolist() if batches else []
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) <= rows
        assert len(batch) == 1 or len(batch) * width <= budget


def test_pad_rows_right_and_left() -> None:
    seqs = [[1, 2, 3], [4], [5, 6]]
    ids, mask = pad_rows(seqs, [2, 1], pad_value=9)
    assert ids.tolist() == [[5, 6], [4, 9]] and mask.tolist() == [[1, 1], [1, 0]]
    ids, mask = pad_rows(seqs, np.array([0, 1]), pad_value=0, left=True)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == np.int64
