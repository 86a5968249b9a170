"""Searcher: first stage (BM25, dense, hybrid fusion or cascade) then an optional reranker, behind one interface.

Every retriever and the Searcher implement ``search_batch(queries, k) -> list[list[Hit]]``. The Searcher also takes
``filter=`` (metadata conditions, :mod:`searchkit.retrieval.filters`), applied inside each stage before its top k.

>>> from searchkit.index import Index
>>> import tempfile, pathlib
>>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "idx")
>>> Searcher(index).search("cats chasing mice", k=2)[0].doc_id
'd1'
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from searchkit.config import DEFAULT_RERANK_DEPTH, SEARCH_MODES, FusionConfig, RerankConfig
from searchkit.formats import document_text
from searchkit.index.bundle import IndexBundle
from searchkit.index.components import retrieving
from searchkit.models.cross_encoder import CrossEncoderReranker
from searchkit.ranking.arrays import DocIdTable, Ranking, sort_ranking
from searchkit.ranking.fusion import convex_rows, mix_scores, reranker_only, rrf_rows
from searchkit.retrieval.filters import FilterSpec, parse_filter
from searchkit.types import ConfigError, DataError, Document, Hit, Retriever, Run, check_k, sort_hits

logger = logging.getLogger(__name__)


class Reranker(Protocol):
    """What the Searcher needs from a reranker: re-score each query's candidates given their texts.

    A reranker that takes ``doc_tokens`` gets the index's stored token ids instead of the texts when its tokenizer's
    ``tokenizer_fingerprint`` is theirs. A reranker with a ``fusion`` (:class:`searchkit.config.LearnedFusion`, as
    :class:`searchkit.models.cross_encoder.CrossEncoderReranker` reads from its card) has its scores mixed with the
    first stage's by the Searcher (:func:`searchkit.ranking.fusion.mix_scores`).
    """

    def rerank_batch(
        self, queries: Sequence[str], candidates: Sequence[Sequence[Hit]], texts: Sequence[Sequence[str]]
    ) -> list[list[Hit]]: ...


StageObserver = Callable[[str, float], None]
"""Called with a stage name (``first_stage``, ``rerank``) and the seconds one call of it took."""


class StageScore(NamedTuple):
    """A hit's 1-based rank and score in one stage (rank None: the stage did not return it)."""

    rank: int | None
    score: float | None


class ExplainedHit(NamedTuple):
    """A final hit with its rank and score in every stage that ran (``explain``)."""

    doc_id: str
    score: float
    stages: dict[str, StageScore]


