"""What each route does, whatever carried the request: limits, the generation a request is answered from, batching,
the answer's JSON shape, reloads. :mod:`searchkit.serve.app` only wires these to HTTP.

Searches are batched in two lanes with worker threads of their own (:func:`lane_of`): BM25 without a reranker,
and everything that runs a model. Under a mixed load a BM25 query then waits for other BM25 queries only, never for
an encoder or reranker batch.

>>> import asyncio, tempfile, pathlib
>>> from searchkit.index import Index
>>> from searchkit.serve.engine import EngineSpec, SearchEngine
>>> from searchkit.serve.metrics import ServeMetrics
>>> from searchkit.serve.schemas import SearchRequest
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "idx"
>>> _ = Index.build("tests/data/tiny", folder)
>>> service = Service(SearchEngine(EngineSpec(str(folder))), ServeConfig(), ServeMetrics())
>>> async def ask() -> str:
...     try:
...         return (await service.search(SearchRequest(query="cats chasing mice", k=1)))["hits"][0]["doc_id"]
...     finally:
...         await service.close()
>>> asyncio.run(ask())
'd1'
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any, NamedTuple

from searchkit.config import ServeConfig
from searchkit.models.cards import read_reranker_card
from searchkit.search import Searcher
from searchkit.serve.batcher import Lanes, MicroBatcher
from searchkit.serve.engine import Generation, SearchEngine, SearchItem
from searchkit.serve.feedback import FeedbackRecorder, FeedbackRefused
from searchkit.serve.metrics import ServeMetrics
from searchkit.serve.schemas import BatchRequest, FeedbackRequest, ReloadRequest, SearchOptions, SearchRequest
from searchkit.types import ConfigError, SearchkitError

logger = logging.getLogger(__name__)


class ReloadFailed(Exception):
    """The index could not be opened again; the previous generation is still served (answered 409)."""


class SearchKey(NamedTuple):
    """What a batch shares: the generation it is answered from, the Searcher (mode and reranker), ``k`` and the
    metadata filter."""

    generation: Generation
    searcher: Searcher
    k: int
    filter: tuple[str, ...] = ()


BM25_LANE, NEURAL_LANE = "bm25", "neural"


def lane_of(key: SearchKey) -> str:
    """The lane a search is answered in: BM25 without a reranker (a millisecond) has worker threads of its own, so
    that it never waits behind a neural batch (the encoder or the reranker: tens of milliseconds to seconds).

    The lane decides only where a Searcher call runs and what it is batched with, never what it answers."""
    cheap = key.searcher.mode == "bm25" and key.searcher.reranker is None
    return BM25_LANE if cheap else NEURAL_LANE


class Service:
    """The routes' work over one :class:`searchkit.serve.engine.SearchEngine`, with ``config``'s limits and batching.

    ``supervisor_pid``: a multi-worker server's supervisor, which :meth:`reload` asks (SIGHUP) to restart every
    worker, since one request reaches only one of them. ``recorder``: the feedback log's writer (None: no
    impressions are logged and ``/feedback`` is refused).
    """

    def __init__(
        self,
        engine: SearchEngine,
        config: ServeConfig,
        metrics: ServeMetrics,
        supervisor_pid: int | None = None,
        recorder: FeedbackRecorder | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self.supervisor_pid = supervisor_pid
        self.recorder = recorder
        engine.observe = metrics.stage

        def lane(name: str, threads: int) -> MicroBatcher[SearchKey, SearchItem, list[dict[str, Any]]]:
            return MicroBatcher(
                lambda key, items: engine.search(key.generation, key.searcher, key.k, items, key.filter),
                max_batch=config.max_batch,
                max_wait=config.batch_wait_ms / 1000,
                max_queue=config.max_queue,
                threads=threads,
                on_dispatch=self._dispatched,
                name=f"searchkit-{name}",
            )

        lanes = {BM25_LANE: lane(BM25_LANE, config.bm25_threads), NEURAL_LANE: lane(NEURAL_LANE, config.threads)}
        self.batcher: Lanes[SearchKey, SearchItem, list[dict[str, Any]]] = Lanes(lanes, lane_of)
        metrics.track_queue(lambda: self.batcher.pending)
        self._reload_lock = asyncio.Lock()
        self.describe()

    # ------------------------------------------------------------------ searches
    async def search(self, body: SearchRequest) -> dict[str, Any]:
        """One query's hits; concurrent queries with the same settings share one Searcher call."""
        start = time.perf_counter()
        query = _query(body.query)
        generation, searcher = self._resolve(body)
        item = SearchItem(query, tuple(body.fields))
        hits = await self.batcher.submit(SearchKey(generation, searcher, body.k, tuple(body.filter)), item)
        answer = {"query": body.query, **_answer(generation, searcher, body.k, start), "hits": hits}
        if self.recorder is not None:
            swapped = self.recorder.explore(hits)
            model = self.engine.model_version if searcher.reranker is not None else ""
            doc_ids = [hit["doc_id"] for hit in hits]
            answer["request_id"] = self.recorder.impression(
                body.query, searcher.mode, doc_ids, generation.number, generation.fingerprint, model, swapped
            )
        return answer

    async def feedback(self, body: FeedbackRequest) -> dict[str, Any]:
        """Record one feedback event on a logged answer; returns once it is committed to the log."""
        if self.recorder is None:
            raise FeedbackRefused(404, "this server records no feedback: start it with --feedback-log PATH")
        return await self.recorder.record(body.request_id, body.doc_id, body.rank, body.type, body.value)

    async def search_batch(self, body: BatchRequest) -> dict[str, Any]:
        """Several queries' hits from one Searcher call."""
        start = time.perf_counter()
        if len(body.queries) > self.config.max_batch_queries:
            raise ConfigError(f"{len(body.queries)} queries; at most {self.config.max_batch_queries} a request")
        items = [SearchItem(_query(query, i), tuple(body.fields)) for i, query in enumerate(body.queries)]
        generation, searcher = self._resolve(body)
        key = SearchKey(generation, searcher, body.k, tuple(body.filter))
        results = await self.batcher.call(key, self.engine.search, generation, searcher, body.k, items, key.filter)
        pairs = [{"query": query, "hits": hits} for query, hits in zip(body.queries, results, strict=True)]
        return {**_answer(generation, searcher, body.k, start), "results": pairs}

    async def explain(self, body: SearchRequest) -> dict[str, Any]:
        """The top ``k`` with each hit's rank and score in every stage that ran."""
        start = time.perf_counter()
        query = _query(body.query)
        generation, searcher = self._resolve(body)
        item = SearchItem(query, tuple(body.fields))
        key = SearchKey(generation, searcher, body.k, tuple(body.filter))
        hits = await self.batcher.call(key, self.engine.explain, generation, searcher, body.k, item, key.filter)
        return {"query": body.query, **_answer(generation, searcher, body.k, start), "hits": hits}

    def _resolve(self, body: SearchOptions) -> tuple[Generation, Searcher]:
        if body.k > self.config.max_k:
            raise ConfigError(f"k is {body.k}; this server answers at most k={self.config.max_k}")
        if body.rerank_depth is not None and body.rerank_depth > self.config.max_rerank_depth:
            raise ConfigError(f"rerank_depth is {body.rerank_depth}; at most {self.config.max_rerank_depth}")
        generation = self.engine.current  # this request is answered from this generation to the end
        return generation, self.engine.searcher(generation, body.mode, body.rerank, body.rerank_depth)

    def _dispatched(self, key: SearchKey, waits: list[float]) -> None:
        self.metrics.batch_size.observe(len(waits))
        for wait in waits:
            self.metrics.stage("queue", wait)

    # ------------------------------------------------------------------ operations
    async def reload(self, body: ReloadRequest | None = None) -> tuple[int, dict[str, Any]]:
        """Open the index again and swap it in: (200, what changed); with several workers (202, restarting).
        ReloadFailed when it cannot be opened (the previous generation is still served).

        With ``body.model``: serve that reranker folder instead (the index is not re-opened), only if its card's
        dev guard passed (:func:`guard_verdict`); one that fails it is never loaded (ReloadFailed)."""
        if body is not None and body.model is not None:
            return await self._reload_model(body.model)
        if self.supervisor_pid is not None:
            os.kill(self.supervisor_pid, signal.SIGHUP)
            return 202, {"status": "restarting"}
        async with self._reload_lock:
            previous = self.engine.current
            start = time.perf_counter()
            try:
                generation = await asyncio.to_thread(self.engine.reload)  # searches go on meanwhile
            except (SearchkitError, OSError) as err:
                self.metrics.reloads.labels("failed").inc()
                logger.error("reload failed, still serving generation %d: %s", previous.number, err)
                raise ReloadFailed(f"reload failed, still serving generation {previous.number}: {err}") from None
            self.metrics.reloads.labels("ok").inc()
            self.describe()
            return 200, {
                "status": "reloaded",
                "fingerprint": generation.fingerprint,
                "previous": previous.fingerprint,
                "generation": generation.number,
                "seconds": round(time.perf_counter() - start, 3),
            }

    async def _reload_model(self, model: str) -> tuple[int, dict[str, Any]]:
        if self.supervisor_pid is not None:
            raise ConfigError("a model reload needs a one-worker server (several workers: restart it with --rerank)")
        async with self._reload_lock:
            start = time.perf_counter()
            previous = self.engine.model_version
            try:
                guard_verdict(model)
                version = await asyncio.to_thread(self.engine.load_reranker, model)
            except (SearchkitError, OSError) as err:
                self.metrics.reloads.labels("failed").inc()
                logger.error("model reload refused, still serving %s: %s", previous or "no reranker", err)
                raise ReloadFailed(f"model not loaded, still serving the previous one: {err}") from None
            self.metrics.reloads.labels("ok").inc()
            self.describe()
            return 200, {
                "status": "reloaded",
                "model": model,
                "model_version": version,
                "fingerprint": self.engine.current.fingerprint,
                "generation": self.engine.current.number,
                "seconds": round(time.perf_counter() - start, 3),
            }

    def describe(self) -> None:
        """Set the index and model info metrics to what is served now."""
        generation = self.engine.current
        components = list(generation.index.manifest["components"])
        path = self.engine.spec.index
        self.metrics.served(path, generation.fingerprint, generation.number, generation.index.num_docs, components)
        self.metrics.models(self.engine.models(), self.engine.model_version)

    async def close(self) -> None:
        await self.batcher.close()
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)


