"""The cross-validation fold split (searchkit.training.folds): a partition by query, balanced, seeded, order-free."""

from __future__ import annotations

import pytest

from searchkit.training.folds import fold_split
from searchkit.types import ConfigError, DataError

IDS = [f"q{i}" for i in range(23)]


@pytest.mark.parametrize("k", [2, 3, 5, 23])
def test_folds_partition_the_queries_and_are_balanced(k: int) -> None:
    folds = fold_split(IDS, k, seed=1)
    assert len(folds) == k
    flat = [qid for fold in folds for qid in fold]
    assert sorted(flat) == sorted(IDS) and len(flat) == len(set(flat))  # every query in exactly one fold
    sizes = [len(fold) for fold in folds]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    for fold in folds:  # each fold keeps the input order
        assert fold == sorted(fold, key=IDS.index)


def test_folds_are_seeded_and_independent_of_the_input_order() -> None:
    folds = fold_split(IDS, 5, seed=3)
    assert fold_split(IDS, 5, seed=3) == folds
    shuffled = IDS[::-1]
    assert [sorted(fold) for fold in fold_split(shuffled, 5, seed=3)] == [sorted(fold) for fold in folds]
    assert fold_split(IDS, 5, seed=4) != folds


def test_fold_split_refuses_bad_input() -> None:
    with pytest.raises(ConfigError, match="between 2 and the number of judged queries"):
        fold_split(IDS, 1, seed=0)
    with pytest.raises(ConfigError, match=r"\(3\)"):
        fold_split(["a", "b", "c"], 4, seed=0)
    with pytest.raises(DataError, match="repeated: a"):
        fold_split(["a", "b", "a"], 2, seed=0)
