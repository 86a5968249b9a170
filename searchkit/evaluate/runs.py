"""Runs: every query of a set searched by any retriever (``search_batch``), in batches, as a :data:`Run`.

A retriever is anything with ``search_batch(queries, k)``: a BM25 or dense retriever, a Searcher, a filtered one.
Query ids must be unique; ``exclude_self`` drops a query's own id from its results (collections whose queries are
documents).

>>> from searchkit.types import Hit, Query
>>> class Echo:
...     def search_batch(self, queries, k):
...         return [[Hit(q, 1.0)] for q in queries]
>>> run_queries(Echo(), [Query("q1", "d1"), Query("q2", "d2")], k=1)
{'q1': [Hit(doc_id='d1', score=1.0)], 'q2': [Hit(doc_id='d2', score=1.0)]}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tqdm.auto import tqdm

from searchkit.evaluate.metrics import check_unique
from searchkit.types import ConfigError, DataError, Hit, Query, Retriever, Run


def run_queries(
    retriever: Retriever,
    queries: Sequence[Query],
    k: int = 100,
    *,
    batch_size: int = 256,
    show_progress: bool = False,
    exclude_self: bool = False,
) -> Run:
    """Search every query with ``retriever.search_batch``, in batches; every query gets an entry (maybe []).

    ``exclude_self`` drops a query's own id from its results (collections whose queries are documents):
    ``k + 1`` hits are retrieved, the query's id removed, and at most ``k`` kept.
    """
    batches = query_batches(queries, k, batch_size)
    depth = k + 1 if exclude_self else k
    run: Run = {}
    steps: Iterable[tuple[int, int]] = batches
    if show_progress:
        steps = tqdm(batches, desc="queries", unit="batch")
    for start, end in steps:
        batch = queries[start:end]
        results = retriever.search_batch([query.text for query in batch], depth)
        collect_batch(run, batch, results, k, exclude_self, type(retriever).__name__)
    return run


def query_batches(queries: Sequence[Query], k: int, batch_size: int) -> list[tuple[int, int]]:
    """The (start, end) query batches of a run, after checking ``k``, ``batch_size`` and the query ids."""
    if k <= 0 or batch_size <= 0:
        raise ConfigError(f"k and batch_size must be > 0, got k={k}, batch_size={batch_size}")
    check_unique([query.query_id for query in queries], "query")
    return [(start, min(start + batch_size, len(queries))) for start in range(0, len(queries), batch_size)]


def collect_batch(
    run: Run, batch: Sequence[Query], results: Sequence[Sequence[Hit]], k: int, exclude_self: bool, source: str
) -> None:
    """Put one batch's hit lists into ``run`` (the query's own id dropped when ``exclude_self``, ``k`` kept)."""
    if len(results) != len(batch):
        raise DataError(f"{source}.search_batch gave {len(results)} lists for {len(batch)} queries")
    for query, hits in zip(batch, results, strict=True):
        if exclude_self:
            hits = [hit for hit in hits if hit.doc_id != query.query_id]
        run[query.query_id] = list(hits[:k])
