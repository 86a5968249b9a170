"""Passages: a document's token ids split into overlapping windows, and a document's score from its passages'.

The one owner of the window arithmetic (:class:`searchkit.config.PassageConfig`) for the dense encoder and the
reranker. A document of ``n`` tokens gets windows ``[start, start + tokens)`` for ``start = 0, stride, 2 * stride,
...`` until one reaches the end (the last one may be shorter); an empty document keeps one empty passage, so every
document has at least one. A document's score is its passages' best (``max``, MaxP) or its first (``first``,
FirstP: the score of the document cut to ``tokens``).

>>> passage_spans(10, tokens=4, stride=3)
[(0, 4), (3, 7), (6, 10)]
>>> passages, counts = split_passages([[1, 2, 3, 4, 5], [6]], tokens=3, stride=2)
>>> passages, counts.tolist()
([[1, 2, 3], [3, 4, 5], [6]], [2, 1])
>>> aggregate_scores(np.array([0.1, 0.7, 0.4]), counts, "max").tolist(), aggregate_scores(
...     np.array([0.1, 0.7, 0.4]), counts, "first").tolist()
([0.7, 0.4], [0.1, 0.4])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from searchkit.types import ConfigError


def passage_spans(length: int, tokens: int, stride: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` token spans of a ``length``-token document's passages (see the module docstring)."""
    if tokens <= 0 or stride <= 0:
        raise ConfigError(f"passage tokens and stride must be > 0, got {tokens} and {stride}")
    spans = [(0, min(length, tokens))]
    start = 0
    while start + tokens < length:
        start += stride
        spans.append((start, min(length, start + tokens)))
    return spans


def split_passages(documents: Sequence[Sequence[int]], tokens: int, stride: int) -> tuple[list[list[int]], np.ndarray]:
    """Every document's passages (token id lists, documents in order) and the number each document has."""
    passages: list[list[int]] = []
    counts = np.zeros(len(documents), dtype=np.int64)
    for i, ids in enumerate(documents):
        row = list(ids)
        spans = passage_spans(len(row), tokens, stride)
        passages.extend(row[start:end] for start, end in spans)
        counts[i] = len(spans)
    return passages, counts


def aggregate_scores(scores: np.ndarray, counts: np.ndarray, aggregate: str) -> np.ndarray:
    """Per-document scores from per-passage ones (passages of a document consecutive, ``counts[i]`` of them, each
    at least one): the best (``max``) or the first (``first``)."""
    counts = np.asarray(counts, dtype=np.int64)
    if len(counts) == 0:
        return np.zeros(0, dtype=np.asarray(scores).dtype)
    if (counts <= 0).any() or int(counts.sum()) != len(scores):
        raise ConfigError(f"{len(scores)} passage scores do not match passage counts summing to {int(counts.sum())}")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if aggregate == "max":
        return np.maximum.reduceat(np.asarray(scores), starts)
    if aggregate == "first":
        return np.asarray(scores)[starts]
    raise ConfigError(f"unknown passage aggregate {aggregate!r}; choose max or first")
