"""Splitting judged queries into cross-validation folds, by query.

>>> fold_split(["q1", "q2", "q3", "q4", "q5"], 2, seed=0)
[['q2', 'q3', 'q4'], ['q1', 'q5']]
>>> fold_split(["q5", "q4", "q3", "q2", "q1"], 2, seed=0)  # the same folds, whatever the input order
[['q4', 'q3', 'q2'], ['q5', 'q1']]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from searchkit.types import ConfigError, DataError


def fold_split(query_ids: Sequence[str], k: int, seed: int) -> list[list[str]]:
    """``k`` disjoint folds that hold every query id exactly once, their sizes differing by at most one.

    Seeded, and independent of the order the ids come in (they are sorted before the seeded shuffle): the same
    judgments and seed give the same folds. Each fold lists its ids in their input order. A duplicate id is a
    DataError; ``k`` below 2 or above the number of queries a ConfigError.
    """
    ids = list(query_ids)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        twice = sorted({qid for qid in ids if qid in seen or seen.add(qid)})  # type: ignore[func-returns-value]
        raise DataError(f"query ids must be unique to split into folds; repeated: {', '.join(twice[:5])}")
    if k < 2 or k > len(ids):
        raise ConfigError(f"folds must be between 2 and the number of judged queries ({len(ids)}), got {k}")
    ordered = sorted(ids)
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    fold_of = {qid: position % k for position, qid in enumerate(shuffled)}
    return [[qid for qid in ids if fold_of[qid] == fold] for fold in range(k)]
