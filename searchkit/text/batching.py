"""Length-sorted, token-budget batches of token id sequences: the one batching rule of every neural stage.

A transformer's cost grows with ``rows x width`` (the width being the batch's longest sequence), so batches are
cut from sequences sorted longest first, each holding as many rows as fit in ``max_tokens`` padded tokens (at most
``max_rows``). Short sequences then travel in wide batches, long ones in narrow ones, and almost no padding is
computed. The dense encoder and the reranker both batch through here and put scores back in input order.

Same query, same answer. A row's result depends on the width its batch is padded to (CPU attention kernels sum
the padded softmax in vector lanes: measured, eval/results/batch_invariance_cpu.md), so a query must never share a
batch with another query's rows: :func:`grouped_batches` cuts batches within each group only (a query's own pairs
for the reranker, each query alone for the encoder), and a query's scores are then the same whatever else is
searched with it. Documents, encoded at build, keep the wide batches of :func:`token_budget_batches`.

>>> [batch.tolist() for batch in token_budget_batches([3, 10, 4, 9], max_tokens=20, max_rows=8)]
[[1, 3], [2, 0]]
>>> [batch.tolist() for batch in grouped_batches([3, 10, 4, 9], [0, 1, 0, 1], max_tokens=20, max_rows=8)]
[[2, 0], [1, 3]]
>>> ids, mask = pad_rows([[5, 6, 7], [8]], [0, 1], pad_value=0)
>>> ids.tolist(), mask.tolist()
([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from searchkit.types import ConfigError


def token_budget_batches(lengths: Sequence[int] | np.ndarray, *, max_tokens: int, max_rows: int) -> list[np.ndarray]:
    """Row indices grouped into batches, longest sequences first (ties keep input order).

    Each batch holds at most ``max_rows`` rows and at most ``max_tokens`` padded tokens (``rows x`` its first,
    longest, row); a single row longer than the budget still gets a batch of its own.
    """
    if max_tokens <= 0 or max_rows <= 0:
        raise ConfigError(f"batches need max_tokens > 0 and max_rows > 0, got {max_tokens} and {max_rows}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start, n = 0, len(order)
    while start < n:
        width = max(int(lengths[order[start]]), 1)
        rows = max(1, min(max_rows, max_tokens // width, n - start))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def pad_rows(
    seqs: Sequence[Sequence[int]], rows: Sequence[int] | np.ndarray, pad_value: int, *, left: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, mask)`` int64 arrays of ``seqs[rows]`` padded to the longest of them (right, or left when asked)."""
    width = max((len(seqs[row]) for row in rows), default=0)
    ids = np.full((len(rows), width), pad_value, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        seq = seqs[row]
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[i, cols] = seq
        mask[i, cols] = 1
    return ids, mask


def grouped_batches(
    lengths: Sequence[int] | np.ndarray, groups: Sequence[int] | np.ndarray, *, max_tokens: int, max_rows: int
) -> list[np.ndarray]:
    """:func:`token_budget_batches` cut within each group of rows (``groups[i]``: row i's group, e.g. its query),
    groups in order of first appearance: no batch holds rows of two groups, so a row's batch, its width and its
    result depend only on its own group."""
    lengths = np.asarray(lengths, dtype=np.int64)
    groups = np.asarray(groups)
    batches: list[np.ndarray] = []
    _, first = np.unique(groups, return_index=True)
    for group in groups[np.sort(first)]:
        rows = np.flatnonzero(groups == group)
        batches.extend(
            rows[batch] for batch in token_budget_batches(lengths[rows], max_tokens=max_tokens, max_rows=max_rows)
        )
    return batches
