"""Same query, same answer (issue 19, item 2): a query's hits and scores do not depend on the batch it is searched
in, in every mode, with bf16 (the CPU default on AMX machines) as with fp32; ``run`` equals ``search``; the server,
which batches concurrent requests, answers each query as it would answer it alone."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import Any

import pytest

from searchkit.config import DenseConfig, RerankConfig, ServeConfig
from searchkit.evaluate.runs import run_queries
from searchkit.index import Index
from searchkit.search import Searcher
from searchkit.types import Hit, Query

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny"
WORDS = sorted(set(re.findall(r"[a-z]+", (TINY / "corpus.jsonl").read_text(encoding="utf-8").lower())))
SIZES = (7, 32, 100)


def _queries(count: int = 100) -> list[str]:
    """Queries of 1 to 12 words: many lengths, so batches pad them to many widths."""
    rng = random.Random(19)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(count)]


@pytest.fixture(scope="module", params=["bf16", "fp32"])
def dtype(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, tiny_bi_encoder: Path, dtype: str) -> Index:
    config = DenseConfig(model=str(tiny_bi_encoder), device="cpu", dtype=dtype, batch_size=64)
    return Index.build(TINY, tmp_path_factory.mktemp(f"invariance-{dtype}") / "tiny", dense=config)


def _same(alone: list[list[Hit]], batched: list[list[Hit]]) -> list[str]:
    problems = []
    for number, (one, many) in enumerate(zip(alone, batched, strict=True)):
        if [hit.doc_id for hit in one] != [hit.doc_id for hit in many]:
            problems.append(f"query {number}: top 10 differs")
        elif any(abs(a.score - b.score) > 1e-6 for a, b in zip(one, many, strict=True)):
            worst = max(abs(a.score - b.score) for a, b in zip(one, many, strict=True))
            problems.append(f"query {number}: scores differ by {worst:.2e}")
    return problems


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid", "cascade", "reranked"])
def test_a_querys_answer_does_not_depend_on_its_batch(
    mode: str, index: Index, tiny_cross_encoder: Path, dtype: str
) -> None:
    rerank = RerankConfig(str(tiny_cross_encoder), device="cpu", dtype=dtype, depth=8) if mode == "reranked" else None
    searcher = Searcher(index, mode="hybrid" if mode == "reranked" else mode, rerank=rerank)
    queries = _queries()
    alone = [searcher.search(query, 10) for query in queries]
    assert any(alone)
    for size in SIZES:
        batched = [
            hit
            for start in range(0, len(queries), size)
            for hit in searcher.search_batch(queries[start : start + size], 10)
        ]
        assert _same(alone, batched) == [], f"batches of {size}"
    shuffled = list(range(len(queries)))
    random.Random(7).shuffle(shuffled)  # other neighbours in every batch
    again = searcher.search_batch([queries[i] for i in shuffled], 10)
    assert _same([alone[i] for i in shuffled], again) == []
    run = run_queries(searcher, [Query(f"q{i}", text) for i, text in enumerate(queries)], k=10)  # `searchkit run`
    assert _same(alone, [run[f"q{i}"] for i in range(len(queries))]) == []


def test_the_server_batching_concurrent_requests_answers_as_alone(index: Index, tiny_cross_encoder: Path) -> None:
    import httpx

    from searchkit.serve.app import create_app
    from searchkit.serve.engine import EngineSpec, SearchEngine

    queries = _queries(40)
    dtype = index.components["dense"].dtype
    rerank = RerankConfig(str(tiny_cross_encoder), device="cpu", dtype=dtype, depth=8)
    for mode, reranker in (("hybrid", None), ("dense", None), ("hybrid", rerank)):
        engine = SearchEngine(EngineSpec(str(index.path), mode=mode, rerank=reranker))
        app = create_app(engine=engine, config=ServeConfig(batch_wait_ms=200, max_batch=16))
        alone = [Searcher(index, mode=mode, rerank=reranker).search(query, 10) for query in queries]

        async def post_all(app: Any = app, reranker: Any = reranker) -> list[Any]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
                bodies = [{"query": query, "k": 10, "rerank": reranker is not None} for query in queries]
                responses = await asyncio.gather(*(client.post("/search", json=body) for body in bodies))
                await app.state.batcher.close()
            return [response.json() for response in responses]

        answers = asyncio.run(post_all())
        served = [[Hit(hit["doc_id"], hit["score"]) for hit in answer["hits"]] for answer in answers]
        assert _same(alone, served) == [], mode