def guard_verdict(model: str) -> dict[str, Any]:
    """The dev guard verdict a reranker folder's card records (``searchkit train``: the shipped model against the
    model it started from); ConfigError, one line, for a model without a card, without a verdict, or one that did
    not beat its start: such a model is not served by a reload."""
    card = read_reranker_card(model)
    if not card:
        raise ConfigError(
            f"{model} has no searchkit.json card: its dev guard cannot be checked (train it with searchkit)"
        )
    guard = card.get("guard")
    if not isinstance(guard, dict) or "improved" not in guard:
        raise ConfigError(f"{model}: its card records no dev guard (trained without dev queries?)")
    if guard["improved"] is not True:
        raise ConfigError(
            f"{model} failed its dev guard: dev {card.get('dev_metric', '?')} {guard.get('shipped')} does not beat "
            f"its {guard.get('compared_with', 'start')} {guard.get('model', '')} ({guard.get('start')})"
        )
    return guard


def _query(text: str, position: int | None = None) -> str:
    if not text.strip():
        where = "" if position is None else f" (queries[{position}])"
        raise ConfigError(f"the query is empty{where}")
    return text


def _answer(generation: Generation, searcher: Searcher, k: int, start: float) -> dict[str, Any]:
    took = round((time.perf_counter() - start) * 1000, 3)
    rerank = searcher.reranker is not None
    return {"mode": searcher.mode, "k": k, "rerank": rerank, "fingerprint": generation.fingerprint, "took_ms": took}
