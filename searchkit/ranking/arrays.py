"""Ranked results as arrays: what retrievers and fusion pass between them, with Hits made only at the edge.

A :class:`Ranking` is one query's result as row numbers (into the index's doc ids) and scores, best first, in
:func:`searchkit.types.sort_hits`'s order (score descending, ties by doc id descending). The tie order is kept
without touching strings through :func:`tie_keys`, an integer per row giving its doc id's place in string order.
(A module of its own so that ``searchkit.types`` stays free of numpy, and ``import searchkit`` light.)

>>> table = DocIdTable(["d1", "d3", "d2"])
>>> sort_ranking(np.array([0, 1, 2]), np.array([1.0, 1.0, 2.0]), table.keys).to_hits(table.ids)
[Hit(doc_id='d2', score=2.0), Hit(doc_id='d3', score=1.0), Hit(doc_id='d1', score=1.0)]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from searchkit.types import Hit

# Hit's generated __new__ is a Python function; tuple.__new__ builds the same Hit in C (a third faster per hit)
_new_hit = functools.partial(tuple.__new__, Hit)


class Ranking(NamedTuple):
    """One query's ranked result as arrays (what retrievers and fusion pass between them; Hits are made at the edge).

    ``rows``: int64 row numbers into the index's doc ids, best first; ``scores``: their float64 scores. The order
    is :func:`sort_hits`'s: score descending, ties by doc id descending (see :func:`tie_keys`).
    """

    rows: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Ranking:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))

    def to_hits(self, docids: np.ndarray) -> list[Hit]:
        """The Hits of this ranking (``docids``: an array of every row's doc id)."""
        return list(map(_new_hit, zip(docids[self.rows].tolist(), self.scores.tolist(), strict=True)))


def tie_keys(docids: Sequence[str]) -> np.ndarray:
    """``keys[row]``: the rank of ``docids[row]`` in ascending string order, so that sorting rows by
    ``(-score, -keys[row])`` gives exactly :func:`sort_hits`'s order without touching strings.

    >>> tie_keys(["b", "a", "c"]).tolist()
    [1, 0, 2]
    """
    keys = np.empty(len(docids), dtype=np.int64)
    keys[np.argsort(np.asarray(docids, dtype=str), kind="stable")] = np.arange(len(docids))
    return keys


class DocIdTable:
    """Every row's doc id as an object array, with its :func:`tie_keys` computed on first use.

    >>> table = DocIdTable(["b", "a"])
    >>> Ranking(np.array([1]), np.array([0.5])).to_hits(table.ids), table.keys.tolist()
    ([Hit(doc_id='a', score=0.5)], [1, 0])
    """

    def __init__(self, docids: Sequence[str]) -> None:
        self.ids = np.array(list(docids), dtype=object)
        self._keys: np.ndarray | None = None

    @property
    def keys(self) -> np.ndarray:
        if self._keys is None:
            self._keys = tie_keys(self.ids.tolist())
        return self._keys


def sort_ranking(rows: np.ndarray, scores: np.ndarray, keys: np.ndarray) -> Ranking:
    """``rows`` and ``scores`` ordered by score, then doc id, both descending (``keys`` from :func:`tie_keys`).

    >>> ranked = sort_ranking(np.array([0, 1, 2]), np.array([1.0, 2.0, 1.0]), tie_keys(["a", "b", "c"]))
    >>> ranked.rows.tolist(), ranked.scores.tolist()
    ([1, 2, 0], [2.0, 1.0, 1.0])
    """
    if rows.dtype != np.int64:
        rows = rows.astype(np.int64)
    if scores.dtype != np.float64:
        scores = scores.astype(np.float64)
    order = np.lexsort((-keys[rows], -scores))
    return Ranking(rows[order], scores[order])