# ---------------------------------------------------------------------- searcher
class Searcher:
    """Retrieve with the index's components, fuse or cascade, then optionally rerank.

    ``mode``: ``auto`` (hybrid when the index has two first stages or more, else the one it has), ``bm25``,
    ``dense``, any other first stage of the index by its name (``bm25.zh``: BM25 over another analyzer), ``hybrid``
    (each of ``fusion.stages``, by default every first stage of the index, retrieves ``fusion.depth`` from the whole
    corpus, fused by RRF, or for two stages by a convex combination) or ``cascade`` (BM25 retrieves ``fusion.depth``
    candidates, the dense model re-scores them from stored embeddings).
    ``rerank``: a :class:`searchkit.config.RerankConfig` (the Searcher loads that cross-encoder) or a reranker
    object; it re-scores the first stage's top ``depth`` (the reranker's ``depth``: ``RerankConfig.depth``, else
    the depth its card's learned fusion was fitted at, else 100); documents below that depth keep their order,
    scored below. A reranker's scores are mixed with the first stage's by its card's fusion
    (:func:`searchkit.ranking.fusion.mix_scores`). ``observe``: called with each stage's name (``first_stage``,
    ``rerank``) and its seconds, for every call (the server's metrics).
    """

    def __init__(
        self,
        index: IndexBundle,
        *,
        mode: str = "auto",
        fusion: FusionConfig = FusionConfig(),  # noqa: B008 - frozen dataclass, safe as a default
        rerank: RerankConfig | Reranker | None = None,
        observe: StageObserver | None = None,
    ) -> None:
        available = set(index.manifest["components"])
        self.retrievers: list[str] = retrieving(available)
        """The index's first stages (``bm25``, ``bm25.<analyzer>``..., ``dense``), each a mode of its own."""
        if mode not in SEARCH_MODES and mode not in self.retrievers:
            choices = [*SEARCH_MODES, *(name for name in self.retrievers if name not in SEARCH_MODES)]
            raise ConfigError(f"unknown search mode {mode!r} for {index.path}; choose one of {', '.join(choices)}")
        if mode == "auto":
            mode = "hybrid" if len(self.retrievers) >= 2 else (self.retrievers or ["bm25"])[0]
        self.fused: list[str] = list(fusion.stages or self.retrievers) if mode == "hybrid" else []
        """What hybrid fuses: ``fusion.stages``, else every first stage of the index."""
        needed = {"cascade": {"bm25", "dense"}, "hybrid": set(self.fused)}.get(mode, {mode})
        missing = needed - available
        if missing or (mode == "hybrid" and len(self.fused) < 2):
            lacking = f"the {' and '.join(sorted(missing))} component(s)" if missing else "two first stages"
            raise ConfigError(
                f"mode {mode!r} needs {lacking}, which {index.path} lacks (it has: {', '.join(sorted(available))}); "
                "add it with Index.add or `searchkit index build`"
            )
        if mode == "hybrid" and fusion.method == "convex" and len(self.fused) != 2:
            raise ConfigError(f"convex fusion combines two first stages, got {len(self.fused)}: use rrf for more")
        reranker: Any = rerank
        if isinstance(rerank, RerankConfig):
            reranker = CrossEncoderReranker.from_config(rerank)
        depth = getattr(reranker, "depth", None) if reranker is not None else None
        self.rerank_depth: int = int(depth) if depth is not None else DEFAULT_RERANK_DEPTH
        check_collection = getattr(reranker, "check_collection", None)
        if check_collection is not None:  # a reranker trained on another collection warns once (out of domain)
            check_collection(index.manifest.get("source"))
        check_k(self.rerank_depth)
        self.index = index
        self._doc_table: DocIdTable | None = None
        self.mode = mode
        self.fusion = fusion
        self.reranker: Reranker | None = reranker
        self.observe = observe
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
        expressions, all of which must hold, or a :class:`searchkit.retrieval.filters.Filter`): every stage keeps only
        the documents that meet them before taking its top k, so none other is returned, and k hits come back when k
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

        parsed = parse_filter(spec)
        self.index.allowed_rows(parsed)  # an unknown field or a bad value fails here, before any query runs
        return _Filtered(self, parsed)

    def stages(self, queries: Sequence[str], k: int) -> dict[str, list[list[Hit]]]:
        """Every first-stage ranking the mode runs (``bm25``, ``dense``, and the mode's own), top ``k`` or more.

        What the reranker's learned fusion reads (:func:`searchkit.training.fusion.dev_features` fits on it).
        """
        check_k(k)
        return self._stages(list(queries), k)

    def per_query_stages(self, stages: Mapping[str, list[list[Hit]]]) -> list[dict[str, list[Hit]]]:
        """Query i's first-stage rankings by name (the index's retrievers among ``stages``, as :meth:`stages`
        returns them): what the learned fusion reads its stage features from."""
        names = [name for name in self.retrievers if name in stages]
        count = len(next(iter(stages.values()), []))
        return [{name: stages[name][i] for name in names} for i in range(count)]

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
        with self._timed("first_stage"):
            return self._first_stage_rows(queries, k, allowed)

    def _first_stage_rows(self, queries: list[str], k: int, allowed: np.ndarray | None) -> dict[str, list[Ranking]]:
        if self.mode in self.retrievers:
            return {self.mode: self.index.component(self.mode).search_rows(queries, k, allowed=allowed)}
        depth = max(k, self.fusion.depth)
        keys = self._table.keys
        if self.mode == "cascade":
            bm25 = self.index.component("bm25").search_rows(queries, depth, allowed=allowed)
            scores = self.index.component("dense").score_rows(queries, [r.rows for r in bm25])
            return {"bm25": bm25, "cascade": [sort_ranking(r.rows, s, keys) for r, s in zip(bm25, scores, strict=True)]}
        rows = {name: self.index.component(name).search_rows(queries, depth, allowed=allowed) for name in self.fused}
        per_query = list(zip(*rows.values(), strict=True))
        if self.fusion.method == "rrf":
            fused = [rrf_rows(list(rankings), keys, self.fusion.rrf_k) for rankings in per_query]
        else:  # convex: the second stage (dense, as listed) weighted alpha
            fused = [convex_rows(first, second, keys, self.fusion.alpha) for first, second in per_query]
        return {**rows, "hybrid": fused}

    def rerank_run(
        self,
        queries: Mapping[str, str],
        run: Run,
        *,
        documents: Mapping[str, Document] | None = None,
        batch_size: int = 256,
    ) -> Run:
        """Any run's candidates (a TREC run of another system, ``read_run``) re-scored by this Searcher's reranker,
        exactly as ``search`` reranks its own first stage: the top :attr:`rerank_depth` of each query re-scored, in
        query batches of ``batch_size``, mixed with the run's scores (and this index's BM25 and dense rankings, for a
        card's learned fusion) as the card says; the rest keep their order below. ``queries[query_id]`` is each run
        query's text. Texts come from this index's doc store (its stored tokens when the reranker's tokenizer matches)
        or from ``documents`` (doc id -> Document, e.g. read from the corpus the run was made from).

        A run query without a text, or a candidate missing from the store, is a DataError of one line (how many,
        examples, and the fix).

        >>> from searchkit.index import Index
        >>> from searchkit.models.tiny import make_tiny_cross_encoder
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> index = Index.build("tests/data/tiny", folder / "idx")
        >>> model = make_tiny_cross_encoder(folder / "ce", words=["cats", "mice", "solar"])
        >>> searcher = Searcher(index, rerank=RerankConfig(str(model), device="cpu", dtype="fp32"))
        >>> reranked = searcher.rerank_run({"q": "cats"}, {"q": [Hit("d1", 2.0), Hit("d2", 1.0)]})
        >>> sorted(hit.doc_id for hit in reranked["q"])
        ['d1', 'd2']
        """
        if self.reranker is None:
            raise ConfigError("rerank_run needs a Searcher with a reranker (rerank=RerankConfig(MODEL))")
        check_k(batch_size)
        query_ids = list(run)
        _check_rerank_inputs(query_ids, queries, run, self.rerank_depth, documents, self.index)
        fusion = getattr(self.reranker, "fusion", None)
        reranked: Run = {}
        for start in range(0, len(query_ids), batch_size):
            batch = query_ids[start : start + batch_size]
            texts = [queries[qid] for qid in batch]
            results = [sort_hits(run[qid]) for qid in batch]
            stages = None
            if fusion is not None and not reranker_only(fusion):  # the card's BM25 / dense features: this index's
                stages = self._stages(texts, self.rerank_depth)
            with self._timed("rerank"):
                hits = self._reranked(texts, results, stages, documents)
            reranked.update(zip(batch, hits, strict=True))
        return reranked

    def _rerank(
        self, queries: list[str], results: list[list[Hit]], stages: dict[str, list[list[Hit]]]
    ) -> list[list[Hit]]:
        with self._timed("rerank"):
            return self._reranked(queries, results, stages)

    def _reranked(
        self,
        queries: list[str],
        results: list[list[Hit]],
        stages: dict[str, list[list[Hit]]] | None,
        documents: Mapping[str, Document] | None = None,
    ) -> list[list[Hit]]:
        assert self.reranker is not None
        heads = [hits[: self.rerank_depth] for hits in results]
        kwargs: dict[str, Any] = {}
        stored = self._reranker_tokens() if documents is None else None
        texts: list[list[str]] | None = None
        if stored is not None:  # the index's token ids: the documents are neither read nor tokenized
            kwargs["doc_tokens"] = [stored.rows([self.index.row(hit.doc_id) for hit in head]) for head in heads]
        elif documents is not None:
            texts = [[document_text(documents[hit.doc_id]) for hit in head] for head in heads]
        else:
            texts = [[document_text(d) for d in self.index.documents([hit.doc_id for hit in head])] for head in heads]
        reranked = self.reranker.rerank_batch(queries, heads, texts, **kwargs)  # type: ignore[arg-type]
        fusion = getattr(self.reranker, "fusion", None)
        if fusion is not None and not reranker_only(fusion):  # the card's mix of its scores with the first stage's
            per_query = self.per_query_stages(stages or {}) or [{} for _ in heads]
            logits = [
                [own[hit.doc_id] for hit in head]
                for head, own in zip(heads, ({h.doc_id: h.score for h in new} for new in reranked), strict=True)
            ]
            flat = np.array([score for row in logits for score in row], dtype=np.float64)
            reranked = mix_scores(heads, flat, fusion, per_query)
        # Only documents the first stage actually returned are credited; the tail keeps first-stage order below.
        return [_below(new, hits[self.rerank_depth :]) for new, hits in zip(reranked, results, strict=True)]

    @contextlib.contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        """Report the seconds ``stage`` took to :attr:`observe` (the server's per-stage metrics), when set."""
        if self.observe is None:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(stage, time.perf_counter() - start)

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
        passages = getattr(getattr(reranker, "config", None), "passages", None)
        reason = stored.mismatch(fingerprint, 0 if passages is not None else needed)
        if reason is None and passages is not None and not stored.complete():  # passages read every token
            reason = f"passages read every token of a document, the index stores at most {stored.max_length}"
        if reason is not None:
            logger.info("reranker: scoring document texts, not the index's stored tokens: %s", reason)
            return None
        logger.info("reranker: scoring the index's stored document tokens (only queries are tokenized)")
        self._stored_tokens = stored
        return stored


def _check_rerank_inputs(
    query_ids: Sequence[str],
    queries: Mapping[str, str],
    run: Run,
    depth: int,
    documents: Mapping[str, Document] | None,
    index: IndexBundle,
) -> None:
    """Every run query has a text and every candidate the reranker will score has a document, or one DataError line."""
    textless = [qid for qid in query_ids if qid not in queries]
    if textless:
        raise DataError(
            f"{len(textless)} of the run's {len(query_ids)} queries have no text in the queries given, e.g. "
            f"{', '.join(textless[:5])}: pass the queries the run was made for"
        )
    missing = []
    for qid in query_ids:
        for hit in sort_hits(run[qid])[:depth]:
            if documents is not None:
                absent = hit.doc_id not in documents
            else:
                try:
                    index.row(hit.doc_id)
                    absent = False
                except KeyError:
                    absent = True
            if absent:
                missing.append(f"{qid}:{hit.doc_id}")
    if missing:
        where = "the corpus given" if documents is not None else f"{index.path}'s doc store"
        raise DataError(
            f"{len(missing)} candidates of the run's top {depth} are not in {where}, e.g. {', '.join(missing[:5])}: "
            "rerank with the collection the run was made from (an index of it, or --corpus / documents=)"
        )


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
