"""Feedback capture in `searchkit serve` (searchkit.serve.feedback): impressions with request ids, POST /feedback and
its refusals, exploration swaps, hashed queries, retention, the log's folder, metrics per model version, reloading
a model through its dev guard, and acknowledged events surviving kill -9 of the server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from loadgen import start_server

from searchkit.config import RerankConfig
from searchkit.formats import FeedbackLog, Impression
from searchkit.index import Index
from searchkit.models.cards import write_reranker_card
from searchkit.search import Searcher
from searchkit.serve.app import create_app
from searchkit.serve.engine import EngineSpec
from searchkit.serve.feedback import check_log_path
from searchkit.serve.settings import FeedbackSettings
from searchkit.types import ConfigError

TINY = Path(__file__).parent / "data" / "tiny"
QUERY = "cat dog mouse solar"  # 5 hits in the tiny index
TOKEN = "feedback-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(TINY, tmp_path_factory.mktemp("fb") / "index")


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "feedback.sqlite"


def _client(index: Index, settings: FeedbackSettings | None, **kwargs: Any) -> TestClient:
    if settings is not None:
        Path(settings.log).parent.mkdir(parents=True, exist_ok=True)
    return TestClient(create_app(EngineSpec(str(index.path)), feedback=settings, **kwargs))


def _detail(response: Any) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in response.text
    return str(detail)


def _metric(text: str, name: str, model: str = "none") -> float:
    prefix = f'{name}{{model="{model}"}} '
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return float(line[len(prefix) :])


def test_impressions_and_clicks_are_logged(index: Index, log_path: Path) -> None:
    with _client(index, FeedbackSettings(str(log_path))) as client:
        answers = [client.post("/search", json={"query": QUERY, "k": 3}).json() for _ in range(4)]
        ids = [answer["request_id"] for answer in answers]
        assert len(set(ids)) == 4 and all(len(i) == 32 for i in ids)
        first = answers[0]["hits"]
        clicked = client.post("/feedback", json={"request_id": ids[0], "doc_id": first[1]["doc_id"], "rank": 2})
        assert clicked.status_code == 200 and clicked.json() == {
            "recorded": True,
            "request_id": ids[0],
            "kind": "click",
        }
        again = {"request_id": ids[0], "doc_id": first[0]["doc_id"], "rank": 1, "type": "click"}
        assert client.post("/feedback", json=again).status_code == 200
        graded = {"request_id": ids[1], "doc_id": first[0]["doc_id"], "rank": 1, "type": "judgment", "value": 2}
        assert client.post("/feedback", json=graded).status_code == 200
        dwell = {"request_id": ids[1], "doc_id": first[0]["doc_id"], "rank": 1, "type": "dwell", "value": 12.5}
        assert client.post("/feedback", json=dwell).status_code == 200
        metrics = client.get("/metrics").text
        # 4 impressions of model "none"; 2 clicks, on 1 impression, whose first click was at rank 2
        assert _metric(metrics, "searchkit_feedback_impressions_total") == 4
        assert _metric(metrics, "searchkit_feedback_clicks_total") == 2
        assert _metric(metrics, "searchkit_click_through_rate") == pytest.approx(2 / 4)
        assert _metric(metrics, "searchkit_click_reciprocal_rank") == pytest.approx((1 / 2) / 4)
        assert _metric(metrics, "searchkit_abandonment_rate") == pytest.approx(3 / 4)
        fingerprint = client.get("/health").json()["index"]["fingerprint"]
    expected = [hit.doc_id for hit in Searcher(index).search(QUERY, 3)]
    with FeedbackLog(log_path, readonly=True) as log:
        impressions = list(log.impressions())
        assert {i.request_id for i in impressions} == set(ids)
        assert all(
            i == Impression(i.request_id, i.time, QUERY, "bm25", tuple(expected), 1, fingerprint, "", None)
            for i in impressions
        )
        events = [(f.request_id, f.doc_id, f.rank, f.kind, f.value) for f in log.feedback()]
    assert events == [
        (ids[0], expected[1], 2, "click", None),
        (ids[0], expected[0], 1, "click", None),
        (ids[1], expected[0], 1, "judgment", 2.0),
        (ids[1], expected[0], 1, "dwell", 12.5),
    ]


def test_bad_feedback_is_a_4xx_with_one_line(index: Index, log_path: Path) -> None:
    settings = FeedbackSettings(str(log_path))
    for lean in (True, False):
        with _client(index, settings, lean=lean) as client:
            answer = client.post("/search", json={"query": QUERY, "k": 3}).json()
            good = {"request_id": answer["request_id"], "doc_id": answer["hits"][0]["doc_id"], "rank": 1}
            unknown = client.post("/feedback", json={**good, "request_id": "f" * 32})
            assert unknown.status_code == 404 and "unknown request_id" in _detail(unknown)
            moved = client.post("/feedback", json={**good, "rank": 2})
            assert moved.status_code == 400 and "was not shown at rank 2" in _detail(moved)
            for bad, field in [
                ({**good, "rank": 0}, "rank"),
                ({**good, "rank": "1"}, "rank"),
                ({**good, "type": "like"}, "type"),
                ({**good, "value": 1.0}, "a click has no value"),
                ({**good, "type": "judgment"}, "needs a value"),
                ({**good, "type": "dwell", "value": -3}, "needs a value >= 0"),
                ({**good, "ip": "10.0.0.1"}, "ip"),
                ({"doc_id": "d1", "rank": 1}, "request_id"),
            ]:
                refused = client.post("/feedback", json=bad)
                assert refused.status_code == 422 and field in _detail(refused), (bad, refused.text)
            broken = client.post("/feedback", content=b"{not json", headers={"content-type": "application/json"})
            assert broken.status_code == 400 and "not valid JSON" in _detail(broken)
            huge = client.post("/feedback", json={**good, "doc_id": "x" * 300_000})
            assert huge.status_code == 413 and "request body over" in _detail(huge)
    with FeedbackLog(log_path, readonly=True) as log:
        assert list(log.feedback()) == []
    with _client(index, None) as client:
        off = client.post("/feedback", json=good)
        assert off.status_code == 404 and "--feedback-log" in _detail(off)
        assert "request_id" not in client.post("/search", json={"query": QUERY}).json()  # nothing logged


def test_nothing_identifying_a_person_is_stored_and_queries_can_be_hashed(
    index: Index, log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEARCHKIT_FEEDBACK_SALT", raising=False)
    headers = {"User-Agent": "Mozilla/5.0 (persona-agent-7731)", "X-Forwarded-For": "203.0.113.77", "Cookie": "sid=77"}
    with _client(index, FeedbackSettings(str(log_path), hash_queries=True)) as client:
        answer = client.post("/search", json={"query": QUERY, "k": 2}, headers=headers).json()
        event = {"request_id": answer["request_id"], "doc_id": answer["hits"][0]["doc_id"], "rank": 1}
        assert client.post("/feedback", json=event, headers=headers).status_code == 200
    salt = log_path.with_name(log_path.name + ".salt")
    assert salt.stat().st_mode & 0o077 == 0  # the owner's only
    from searchkit.formats import hash_query

    with FeedbackLog(log_path, readonly=True) as log:
        (impression,) = log.impressions()
    assert impression.query_hashed and impression.query == hash_query(QUERY, salt.read_text().strip())
    raw = sqlite3.connect(log_path)
    dump = "\n".join(raw.iterdump())
    for secret in ("persona-agent", "203.0.113", "sid=77", "testclient", QUERY):
        assert secret not in dump
    columns = {row[1] for table in ("impressions", "feedback") for row in raw.execute(f"PRAGMA table_info({table})")}
    assert not columns & {"ip", "address", "host", "headers", "user_agent", "cookie", "user"}


def test_explore_swaps_one_adjacent_pair_and_records_it(index: Index, log_path: Path) -> None:
    expected = [hit.doc_id for hit in Searcher(index).search(QUERY, 5)]
    with _client(index, FeedbackSettings(str(log_path), explore=1.0, seed=3)) as client:
        answers = [client.post("/search", json={"query": QUERY, "k": 5}).json() for _ in range(30)]
    with FeedbackLog(log_path, readonly=True) as log:
        logged = {i.request_id: i for i in log.impressions()}
    seen = set()
    for answer in answers:
        shown = [hit["doc_id"] for hit in answer["hits"]]
        assert [hit["rank"] for hit in answer["hits"]] == [1, 2, 3, 4, 5]
        swapped = logged[answer["request_id"]].swapped
        assert swapped is not None and 1 <= swapped <= 4
        upper = swapped - 1
        assert shown[upper] == expected[upper + 1] and shown[upper + 1] == expected[upper]
        assert shown[:upper] + shown[upper + 2 :] == expected[:upper] + expected[upper + 2 :]
        assert logged[answer["request_id"]].doc_ids == tuple(shown)  # the log holds the order shown
        seen.add(swapped)
    assert seen == {1, 2, 3, 4}  # every adjacent pair gets explored
    with _client(index, FeedbackSettings(str(log_path), explore=0.0)) as client:
        plain = client.post("/search", json={"query": QUERY, "k": 5}).json()
        assert [hit["doc_id"] for hit in plain["hits"]] == expected
    with FeedbackLog(log_path, readonly=True) as log:
        assert log.impression(plain["request_id"]).swapped is None  # type: ignore[union-attr]


def test_retention_deletes_old_impressions_at_start(index: Index, log_path: Path) -> None:
    log_path.parent.mkdir(parents=True)
    with FeedbackLog(log_path) as log:
        log.append_impressions([Impression("old", 1000.0, "q", "bm25", ("d1",), 1, "fp", "", None)])
    with _client(index, FeedbackSettings(str(log_path), retention_days=30)) as client:
        kept = client.post("/search", json={"query": QUERY}).json()["request_id"]
        stale = client.post("/feedback", json={"request_id": "old", "doc_id": "d1", "rank": 1})
        assert stale.status_code == 404
    with FeedbackLog(log_path, readonly=True) as log:
        assert [i.request_id for i in log.impressions()] == [kept]


def test_the_log_cannot_be_written_outside_its_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside.sqlite"
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "feedback.sqlite").symlink_to(outside)
    with pytest.raises(ConfigError, match="is a symbolic link; the log stays in its folder"):
        check_log_path(folder / "feedback.sqlite")
    (folder / "b.sqlite-wal").symlink_to(outside)
    with pytest.raises(ConfigError, match=r"b\.sqlite-wal is a symbolic link"):
        check_log_path(folder / "b.sqlite")
    with pytest.raises(ConfigError, match="does not exist"):
        check_log_path(tmp_path / "missing" / "f.sqlite")
    with pytest.raises(ConfigError, match="is a folder"):
        check_log_path(folder)
    assert check_log_path(folder / "ok.sqlite") == folder.resolve() / "ok.sqlite"
    assert not outside.exists()


def test_the_cli_refuses_a_log_that_escapes_its_folder(index: Index, tmp_path: Path) -> None:
    import subprocess
    import sys

    link = tmp_path / "fb.sqlite"
    link.symlink_to(tmp_path / "elsewhere.sqlite")
    done = subprocess.run(
        [sys.executable, "-m", "searchkit", "serve", str(index.path), "--feedback-log", str(link), "--port", "0"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "symbolic link" in done.stderr
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database " * 100)
    done = subprocess.run(
        [sys.executable, "-m", "searchkit", "serve", str(index.path), "--feedback-log", str(junk), "--port", "0"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "not a readable feedback log" in done.stderr


# ---------------------------------------------------------------------- the model reload and its guard
def _reranker_with_guard(source: Path, target: Path, improved: bool) -> Path:
    shutil.copytree(source, target)
    guard = {"compared_with": "parent", "model": "p", "metric": "ndcg_cut_10", "score": "reranker",
             "start": 0.5, "shipped": 0.6 if improved else 0.4, "improved": improved}  # fmt: skip
    write_reranker_card(target, {"base_model": {"name": str(source)}, "guard": guard, "dev_metric": "ndcg_cut_10"})
    return target


def test_reload_loads_a_model_that_passed_its_guard_and_never_one_that_failed(
    index: Index, log_path: Path, tiny_cross_encoder: Path, tmp_path: Path
) -> None:
    rerank = RerankConfig(str(tiny_cross_encoder), device="cpu", dtype="fp32", max_length=48, depth=5)
    good = _reranker_with_guard(tiny_cross_encoder, tmp_path / "good", improved=True)
    bad = _reranker_with_guard(tiny_cross_encoder, tmp_path / "bad", improved=False)
    log_path.parent.mkdir(parents=True)
    app = create_app(EngineSpec(str(index.path), rerank=rerank), token=TOKEN, feedback=FeedbackSettings(str(log_path)))
    with TestClient(app) as client:
        engine = app.state.engine
        before = engine.model_version
        assert before and client.post("/search", json={"query": QUERY, "k": 3}, headers=AUTH).status_code == 200
        unauthenticated = client.post("/admin/reload", json={"model": str(good)})
        assert unauthenticated.status_code == 401
        refused = client.post("/admin/reload", json={"model": str(bad)}, headers=AUTH)
        assert refused.status_code == 409 and "failed its dev guard" in _detail(refused)
        assert engine.reranker.name == str(tiny_cross_encoder) and engine.model_version == before
        no_card = client.post("/admin/reload", json={"model": str(tiny_cross_encoder)}, headers=AUTH)
        assert no_card.status_code == 409 and "no searchkit.json card" in _detail(no_card)
        missing = client.post("/admin/reload", json={"model": str(tmp_path / "nope")}, headers=AUTH)
        assert missing.status_code == 409
        loaded = client.post("/admin/reload", json={"model": str(good)}, headers=AUTH)
        assert loaded.status_code == 200, loaded.text
        after = loaded.json()["model_version"]
        assert after == engine.model_version != before and engine.reranker.name == str(good)
        answer = client.post("/search", json={"query": QUERY, "k": 3}, headers=AUTH).json()
        event = {"request_id": answer["request_id"], "doc_id": answer["hits"][0]["doc_id"], "rank": 1}
        assert client.post("/feedback", json=event, headers=AUTH).status_code == 200
        metrics = client.get("/metrics", headers=AUTH).text
        assert f'searchkit_model_version_info{{model="{after}",name="{good}"}} 1.0' in metrics
        assert _metric(metrics, "searchkit_click_through_rate", after) == 1.0
        assert _metric(metrics, "searchkit_click_through_rate", before) == 0.0
        assert 'searchkit_reloads_total{result="failed"} 3.0' in metrics
    with FeedbackLog(log_path, readonly=True) as log:
        assert [i.model for i in log.impressions()] == [before, after]


# ---------------------------------------------------------------------- kill -9
def _post(url: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def test_acknowledged_feedback_survives_kill_9_of_the_server(index: Index, tmp_path: Path) -> None:
    log = tmp_path / "feedback.sqlite"
    server = start_server(index.path, ["--feedback-log", str(log)], timeout=120)
    acknowledged: list[tuple[str, str, int]] = []
    try:
        for i in range(20):
            status, answer = _post(server.url, "/search", {"query": QUERY, "k": 3})
            assert status == 200
            hit = answer["hits"][i % 3]
            status, _ = _post(server.url, "/feedback", {"request_id": answer["request_id"], "doc_id": hit["doc_id"],
                                                        "rank": hit["rank"]})  # fmt: skip
            assert status == 200
            acknowledged.append((answer["request_id"], hit["doc_id"], hit["rank"]))
        os.kill(server.process.pid, signal.SIGKILL)
        assert server.process.wait(30) == -signal.SIGKILL
    finally:
        server.stop()
    with FeedbackLog(log, readonly=True) as reader:
        assert [(f.request_id, f.doc_id, f.rank) for f in reader.feedback()] == acknowledged
        assert {i.request_id for i in reader.impressions()} >= {request_id for request_id, _, _ in acknowledged}


@pytest.fixture(autouse=True)
def _no_salt_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SEARCHKIT_FEEDBACK_SALT", raising=False)
    yield
