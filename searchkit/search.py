"""Searcher: first stage (BM25, dense, hybrid fusion or cascade) then an optional reranker, behind one interface.

Every retriever and the Searcher implement ``search_batch(queries, k) -> list[list[Hit]]``.

>>> from searchkit.index import Index
>>> import tempfile, pathlib
>>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "idx")
>>> Searcher(index).search("cats chasing mice", k=2)[0].doc_id
'd1'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from searchkit.config import SEARCH_MODES, FusionConfig
from searchkit.formats import document_text
from searchkit.types import ConfigError, Hit, check_k, sort_hits

if TYPE_CHECKING:
    from searchkit.index import Index

logger = logging.getLogger(__name__)


class Reranker(Protocol):
    """What the Searcher needs from a reranker: re-score each query's candidates given their texts."""

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
def rrf_fuse(rankings: Sequence[Sequence[Hit]], k: int = 60) -> list[Hit]:
    """Reciprocal-rank fusion: ``score(d) = sum over rankings of 1 / (k + rank(d))``, ranks from 1.

    Empty rankings contribute nothing, so fusing with an empty list returns the other ranking's order.

    >>> rrf_fuse([[Hit("a", 9.0), Hit("b", 1.0)], [Hit("b", 0.9)]], k=60)[0]
    Hit(doc_id='b', score=0.03252247488101534)
    """
    contributions: dict[str, list[float]] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            contributions.setdefault(hit.doc_id, []).append(1.0 / (k + rank))
    # fsum is exactly rounded, so the fused score (and hence tie order) cannot depend on the order of rankings.
    return sort_hits(Hit(doc_id, math.fsum(parts)) for doc_id, parts in contributions.items())


def min_max_normalize(hits: Sequence[Hit]) -> dict[str, float]:
    """Scores mapped to [0, 1] per ranking; a ranking with constant scores maps every hit to 1.0.

    >>> min_max_normalize([Hit("a", 3.0), Hit("b", 1.0)])
    {'a': 1.0, 'b': 0.0}
    """
    if not hits:
        return {}
    scores = [hit.score for hit in hits]
    low, high = min(scores), max(scores)
    if high == low:
        return {hit.doc_id: 1.0 for hit in hits}
    return {hit.doc_id: (hit.score - low) / (high - low) for hit in hits}


def convex_fuse(sparse: Sequence[Hit], dense: Sequence[Hit], alpha: float = 0.5) -> list[Hit]:
    """``alpha * dense + (1 - alpha) * sparse`` on per-query min-max-normalized scores (missing = 0).

    >>> convex_fuse([Hit("a", 10.0), Hit("b", 5.0)], [Hit("b", 0.9), Hit("c", 0.1)], alpha=0.5)
    [Hit(doc_id='b', score=0.5), Hit(doc_id='a', score=0.5), Hit(doc_id='c', score=0.0)]
    """
    sparse_norm, dense_norm = min_max_normalize(sparse), min_max_normalize(dense)
    doc_ids = dict.fromkeys([*sparse_norm, *dense_norm])
    return sort_hits(
        Hit(doc_id, alpha * dense_norm.get(doc_id, 0.0) + (1 - alpha) * sparse_norm.get(doc_id, 0.0))
        for doc_id in doc_ids
    )


# ---------------------------------------------------------------------- searcher
class Searcher:
    """Retrieve with the index's components, fuse or cascade, then optionally rerank.

    ``mode``: ``auto`` (hybrid when the index has both components, else the one it has), ``bm25``, ``dense``,
    ``hybrid`` (each stage retrieves ``fusion.depth`` from the whole corpus, fused by RRF or convex combination) or
    ``cascade`` (BM25 retrieves ``fusion.depth`` candidates, the dense model re-scores them from stored embeddings).
    ``reranker`` re-scores the first stage's top ``rerank_depth``; documents below that depth keep their order.
    """

    def __init__(
        self,
        index: Index,
        *,
        mode: str = "auto",
        fusion: FusionConfig = FusionConfig(),  # noqa: B008 - frozen dataclass, safe as a default
        reranker: Reranker | None = None,
        rerank_depth: int = 100,
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
        check_k(rerank_depth)
        self.index = index
        self.mode = mode
        self.fusion = fusion
        self.reranker = reranker
        self.rerank_depth = rerank_depth

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """Best ``k`` hits for one query; same as ``search_batch([query], k)[0]``."""
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Best ``k`` hits for each query, best first."""
        check_k(k)
        queries = list(queries)
        depth = max(k, self.rerank_depth) if self.reranker is not None else k
        results = self._stages(queries, depth)[self.mode]
        if self.reranker is not None:
            results = self._rerank(queries, results)
        return [hits[:k] for hits in results]

    def explain(self, query: str, k: int = 10) -> list[ExplainedHit]:
        """The final top ``k`` with each hit's rank and score in every stage that ran (the reranker included)."""
        check_k(k)
        depth = max(k, self.fusion.depth, self.rerank_depth if self.reranker is not None else 0)
        stages = {name: rankings[0] for name, rankings in self._stages([query], depth).items()}
        final = stages[self.mode]
        if self.reranker is not None:
            final = stages["rerank"] = self._rerank([query], [final])[0]
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
    def _stages(self, queries: list[str], k: int) -> dict[str, list[list[Hit]]]:
        """Every stage's ranking for ``queries`` (used by search and by explain)."""
        if self.mode in ("bm25", "dense"):
            return {self.mode: self.index.component(self.mode).search_batch(queries, k)}
        depth = max(k, self.fusion.depth)
        bm25_hits = self.index.component("bm25").search_batch(queries, depth)
        if self.mode == "cascade":
            return {"bm25": bm25_hits, "cascade": self._cascade(queries, bm25_hits)}
        dense_hits = self.index.component("dense").search_batch(queries, depth)
        if self.fusion.method == "rrf":
            fused = [
                rrf_fuse([sparse, dense], self.fusion.rrf_k)
                for sparse, dense in zip(bm25_hits, dense_hits, strict=True)
            ]
        else:
            fused = [convex_fuse(s, d, self.fusion.alpha) for s, d in zip(bm25_hits, dense_hits, strict=True)]
        return {"bm25": bm25_hits, "dense": dense_hits, "hybrid": fused}

    def _cascade(self, queries: list[str], candidates: list[list[Hit]]) -> list[list[Hit]]:
        rows = [[self.index.row(hit.doc_id) for hit in hits] for hits in candidates]
        scores = self.index.component("dense").score_rows(queries, rows)
        return [
            sort_hits(Hit(hit.doc_id, float(score)) for hit, score in zip(hits, row_scores, strict=True))
            for hits, row_scores in zip(candidates, scores, strict=True)
        ]

    def _rerank(self, queries: list[str], results: list[list[Hit]]) -> list[list[Hit]]:
        assert self.reranker is not None
        heads = [hits[: self.rerank_depth] for hits in results]
        texts = [[document_text(doc) for doc in self.index.documents([hit.doc_id for hit in head])] for head in heads]
        reranked = self.reranker.rerank_batch(queries, heads, texts)
        # Only documents the first stage actually returned are credited; the tail keeps first-stage order below.
        return [_below(new, hits[self.rerank_depth :]) for new, hits in zip(reranked, results, strict=True)]


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
