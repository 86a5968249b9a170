"""`searchkit serve`: every route, every 4xx, auth on and off, metrics, micro-batching, hot swap, SIGHUP, workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient
from loadgen import LoadResult, bare_loop, drive, peak_rss_mb, start_server

from searchkit.config import BM25Config, RerankConfig, ServeConfig
from searchkit.index import Index
from searchkit.search import Searcher
from searchkit.serve.app import create_app
from searchkit.serve.batcher import MicroBatcher, QueueFull
from searchkit.serve.engine import EngineSpec, SearchEngine
from searchkit.types import ConfigError, Hit

TINY = Path(__file__).parent / "data" / "tiny"
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW_DOC = {"_id": "dz", "title": "Zebra crossing", "text": "A zebra crossing is striped for pedestrians."}


def write_corpus(folder: Path, extra: Sequence[dict[str, str]] = ()) -> Path:
    """The tiny corpus, plus ``extra`` documents, as a JSONL file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = (TINY / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    lines += [json.dumps(doc) for doc in extra]
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def bm25_index(tmp_path: Path) -> Path:
    """A BM25 index of the tiny corpus in this test's own folder (tests may rebuild it)."""
    target = tmp_path / "index"
    Index.build(write_corpus(tmp_path / "a"), target)
    return target


@pytest.fixture
def client(bm25_index: Path) -> Iterator[TestClient]:
    with TestClient(create_app(EngineSpec(str(bm25_index)))) as test_client:
        yield test_client


@pytest.fixture(params=[True, False], ids=["lean", "fastapi"])
def either_client(request: pytest.FixtureRequest, bm25_index: Path) -> Iterator[TestClient]:
    """A client of the app with its lean search routes, and of the app where FastAPI answers every route: the
    two must answer alike."""
    with TestClient(create_app(EngineSpec(str(bm25_index)), lean=request.param)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def hybrid_engine(tiny_hybrid_index: Index) -> SearchEngine:
    return SearchEngine(EngineSpec(str(tiny_hybrid_index.path)))


def as_hits(rows: list[dict[str, Any]]) -> list[Hit]:
    return [Hit(row["doc_id"], row["score"]) for row in rows]


def one_line_detail(response: Any) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in response.text
    return detail


# ---------------------------------------------------------------------- routes
def test_search_answers_as_the_searcher_does_with_the_requested_fields(
    either_client: TestClient, bm25_index: Path
) -> None:
    client = either_client
    searcher = Searcher(Index.open(bm25_index))
    response = client.post("/search", json={"query": "cats chasing mice", "k": 3, "fields": ["title", "text"]})
    assert response.status_code == 200
    body = response.json()
    assert as_hits(body["hits"]) == searcher.search("cats chasing mice", 3)
    first = body["hits"][0]
    assert (first["rank"], first["doc_id"], first["title"]) == (1, "d1", "Cats and dogs")
    assert first["text"].startswith("Cats chase mice")
    assert body["mode"] == "bm25" and body["rerank"] is False and body["k"] == 3
    assert body["fingerprint"] == Index.open(bm25_index).fingerprint()
    plain = client.post("/search", json={"query": "cats"}).json()["hits"][0]
    assert set(plain) == {"rank", "doc_id", "score"}  # no fields asked, none sent


def test_hybrid_search_batch_and_explain_match_the_searcher(
    hybrid_engine: SearchEngine, tiny_hybrid_index: Index
) -> None:
    queries = ["cats chasing mice", "solar electricity", "wind energy"]
    with TestClient(create_app(engine=hybrid_engine)) as test_client:
        for mode in ("hybrid", "cascade", "dense", "bm25"):
            searcher = Searcher(tiny_hybrid_index, mode=mode)
            batch = test_client.post("/search/batch", json={"queries": queries, "k": 4, "mode": mode}).json()
            assert [item["query"] for item in batch["results"]] == queries
            assert [as_hits(item["hits"]) for item in batch["results"]] == searcher.search_batch(queries, 4)
            single = test_client.post("/search", json={"query": queries[1], "k": 4, "mode": mode}).json()
            assert as_hits(single["hits"]) == searcher.search(queries[1], 4)
        explained = test_client.post("/explain", json={"query": queries[0], "k": 3, "fields": ["title"]}).json()
    expected = Searcher(tiny_hybrid_index).explain(queries[0], 3)
    assert explained["mode"] == "hybrid"
    assert [hit["doc_id"] for hit in explained["hits"]] == [hit.doc_id for hit in expected]
    for got, want in zip(explained["hits"], expected, strict=True):
        assert got["stages"] == {name: stage._asdict() for name, stage in want.stages.items()}
        assert got["title"] == tiny_hybrid_index.document(want.doc_id).title
    assert set(explained["hits"][0]["stages"]) == {"bm25", "dense", "hybrid"}


def test_health_describes_what_is_served(client: TestClient, bm25_index: Path) -> None:
    health = client.get("/health").json()
    index = Index.open(bm25_index)
    assert health["status"] == "ok" and health["version"]
    assert health["index"]["fingerprint"] == index.fingerprint()
    assert health["index"]["num_docs"] == 8 and health["index"]["generation"] == 1
    assert list(health["index"]["components"]) == ["bm25"]
    assert health["modes"] == ["auto", "bm25"] and health["default_mode"] == "bm25"
    assert health["models"] == {"dense": None, "reranker": None}


def test_the_page_and_the_api_docs_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'id="query"' in page.text and "/static/app.js" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/search", "/search/batch", "/explain", "/health", "/metrics", "/admin/reload"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_no_route_takes_a_path_from_the_client(client: TestClient, bm25_index: Path, tmp_path: Path) -> None:
    schema = client.get("/openapi.json").json()
    allowed = {"query", "queries", "k", "mode", "rerank", "rerank_depth", "fields", "filter"}
    allowed |= {"request_id", "doc_id", "rank", "type", "value"}  # FeedbackRequest
    for name, component in schema["components"]["schemas"].items():
        if name == "ReloadRequest":  # the one path: a model folder, on an admin route (always behind the token)
            assert set(component["properties"]) == {"model"}
        elif name.endswith("Request"):
            assert set(component["properties"]) <= allowed, name
    for path in schema["paths"].values():
        for operation in path.values():
            assert not operation.get("parameters"), operation  # no path or query parameters at all
    other = tmp_path / "other"
    Index.build(write_corpus(tmp_path / "b", [NEW_DOC]), other)
    refused = client.post("/search", json={"query": "zebra", "index": str(other)})
    assert refused.status_code == 422
    assert client.get("/static/../../../etc/passwd").status_code == 404


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("route", "body", "status", "words"),
    [
        ("/search", b"{not json", 400, "not valid JSON"),
        ("/search", b"", 422, "Field required"),
        ("/search", b"[1, 2]", 422, "body"),
        ("/search", {"k": 3}, 422, "query"),
        ("/search", {"query": "cats", "colour": "red"}, 422, "colour"),
        ("/search", {"query": "cats", "k": 0}, 422, "k"),
        ("/search", {"query": "cats", "k": "many"}, 422, "k"),
        ("/search", {"query": "cats", "k": 1001}, 400, "at most k=1000"),
        ("/search", {"query": "cats", "mode": "fuzzy"}, 400, "unknown mode 'fuzzy'"),
        ("/search", {"query": "cats", "mode": "dense"}, 400, "needs components"),
        ("/search", {"query": ""}, 400, "empty"),
        ("/search", {"query": " \t\n"}, 400, "empty"),
        ("/search", {"query": "cats", "rerank": True}, 400, "no reranker"),
        ("/search", {"query": "cats", "rerank_depth": 0}, 422, "rerank_depth"),
        ("/search", {"query": "cats", "rerank_depth": 1001}, 400, "rerank_depth"),
        ("/search", {"query": "cats", "fields": ["body"]}, 422, "fields"),
        ("/search/batch", {"queries": []}, 422, "queries"),
        ("/search/batch", {"queries": ["cats", "  "]}, 400, "queries[1]"),
        ("/search/batch", {"queries": ["cats"] * 257}, 400, "at most 256"),
        ("/explain", {"query": ""}, 400, "empty"),
        ("/explain", {"query": "cats", "mode": "cascade"}, 400, "needs components"),
    ],
)
def test_bad_input_is_a_4xx_with_one_line(
    either_client: TestClient, route: str, body: Any, status: int, words: str
) -> None:
    if isinstance(body, bytes):
        response = either_client.post(route, content=body, headers={"content-type": "application/json"})
    else:
        response = either_client.post(route, json=body)
    assert response.status_code == status, response.text
    assert words in one_line_detail(response)


def test_oversized_bodies_are_413_with_or_without_a_length(bm25_index: Path) -> None:
    app = create_app(EngineSpec(str(bm25_index)), ServeConfig(max_body_bytes=200))
    with TestClient(app) as test_client:
        assert test_client.post("/search", json={"query": "cats " * 20}).status_code == 200
        declared = test_client.post("/search", json={"query": "cats " * 100})
        assert declared.status_code == 413 and "200 bytes" in one_line_detail(declared)

        def chunks() -> Iterator[bytes]:  # no Content-Length: the body arrives in pieces
            yield b'{"query": "'
            yield b"cats " * 100
            yield b'"}'

        streamed = test_client.post("/search", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert test_client.post("/search", json={"query": "cats"}).status_code == 200  # still serving


def test_unknown_routes_and_methods(client: TestClient) -> None:
    assert client.get("/nowhere").status_code == 404
    assert client.get("/search").status_code == 405
    assert one_line_detail(client.get("/nowhere")) == "Not Found"


def test_a_full_queue_is_503_not_a_crash(bm25_index: Path) -> None:
    app = create_app(EngineSpec(str(bm25_index)), ServeConfig(max_queue=1, batch_wait_ms=300))

    async def flood() -> list[int]:
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as test_client:
            responses = await asyncio.gather(*(test_client.post("/search", json={"query": "cats"}) for _ in range(3)))
            await app.state.batcher.close()
        return sorted(response.status_code for response in responses)

    statuses = asyncio.run(flood())
    assert statuses[0] == 200 and statuses[-1] == 503


# ---------------------------------------------------------------------- auth
def test_a_token_guards_every_api_route_and_not_the_page(bm25_index: Path) -> None:
    routes = [
        ("post", "/search", {"query": "cats"}),
        ("post", "/search/batch", {"queries": ["cats"]}),
        ("post", "/explain", {"query": "cats"}),
        ("get", "/health", None),
        ("get", "/metrics", None),
        ("post", "/admin/reload", None),
    ]
    with TestClient(create_app(EngineSpec(str(bm25_index)), token=TOKEN)) as test_client:
        for method, route, body in routes:
            kwargs: dict[str, Any] = {} if body is None else {"json": body}
            missing = getattr(test_client, method)(route, **kwargs)
            assert missing.status_code == 401 and "missing token" in one_line_detail(missing), route
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = getattr(test_client, method)(route, headers={"Authorization": "Bearer nope"}, **kwargs)
            assert wrong.status_code == 401 and one_line_detail(wrong) == "wrong token"
            scheme = getattr(test_client, method)(route, headers={"Authorization": TOKEN}, **kwargs)
            assert scheme.status_code == 401
            assert getattr(test_client, method)(route, headers=AUTH, **kwargs).status_code == 200, route
        for public in ("/", "/static/app.js", "/static/style.css", "/docs", "/openapi.json"):
            assert test_client.get(public).status_code == 200, public
        assert test_client.get("/nowhere").status_code == 401  # unknown routes say nothing without the token


def test_without_a_token_the_api_is_open_and_admin_is_refused(client: TestClient) -> None:
    assert client.post("/search", json={"query": "cats"}).status_code == 200
    assert client.get("/metrics").status_code == 200
    refused = client.post("/admin/reload")
    assert refused.status_code == 403 and "--token" in one_line_detail(refused)


# ---------------------------------------------------------------------- metrics
def test_metrics_after_traffic(tiny_hybrid_index: Index, tiny_cross_encoder: Path) -> None:
    rerank = RerankConfig(str(tiny_cross_encoder), device="cpu", dtype="fp32", max_length=48, depth=5)
    spec = EngineSpec(str(tiny_hybrid_index.path), rerank=rerank)
    with TestClient(create_app(spec, token=TOKEN)) as test_client:
        assert test_client.post("/search", json={"query": "cats"}, headers=AUTH).status_code == 200
        assert test_client.post("/explain", json={"query": "solar", "rerank": False}, headers=AUTH).status_code == 200
        assert test_client.post("/search", json={"query": ""}, headers=AUTH).status_code == 400
        assert test_client.post("/search", json={"query": "cats"}).status_code == 401
        response = test_client.get("/metrics", headers=AUTH)
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'searchkit_requests_total{route="/search",status="200"} 1.0',
        'searchkit_requests_total{route="/explain",status="200"} 1.0',
        'searchkit_request_errors_total{route="/search",status="400"} 1.0',
        'searchkit_request_errors_total{route="/search",status="401"} 1.0',
        'searchkit_request_seconds_count{route="/search"} 3.0',
        'searchkit_stage_seconds_count{stage="queue"} 1.0',
        "searchkit_batch_size_count 1.0",
        "searchkit_queue_depth 0.0",
        f'searchkit_model_info{{name="{tiny_cross_encoder}",role="reranker"}} 1.0',
        'searchkit_model_info{name="all-MiniLM-L6-v2",role="dense"} 1.0',
    ):
        assert line in text, line
    for stage in ("first_stage", "rerank", "documents"):
        assert f'searchkit_stage_seconds_bucket{{le="+Inf",stage="{stage}"}}' in text or stage == "documents"
    fingerprint = Index.open(tiny_hybrid_index.path).fingerprint()
    assert f'fingerprint="{fingerprint}"' in text and 'components="bm25,dense"' in text


def test_two_apps_have_separate_metrics(bm25_index: Path) -> None:
    engine = SearchEngine(EngineSpec(str(bm25_index)))
    with TestClient(create_app(engine=engine)) as first, TestClient(create_app(engine=engine)) as second:
        first.post("/search", json={"query": "cats"})
        assert 'route="/search"' in first.get("/metrics").text
        assert 'route="/search"' not in second.get("/metrics").text


# ---------------------------------------------------------------------- reranking through the server
def test_rerank_settings_per_request(tiny_hybrid_index: Index, tiny_cross_encoder: Path) -> None:
    rerank = RerankConfig(str(tiny_cross_encoder), device="cpu", dtype="fp32", max_length=48, depth=6)
    engine = SearchEngine(EngineSpec(str(tiny_hybrid_index.path), rerank=rerank))
    query = "cats chasing mice"
    with TestClient(create_app(engine=engine)) as test_client:
        default = test_client.post("/search", json={"query": query, "k": 5}).json()
        deeper = test_client.post("/search", json={"query": query, "k": 5, "rerank_depth": 3}).json()
        plain = test_client.post("/search", json={"query": query, "k": 5, "rerank": False}).json()
        explained = test_client.post("/explain", json={"query": query, "k": 3}).json()
        health = test_client.get("/health").json()
    assert default["rerank"] is True and plain["rerank"] is False
    reranked = Searcher(tiny_hybrid_index, rerank=engine.reranker)
    assert as_hits(default["hits"]) == reranked.search(query, 5)
    shallow = Searcher(tiny_hybrid_index, rerank=dataclass_replace(rerank, depth=3))
    assert as_hits(deeper["hits"]) == shallow.search(query, 5)
    assert as_hits(plain["hits"]) == Searcher(tiny_hybrid_index).search(query, 5)
    assert set(explained["hits"][0]["stages"]) == {"bm25", "dense", "hybrid", "rerank"}
    assert health["models"]["reranker"] == str(tiny_cross_encoder) and health["rerank_depth"] == 6


def dataclass_replace(config: RerankConfig, **changes: Any) -> RerankConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


# ---------------------------------------------------------------------- micro-batching
class CountingSearcher(Searcher):
    """A real Searcher that records the queries of each search_batch call."""

    calls: ClassVar[list[list[str]]] = []

    def search_batch(self, queries: Sequence[str], k: int = 10, **kwargs: Any) -> list[list[Hit]]:
        type(self).calls.append(list(queries))
        return super().search_batch(queries, k, **kwargs)


def concurrent_posts(app: Any, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Post ``bodies`` to /search all at once (one event loop, as concurrent HTTP clients would)."""
    import httpx

    async def post_all() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as test_client:
            responses = await asyncio.gather(*(test_client.post("/search", json=body) for body in bodies))
            await app.state.batcher.close()
        assert all(response.status_code == 200 for response in responses)
        return [response.json() for response in responses]

    return asyncio.run(post_all())


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def test_concurrent_searches_are_grouped_and_each_gets_its_own_answer(mode: str, tiny_hybrid_index: Index) -> None:
    engine = SearchEngine(EngineSpec(str(tiny_hybrid_index.path)), searcher_class=CountingSearcher)
    app = create_app(engine=engine, config=ServeConfig(batch_wait_ms=500, max_batch=8))
    queries = ["cats chasing mice", "solar electricity", "wind energy", "mice", "dogs", "batteries", "zeros", "fox"]
    CountingSearcher.calls = []
    answers = concurrent_posts(app, [{"query": query, "k": 3, "mode": mode} for query in queries])
    assert CountingSearcher.calls == [queries]  # one search_batch call for all eight, in arrival order
    direct = Searcher(tiny_hybrid_index, mode=mode)
    for query, answer in zip(queries, answers, strict=True):
        assert answer["query"] == query and as_hits(answer["hits"]) == direct.search(query, 3)


def test_batches_split_by_settings_and_size(bm25_index: Path) -> None:
    engine = SearchEngine(EngineSpec(str(bm25_index)), searcher_class=CountingSearcher)
    app = create_app(engine=engine, config=ServeConfig(batch_wait_ms=500, max_batch=4))
    bodies = [{"query": f"cats {i}", "k": 2} for i in range(6)] + [{"query": "solar", "k": 5}]
    CountingSearcher.calls = []
    answers = concurrent_posts(app, bodies)
    assert sorted(len(call) for call in CountingSearcher.calls) == [1, 2, 4]  # k=2: 4 + 2; k=5: 1
    direct = Searcher(Index.open(bm25_index))
    for body, answer in zip(bodies, answers, strict=True):
        assert as_hits(answer["hits"]) == direct.search(body["query"], body["k"])


def test_batcher_errors_reach_every_caller_and_the_loop_stays_free() -> None:
    def run(key: str, items: list[int]) -> list[int]:
        if key == "bad":
            raise ValueError("boom")
        time.sleep(0.3)  # a slow model call, in the worker thread
        return [item * 2 for item in items]

    async def scenario() -> tuple[list[Any], int, list[int]]:
        batcher: MicroBatcher[str, int, int] = MicroBatcher(run, max_batch=4, max_wait=0.01, max_queue=7)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            for _ in range(10):
                await asyncio.sleep(0.02)
                ticks += 1

        bad = asyncio.gather(batcher.submit("bad", 1), batcher.submit("bad", 2), return_exceptions=True)
        good = asyncio.gather(*(batcher.submit("good", i) for i in range(5)))
        results = await asyncio.gather(bad, good, ticker())
        with pytest.raises(QueueFull):
            await asyncio.gather(*(batcher.submit("good", i) for i in range(8)))
        unbatched = await batcher.call(sum, [1, 2, 3])
        await batcher.close()
        return [results[0], results[1]], ticks, [unbatched]

    (bad, good), ticks, unbatched = asyncio.run(scenario())
    assert [type(error) for error in bad] == [ValueError, ValueError]
    assert good == [0, 2, 4, 6, 8]
    assert ticks == 10  # the event loop ran while the worker slept
    assert unbatched == [6]


# ---------------------------------------------------------------------- hot swap
def test_reload_swaps_in_a_rebuilt_index_and_the_old_one_keeps_answering(bm25_index: Path, tmp_path: Path) -> None:
    app = create_app(EngineSpec(str(bm25_index)), token=TOKEN)
    engine: SearchEngine = app.state.engine
    with TestClient(app) as test_client:
        before = test_client.get("/health", headers=AUTH).json()["index"]["fingerprint"]
        old = engine.current
        old_searcher = engine.searcher(old, None, None, None)
        assert test_client.post("/search", json={"query": "zebra"}, headers=AUTH).json()["hits"] == []
        Index.build(write_corpus(tmp_path / "b", [NEW_DOC]), bm25_index, overwrite=True)  # old files deleted
        # a request that took the old generation before the swap finishes on it, documents included
        rows = engine.search(old, old_searcher, 2, [engine_item("solar electricity", ("text",))])[0]
        assert rows[0]["doc_id"] == "d3" and rows[0]["text"].startswith("Solar panels")
        reloaded = test_client.post("/admin/reload", headers=AUTH).json()
        assert reloaded["status"] == "reloaded" and reloaded["previous"] == before
        health = test_client.get("/health", headers=AUTH).json()
        assert health["index"]["fingerprint"] == reloaded["fingerprint"] == Index.open(bm25_index).fingerprint()
        assert health["index"]["fingerprint"] != before and health["index"]["generation"] == 2
        assert health["index"]["num_docs"] == 9 and health["reloads"] == 1
        hits = test_client.post("/search", json={"query": "zebra", "fields": ["title"]}, headers=AUTH).json()["hits"]
        assert [(hit["doc_id"], hit["title"]) for hit in hits] == [("dz", "Zebra crossing")]
        metrics = test_client.get("/metrics", headers=AUTH).text
    assert 'searchkit_reloads_total{result="ok"} 1.0' in metrics and 'generation="2"' in metrics


def engine_item(query: str, fields: tuple[str, ...] = ()) -> Any:
    from searchkit.serve.engine import SearchItem

    return SearchItem(query, fields)


def test_reload_after_index_add_serves_the_new_component(bm25_index: Path, tiny_dense_config: Any) -> None:
    with TestClient(create_app(EngineSpec(str(bm25_index)), token=TOKEN)) as test_client:
        assert test_client.get("/health", headers=AUTH).json()["modes"] == ["auto", "bm25"]
        Index.open(bm25_index).add(dense=tiny_dense_config)
        assert test_client.post("/search", json={"query": "x", "mode": "hybrid"}, headers=AUTH).status_code == 400
        assert test_client.post("/admin/reload", headers=AUTH).status_code == 200
        health = test_client.get("/health", headers=AUTH).json()
        assert health["modes"] == ["auto", "bm25", "dense", "hybrid", "cascade"]
        assert health["models"]["dense"] == "all-MiniLM-L6-v2"
        hybrid = test_client.post("/search", json={"query": "solar electricity", "mode": "hybrid"}, headers=AUTH)
    assert hybrid.status_code == 200 and hybrid.json()["hits"][0]["doc_id"] in {"d3", "d8"}


def test_a_failed_reload_keeps_serving_the_old_generation(bm25_index: Path) -> None:
    with TestClient(create_app(EngineSpec(str(bm25_index)), token=TOKEN)) as test_client:
        before = test_client.get("/health", headers=AUTH).json()["index"]["fingerprint"]
        manifest = bm25_index / "manifest.json"
        saved = manifest.read_bytes()
        manifest.write_bytes(saved.replace(b'"num_docs": 8', b'"num_docs": 9'))  # damaged: checksum mismatch
        try:
            failed = test_client.post("/admin/reload", headers=AUTH)
        finally:
            manifest.write_bytes(saved)
        assert failed.status_code == 409 and "still serving generation 1" in one_line_detail(failed)
        assert test_client.post("/search", json={"query": "cats"}, headers=AUTH).status_code == 200
        assert test_client.get("/health", headers=AUTH).json()["index"]["fingerprint"] == before
        assert 'searchkit_reloads_total{result="failed"} 1.0' in test_client.get("/metrics", headers=AUTH).text


def test_requests_during_rebuilds_and_reloads_never_fail(bm25_index: Path, tmp_path: Path, serve_app: Any) -> None:
    corpora = [write_corpus(tmp_path / "a2"), write_corpus(tmp_path / "b", [NEW_DOC])]
    url = serve_app(create_app(EngineSpec(str(bm25_index)), ServeConfig(batch_wait_ms=1), token=TOKEN))
    stop = threading.Event()
    rebuilds = 0

    def rebuild() -> None:
        nonlocal rebuilds
        while not stop.is_set():
            variant = corpora[rebuilds % 2]
            Index.build(variant, bm25_index, bm25=BM25Config(k1=1.2 + 0.1 * (rebuilds % 3)), overwrite=True)
            rebuilds += 1
            stop.wait(0.05)

    builder = threading.Thread(target=rebuild)
    builder.start()
    bodies = [{"query": query, "k": 3, "fields": ["title", "text"]} for query in ("cats", "solar", "zebra", "wind")]
    try:
        result = asyncio.run(drive(url, bodies, clients=8, duration=4.0, token=TOKEN, reloads=12))
    finally:
        stop.set()
        builder.join(60)
    assert result.errors == {} and result.dropped == 0, result.summary()
    assert result.reloads == {"ok": 12} and rebuilds >= 2
    assert len(result.ok) > 50


# ---------------------------------------------------------------------- the real command: SIGHUP, workers
def get_json(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.loads(response.read())


def post_json(url: str, body: Any, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_for_fingerprint(url: str, old: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current: str = get_json(url + "/health", TOKEN)["index"]["fingerprint"]
        if current != old:
            return current
        time.sleep(0.1)
    raise AssertionError("the fingerprint did not change")


def test_sighup_reloads_the_searchkit_serve_command(bm25_index: Path, tmp_path: Path) -> None:
    with start_server(bm25_index, ["--mode", "bm25"], token=TOKEN) as server:
        before = get_json(server.url + "/health", TOKEN)["index"]["fingerprint"]
        assert post_json(server.url + "/search", {"query": "zebra"}, TOKEN)["hits"] == []
        Index.build(write_corpus(tmp_path / "b", [NEW_DOC]), bm25_index, overwrite=True)
        os.kill(server.pid, signal.SIGHUP)
        after = wait_for_fingerprint(server.url, before)
        assert after == Index.open(bm25_index).fingerprint()
        assert post_json(server.url + "/search", {"query": "zebra"}, TOKEN)["hits"][0]["doc_id"] == "dz"
        assert server.process.poll() is None  # SIGHUP did not stop it
        assert peak_rss_mb(server.pid) is not None
    # SIGTERM: a graceful shutdown, after which uvicorn re-raises the signal it caught
    assert server.process.returncode in (0, -signal.SIGTERM)


def worker_pids(parent: int) -> set[int]:
    """The server processes uvicorn's supervisor ``parent`` runs (its children but multiprocessing's tracker)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == parent and b"resource_tracker" not in command:
                found.add(int(stat.parent.name))
    return found


def test_several_workers_serve_and_reload_together(bm25_index: Path, tmp_path: Path) -> None:
    with start_server(bm25_index, ["--workers", "2"], token=TOKEN) as server:
        assert post_json(server.url + "/search", {"query": "cats", "k": 1}, TOKEN)["hits"][0]["doc_id"] == "d1"
        deadline = time.monotonic() + 120
        while len(old := worker_pids(server.pid)) < 2:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
        Index.build(write_corpus(tmp_path / "b", [NEW_DOC]), bm25_index, overwrite=True)
        assert post_json(server.url + "/admin/reload", None, TOKEN) == {"status": "restarting"}
        while worker_pids(server.pid) & old or len(worker_pids(server.pid)) < 2:  # replaced one at a time
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
        fingerprint = Index.open(bm25_index).fingerprint()
        for _ in range(6):  # every worker answers from the new index
            assert get_json(server.url + "/health", TOKEN)["index"]["fingerprint"] == fingerprint
            hits = post_json(server.url + "/search", {"query": "zebra"}, TOKEN)["hits"]
            assert [hit["doc_id"] for hit in hits] == ["dz"], server.log_tail()


# ---------------------------------------------------------------------- the command line, settings, load tools
def test_serve_without_the_extra_is_one_line_naming_the_install(
    bm25_index: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from searchkit.cli.main import main

    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)
    with pytest.raises(SystemExit) as stop:
        main(["serve", str(bm25_index)])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "uvicorn" in err and "pip install 'searchkit[serve]'" in err


def test_serve_help_shows_the_served_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from searchkit.cli.main import main

    with contextlib.suppress(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for option in ("--host", "127.0.0.1", "--port", "8000", "--workers", "--token", "--rerank", "--mode"):
        assert option in out


@pytest.mark.parametrize(
    "settings", [{"port": 70000}, {"workers": 0}, {"max_k": 0}, {"batch_wait_ms": -1}, {"threads": 0}]
)
def test_serve_config_refuses_bad_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ServeConfig(**settings)


def test_engine_refuses_an_unknown_default_mode(bm25_index: Path) -> None:
    with pytest.raises(ConfigError, match="unknown mode 'fuzzy'"):
        SearchEngine(EngineSpec(str(bm25_index), mode="fuzzy"))


def test_bare_loop_and_results(bm25_index: Path) -> None:
    searcher = Searcher(Index.open(bm25_index))
    result = bare_loop(searcher, ["cats", "solar"], k=3, fields=["title"], duration=10.0, max_requests=20)
    summary = result.summary()
    assert summary["answered"] == 20 and summary["errors"] == 0 and summary["p99_ms"] >= summary["p50_ms"]
    empty = LoadResult([], {503: 2}, 1, 3, 1.0).summary()
    assert empty["errors"] == 2 and empty["dropped"] == 1 and empty["throughput_per_s"] == 0.0


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "fastapi"])
def test_metadata_filters_are_applied_as_the_searcher_applies_them(filtered_index: Index, lean: bool) -> None:
    searcher = Searcher(filtered_index, mode="hybrid")
    query, conditions = "synthetic document text", ["year>=2015", "lang in en,de"]
    expected = searcher.search(query, k=5, filter=conditions)
    unfiltered = searcher.search(query, k=5)
    assert expected != unfiltered  # the filter changes the answer, so the comparison below can fail
    with TestClient(create_app(EngineSpec(str(filtered_index.path), mode="hybrid"), lean=lean)) as client:
        got = client.post("/search", json={"query": query, "k": 5, "filter": conditions})
        assert got.status_code == 200, got.text
        assert [(h["doc_id"], pytest.approx(h["score"])) for h in got.json()["hits"]] == [
            (h.doc_id, h.score) for h in expected
        ]
        batch = client.post("/search/batch", json={"queries": [query, query], "k": 5, "filter": conditions})
        assert [h["doc_id"] for h in batch.json()["results"][1]["hits"]] == [h.doc_id for h in expected]
        explained = client.post("/explain", json={"query": query, "k": 5, "filter": conditions})
        assert [h["doc_id"] for h in explained.json()["hits"]] == [h.doc_id for h in expected]
        plain = client.post("/search", json={"query": query, "k": 5})
        assert [h["doc_id"] for h in plain.json()["hits"]] == [h.doc_id for h in unfiltered]
        for bad, words in ((["colour=red"], "colour"), (["year>>2"], "filter"), ("year>1", "")):
            answer = client.post("/search", json={"query": query, "filter": bad})
            assert answer.status_code in (400, 422) and "\n" not in answer.json()["detail"], answer.text
            assert words in str(answer.json()["detail"])


