"""Searcher: first stage (BM25, dense, hybrid fusion or cascade) then an optional reranker, behind one interface.

Every retriever and the Searcher implement ``search_batch(queries, k) -> list[list[Hit]]``. The Searcher also takes
``filter=`` (metadata conditions, :mod:`searchkit.filters`), applied inside each stage before its top k.

>>> from searchkit.index import Index
>>> import tempfile, pathlib
>>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "idx")
>>> Searcher(index).search("cats chasing mice", k=2)[0].doc_id
'd1'
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from searchkit.config import DEFAULT_RERANK_DEPTH, SEARCH_MODES, FusionConfig, RerankConfig
from searchkit.formats import document_text
from searchkit.fusion import minmax
from searchkit.ranking import DocIdTable, Ranking, sort_ranking, tie_keys
from searchkit.types import ConfigError, Hit, Retriever, check_k

if TYPE_CHECKING:
    from searchkit.filters import FilterSpec
    from searchkit.index import Index

logger = logging.getLogger(__name__)


class Reranker(Protocol):
    """What the Searcher needs from a reranker: re-score each query's candidates given their texts.

    ``stages`` (query i's ``{"bm25": hits, "dense": hits}`` where the mode ran them) is passed only to rerankers
    that accept it (:class:`searchkit.rerank.CrossEncoderReranker`, for its learned fusion).
    """

    def rerank_batch(
        self, queries: Sequence[str], candidates: Sequence[Sequence[Hit]], texts: Sequence[Sequence[str]]
    ) -> list[list[Hit]]: ...


class StageScore(NamedTuple):
    """A hit's 1-based rank and score in one stage (rank None: the stage did not return it)."""

    rank: int | None
    score: float | None


class ExplainedHit(NamedTuple):
    """A final hit with its rank and score in every stage that ran (``explain``)."""

    doc_id: str
    score: float
    stages: dict[str, StageScore]


# ---------------------------------------------------------------------- fusion
def rrf_rows(rankings: Sequence[Ranking], keys: np.ndarray, k: int = 60) -> Ranking:
    """Reciprocal-rank fusion on arrays: ``score(row) = sum over rankings of 1 / (k + rank)``, ranks from 1.

    Each row's contributions are added smallest first, so the fused score (and the tie order, by ``keys`` from
    :func:`searchkit.types.tie_keys`) cannot depend on the order of the rankings.
    """
    parts = [r for r in rankings if len(r.rows)]
    if not parts:
        return Ranking.empty()
    rows = np.concatenate([r.rows for r in parts])
    contributions = np.concatenate([1.0 / (k + np.arange(1, len(r.rows) + 1, dtype=np.float64)) for r in parts])
    order = np.lexsort((contributions, rows))
    unique, inverse = np.unique(rows[order], return_inverse=True)
    # bincount adds in input order: per row, smallest contribution first
    return sort_ranking(unique, np.bincount(inverse, weights=contributions[order]), keys)


def convex_rows(sparse: Ranking, dense: Ranking, keys: np.ndarray, alpha: float = 0.5) -> Ranking:
    """``alpha * dense + (1 - alpha) * sparse`` on per-query min-max-normalized scores (a missing row counts 0)."""
    rows = np.union1d(sparse.rows, dense.rows)
    total = np.zeros(len(rows), dtype=np.float64)
    for ranking, weight in ((sparse, 1.0 - alpha), (dense, alpha)):
        if len(ranking.rows):
            total[np.searchsorted(rows, ranking.rows)] += weight * minmax(ranking.scores)
    return sort_ranking(rows, total, keys)


def _as_rankings(lists: Sequence[Sequence[Hit]]) -> tuple[list[Ranking], np.ndarray, np.ndarray]:
    """Hit lists as Rankings over a local id table: (rankings, ids, tie keys)."""
    ids = list(dict.fromkeys(hit.doc_id for hits in lists for hit in hits))
    row_of = {doc_id: row for row, doc_id in enumerate(ids)}
    rankings = [
        Ranking(
            np.fromiter((row_of[hit.doc_id] for hit in hits), dtype=np.int64, count=len(hits)),
            np.fromiter((hit.score for hit in hits), dtype=np.float64, count=len(hits)),
        )
        for hits in lists
    ]
    return rankings, np.array(ids, dtype=object), tie_keys(ids)


def rrf_fuse(rankings: Sequence[Sequence[Hit]], k: int = 60) -> list[Hit]:
    """:func:`rrf_rows` on Hit lists. Empty rankings contribute nothing.

    >>> rrf_fuse([[Hit("a", 9.0), Hit("b", 1.0)], [Hit("b", 0.9)]], k=60)[0]
    Hit(doc_id='b', score=0.03252247488101534)
    """
    converted, ids, keys = _as_rankings(rankings)
    return rrf_rows(converted, keys, k).to_hits(ids)


def min_max_normalize(hits: Sequence[Hit]) -> dict[str, float]:
    """Scores mapped to [0, 1] per ranking (:func:`searchkit.fusion.minmax`); constant scores all map to 1.0.

    >>> min_max_normalize([Hit("a", 3.0), Hit("b", 1.0)])
    {'a': 1.0, 'b': 0.0}
    """
    normalized = minmax(np.array([hit.score for hit in hits], dtype=np.float64)).tolist()
    return {hit.doc_id: value for hit, value in zip(hits, normalized, strict=True)}


def convex_fuse(sparse: Sequence[Hit], dense: Sequence[Hit], alpha: float = 0.5) -> list[Hit]:
    """:func:`convex_rows` on Hit lists.

    >>> convex_fuse([Hit("a", 10.0), Hit("b", 5.0)], [Hit("b", 0.9), Hit("c", 0.1)], alpha=0.5)
    [Hit(doc_id='b', score=0.5), Hit(doc_id='a', score=0.5), Hit(doc_id='c', score=0.0)]
    """
    (sparse_rows, dense_rows), ids, keys = _as_rankings([sparse, dense])
    return convex_rows(sparse_rows, dense_rows, keys, alpha).to_hits(ids)


# ---------------------------------------------------------------------- searcher
class Searcher:
    """Retrieve with the index's components, fuse or cascade, then optionally rerank.

    ``mode``: ``auto`` (hybrid when the index has both components, else the one it has), ``bm25``, ``dense``,
    ``hybrid`` (each stage retrieves ``fusion.depth`` from the whole corpus, fused by RRF or convex combination) or
    ``cascade`` (BM25 retrieves ``fusion.depth`` candidates, the dense model re-scores them from stored embeddings).
    ``rerank``: a :class:`searchkit.config.RerankConfig` (the Searcher loads that cross-encoder) or a reranker
    object; it re-scores the first stage's top ``depth`` (the reranker's ``depth``: ``RerankConfig.depth``, else
    the depth its card's learned fusion was fitted at, else 100); documents below that depth keep their order,
    scored below.
    """

    def __init__(
        self,
        index: Index,
        *,
        mode: str = "auto",
        fusion: FusionConfig = FusionConfig(),  # noqa: B008 - frozen dataclass, safe as a default
        rerank: RerankConfig | Reranker | None = None,
    ) -> None:
        if mode not in SEARCH_MODES:
            raise ConfigError(f"unknown search mode {mode!r}; choose one of {', '.join(SEARCH_MODES)}")
        available = set(index.manifest["components"])
        if mode == "auto":
            mode = "hybrid" if {"bm25", "dense"} <= available else ("bm25" if "bm25" in available else "dense")
        needed = {
            "bm25": {"bm25"},
            "dense": {"dense"},
            "hybrid": {"bm25", "dense"},
            "cascade": {"bm25", "dense"},
        }
        missing = needed[mode] - available
        if missing:
            raise ConfigError(
                f"mode {mode!r} needs the {' and '.join(sorted(missing))} component(s), which {index.path} lacks "
                f"(it has: {', '.join(sorted(available))}); add it with Index.add or `searchkit index build`"
            )
        reranker: Any = rerank
        if isinstance(rerank, RerankConfig):
            from searchkit.rerank import CrossEncoderReranker

            reranker = CrossEncoderReranker.from_config(rerank)
        depth = getattr(reranker, "depth", None) if reranker is not None else None
        self.rerank_depth: int = int(depth) if depth is not None else DEFAULT_RERANK_DEPTH
        check_k(self.rerank_depth)
        self.index = index
        self._doc_table: DocIdTable | None = None
        self.mode = mode
        self.fusion = fusion
        self.reranker: Reranker | None = reranker
        self._pass_stages = reranker is not None and "stages" in inspect.signature(reranker.rerank_batch).parameters
        self._stored_tokens: Any = None
        self._tokens_checked = False

    def search(self, query: str, k: int = 10, *, filter: FilterSpec = None) -> list[Hit]:
        """Best ``k`` hits for one query; same as ``search_batch([query], k, filter=filter)[0]``."""
        return self.search_batch([query], k, filter=filter)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        filter: FilterSpec = None,
    ) -> list[list[Hit]]:
        """Best ``k`` hits for each query, best first.

        ``filter``: conditions on the documents' filterable metadata fields (``"year>=2020"``, a list of such
        expressions, all of which must hold, or a :class:`searchkit.filters.Filter`): every stage keeps only the
        documents that meet them before taking its top k, so none other is returned, and k hits come back when k
        documents match (for BM25: match the filter and share a term with the query).
        """
        check_k(k)
        queries = list(queries)
        allowed = self.index.allowed_rows(filter)
        depth = max(k, self.rerank_depth) if self.reranker is not None else k
        if self.reranker is None:
            ids = self._table.ids
            rankings = self._stage_rows(queries, k, allowed)[self.mode]
            return [Ranking(r.rows[:k], r.scores[:k]).to_hits(ids) for r in rankings]
        stages = self._stages(queries, depth, allowed)
        results = self._rerank(queries, stages[self.mode], stages)
        return [hits[:k] for hits in results]

    def filtered(self, spec: FilterSpec) -> Retriever:
        """This searcher with ``filter=spec`` on every search: a Retriever for ``run_queries`` and evaluation.

        >>> from searchkit.index import Index
        >>> from searchkit.config import FilterConfig
        >>> from searchkit.types import Document
        >>> import tempfile, pathlib
        >>> docs = [Document("a", "solar", metadata={"y": 1}), Document("b", "solar", metadata={"y": 2})]
        >>> index = Index.build(docs, pathlib.Path(tempfile.mkdtemp()) / "i", filters=FilterConfig(["y:number"]))
        >>> Searcher(index).filtered("y=2").search_batch(["solar"], 10)[0][0].doc_id
        'b'
        """
        from searchkit.filters import parse_filter

        parsed = parse_filter(spec)
        self.index.allowed_rows(parsed)  # an unknown field or a bad value fails here, before any query runs
        return _Filtered(self, parsed)

    def stages(self, queries: Sequence[str], k: int) -> dict[str, list[list[Hit]]]:
        """Every first-stage ranking the mode runs (``bm25``, ``dense``, and the mode's own), top ``k`` or more.

        What the reranker's learned fusion reads (:func:`searchkit.fusion.dev_features` fits on it).
        """
        check_k(k)
        return self._stages(list(queries), k)

    def explain(self, query: str, k: int = 10, *, filter: FilterSpec = None) -> list[ExplainedHit]:
        """The final top ``k`` with each hit's rank and score in every stage that ran (the reranker included)."""
        check_k(k)
        depth = max(k, self.fusion.depth, self.rerank_depth if self.reranker is not None else 0)
        allowed = self.index.allowed_rows(filter)
        stages = {name: rankings[0] for name, rankings in self._stages([query], depth, allowed).items()}
        final = stages[self.mode]
        if self.reranker is not None:
            final = stages["rerank"] = self._rerank([query], [final], {n: [r] for n, r in stages.items()})[0]
        positions = {name: {hit.doc_id: rank for rank, hit in enumerate(ranking)} for name, ranking in stages.items()}
        explained = []
        for hit in final[:k]:
            per_stage = {}
            for name, ranking in stages.items():
                rank = positions[name].get(hit.doc_id)
                per_stage[name] = StageScore(None, None) if rank is None else StageScore(rank + 1, ranking[rank].score)
            explained.append(ExplainedHit(hit.doc_id, hit.score, per_stage))
        return explained

    # ------------------------------------------------------------------ stages
    def _stages(self, queries: list[str], k: int, allowed: np.ndarray | None = None) -> dict[str, list[list[Hit]]]:
        """Every stage's ranking for ``queries`` as Hits (used by explain and by the reranker's fusion)."""
        ids = self._table.ids
        rows = self._stage_rows(queries, k, allowed)
        return {name: [r.to_hits(ids) for r in rankings] for name, rankings in rows.items()}

    @property
    def _table(self) -> DocIdTable:
        if self._doc_table is None:
            self._doc_table = DocIdTable(self.index.row_ids)
        return self._doc_table

    def _stage_rows(self, queries: list[str], k: int, allowed: np.ndarray | None = None) -> dict[str, list[Ranking]]:
        """Every stage's ranking for ``queries`` as arrays (row numbers, scores): Hits are made at the edge.

        ``allowed`` (a bool mask over rows, a filter) is handed to each retrieving stage, which applies it before its
        top k; cascade re-scores BM25's filtered candidates, and fusion only sees filtered lists.
        """
        if self.mode in ("bm25", "dense"):
            return {self.mode: self.index.component(self.mode).search_rows(queries, k, allowed=allowed)}
        depth = max(k, self.fusion.depth)
        bm25 = self.index.component("bm25").search_rows(queries, depth, allowed=allowed)
        if self.mode == "cascade":
            scores = self.index.component("dense").score_rows(queries, [r.rows for r in bm25])
            keys = self._table.keys
            return {"bm25": bm25, "cascade": [sort_ranking(r.rows, s, keys) for r, s in zip(bm25, scores, strict=True)]}
        dense = self.index.component("dense").search_rows(queries, depth, allowed=allowed)
        keys = self._table.keys
        if self.fusion.method == "rrf":
            fused = [rrf_rows([s, d], keys, self.fusion.rrf_k) for s, d in zip(bm25, dense, strict=True)]
        else:
            fused = [convex_rows(s, d, keys, self.fusion.alpha) for s, d in zip(bm25, dense, strict=True)]
        return {"bm25": bm25, "dense": dense, "hybrid": fused}

    def _rerank(
        self, queries: list[str], results: list[list[Hit]], stages: dict[str, list[list[Hit]]]
    ) -> list[list[Hit]]:
        assert self.reranker is not None
        heads = [hits[: self.rerank_depth] for hits in results]
        kwargs: dict[str, Any] = {}
        stored = self._reranker_tokens()
        texts: list[list[str]] | None = None
        if stored is not None:  # the index's token ids: the documents are neither read nor tokenized
            kwargs["doc_tokens"] = [stored.rows([self.index.row(hit.doc_id) for hit in head]) for head in heads]
        else:
            texts = [[document_text(d) for d in self.index.documents([hit.doc_id for hit in head])] for head in heads]
        if self._pass_stages:
            names = [name for name in ("bm25", "dense") if name in stages]
            kwargs["stages"] = [{name: stages[name][i] for name in names} for i in range(len(heads))]
        reranked = self.reranker.rerank_batch(queries, heads, texts, **kwargs)  # type: ignore[arg-type]
        # Only documents the first stage actually returned are credited; the tail keeps first-stage order below.
        return [_below(new, hits[self.rerank_depth :]) for new, hits in zip(reranked, results, strict=True)]

    def _reranker_tokens(self) -> Any:
        """The index's stored document tokens when the reranker can score them (it takes ``doc_tokens`` and its
        tokenizer has their fingerprint), else None: decided once, the reason for texts logged once."""
        if self._tokens_checked:
            return self._stored_tokens
        self._tokens_checked = True
        reranker = self.reranker
        if "tokens" not in self.index.manifest["components"] or reranker is None:
            return None
        if "doc_tokens" not in inspect.signature(reranker.rerank_batch).parameters:
            return None
        stored = self.index.component("tokens")
        fingerprint = getattr(reranker, "tokenizer_fingerprint", None)
        needed = getattr(reranker, "max_document_tokens", stored.max_length)
        reason = stored.mismatch(fingerprint, needed)
        if reason is not None:
            logger.info("reranker: scoring document texts, not the index's stored tokens: %s", reason)
            return None
        logger.info("reranker: scoring the index's stored document tokens (only queries are tokenized)")
        self._stored_tokens = stored
        return stored


class _Filtered:
    """A Searcher with a fixed filter, behind the plain ``search_batch(queries, k)`` interface."""

    def __init__(self, searcher: Searcher, spec: FilterSpec) -> None:
        self.searcher = searcher
        self.spec = spec

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        return self.searcher.search_batch(queries, k, filter=self.spec)


def _below(head: list[Hit], tail: list[Hit]) -> list[Hit]:
    """``head`` then ``tail``, the tail's scores shifted (gaps kept) to lie strictly below the head's lowest score.

    Without the shift, anything that re-sorts by score (evaluation, TREC run files) would mix first-stage scores
    with reranker scores, which live on another scale.

    >>> merged = _below([Hit("a", -1.0), Hit("b", -2.0)], [Hit("c", 1.05), Hit("d", 0.5)])
    >>> [(hit.doc_id, round(hit.score, 2)) for hit in merged]
    [('a', -1.0), ('b', -2.0), ('c', -3.0), ('d', -3.55)]
    """
    if not head or not tail:
        return head + tail
    shift = tail[0].score - min(hit.score for hit in head) + 1.0
    return head + [Hit(hit.doc_id, hit.score - shift) for hit in tail]