# ---------------------------------------------------------------------- Chinese (issue 22 item 6)
def test_chinese_queries_results_explanations_and_filters(zh_serve_index: Index, tmp_path: Path) -> None:
    from searchkit.formats import FeedbackLog
    from searchkit.serve.settings import FeedbackSettings

    searcher = Searcher(zh_serve_index)
    query = "治疗 咳嗽 电脑"  # simplified 电脑 finds the Traditional 電腦 of z5
    settings = FeedbackSettings(str(tmp_path / "feedback.sqlite"))
    with TestClient(create_app(EngineSpec(str(zh_serve_index.path)), feedback=settings)) as client:
        answer = client.post("/search", json={"query": query, "k": 5, "fields": ["title", "text"]})
        assert answer.status_code == 200 and "電腦軟體".encode() in answer.content  # UTF-8, not \\u escapes
        body = answer.json()
        assert body["query"] == query and body["mode"] == "hybrid"
        assert as_hits(body["hits"]) == searcher.search(query, 5)
        assert [hit["doc_id"] for hit in body["hits"]] == ["z5", "z1", "z2"]
        assert body["hits"][0]["title"] == "電腦軟體" and body["hits"][1]["text"] == "儿童白血病的治疗方法和护理建议"
        explained = client.post("/explain", json={"query": query, "k": 3}).json()
        assert set(explained["hits"][0]["stages"]) == {"bm25", "bm25.cjk-bigram", "hybrid"}
        for row, hit in zip(explained["hits"], searcher.explain(query, 3), strict=True):
            assert row["doc_id"] == hit.doc_id
            assert {name: (s["rank"], s["score"]) for name, s in row["stages"].items()} == {
                name: (s.rank, s.score) for name, s in hit.stages.items()
            }
        for conditions, expected in [
            (["category=数码"], ["z5"]),
            (["category=医疗"], ["z1", "z2"]),
            (["category in 医疗,能源"], ["z1", "z2"]),
            (["category!=数码"], ["z1", "z2"]),
            (["category=体育"], []),
        ]:
            filtered = client.post("/search", json={"query": query, "k": 5, "filter": conditions}).json()
            assert [hit["doc_id"] for hit in filtered["hits"]] == expected, conditions
            assert as_hits(filtered["hits"]) == searcher.search(query, 5, filter=conditions)
        batch = client.post("/search/batch", json={"queries": ["儿童癌症", "建设银行 营业时间"], "k": 1}).json()
        assert [result["hits"][0]["doc_id"] for result in batch["results"]] == ["z1", "z6"]
        assert [result["query"] for result in batch["results"]] == ["儿童癌症", "建设银行 营业时间"]
        bad = client.post("/search", json={"query": query, "filter": ["类别=医疗"]})
        assert bad.status_code == 400 and "\n" not in bad.json()["detail"]
    with FeedbackLog(settings.log, readonly=True) as log:
        logged = list(log.impressions())
    assert logged[0].query == query and logged[0].doc_ids == ("z5", "z1", "z2")
