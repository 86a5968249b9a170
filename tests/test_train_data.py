"""Training data: hard-negative mining (by hand and property-tested) and labelled pair files (TSV and JSONL, bad
lines named by file:line). End-to-end assembly (qrels mining, dev split, cache) runs in test_train.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchkit.config import TrainConfig
from searchkit.training.data import check_parent_split, dev_split_record, mine_negatives, read_pairs, split_dev
from searchkit.types import ConfigError, DataError, Hit, Query

PAIRS = Path(__file__).parent / "data" / "rerank"
TINY = Path(__file__).parent / "data" / "tiny"


# ---------------------------------------------------------------------- mining
def test_mining_skips_judged_documents_and_respects_the_window() -> None:
    ranking = [Hit(doc, 10.0 - i) for i, doc in enumerate(["p1", "a", "b", "p2", "c", "d", "e"])]
    judged = {"p1", "p2", "n0"}  # every judged document is excluded, even a judged non-relevant one
    assert mine_negatives(ranking, judged, depth=50) == ["a", "b", "c", "d", "e"]
    assert mine_negatives(ranking, judged, depth=5, skip_top=2) == ["b", "c"]  # ranks 3..5
    assert mine_negatives(ranking, judged, depth=50, skip_top=1, count=2) == ["a", "b"]
    assert mine_negatives([], judged, depth=5) == []


@given(
    docs=st.lists(st.sampled_from([f"d{i}" for i in range(30)]), unique=True, max_size=30),
    judged=st.sets(st.sampled_from([f"d{i}" for i in range(30)])),
    skip=st.integers(0, 10),
    depth=st.integers(1, 35),
    count=st.one_of(st.none(), st.integers(1, 10)),
)
def test_mining_properties(docs: list[str], judged: set[str], skip: int, depth: int, count: int | None) -> None:
    ranking = [Hit(doc, float(-i)) for i, doc in enumerate(docs)]
    mined = mine_negatives(ranking, judged, depth=depth, skip_top=skip, count=count)
    window = docs[skip:depth]
    assert not set(mined) & judged
    assert mined == [doc for doc in window if doc not in judged][: count if count is not None else None]


# ---------------------------------------------------------------------- pair files
def test_read_pairs_tsv_and_jsonl() -> None:
    tsv = read_pairs(PAIRS / "pairs.tsv")
    assert [(p.query, p.doc, p.label, p.weight, p.line) for p in tsv[:3]] == [
        ("cats chasing mice", "d1", 2, 2.0, 2),
        ("cats chasing mice", "d5", 1, None, 3),  # an empty weight column: no weight
        ("cats chasing mice", "d4", 0, 0.5, 4),
    ]
    assert all(p.doc_is_id for p in tsv)
    as_text = read_pairs(PAIRS / "pairs.tsv", doc="text")
    assert not any(p.doc_is_id for p in as_text)
    jsonl = read_pairs(PAIRS / "pairs.jsonl")
    assert [(p.doc_is_id, p.label, p.weight, p.line) for p in jsonl] == [
        (True, 1, 3.0, 1),
        (False, 0, None, 2),
        (True, 0, 0.5, 3),
        (True, 1, None, 5),  # line numbers count the blank line
        (False, 0, None, 6),
    ]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("q\td1\t1\nq\td2\n", 2, "expected 3 or 4 tab-separated columns"),
        ("q\td1\tyes\n", 1, "label must be an integer"),
        ("q\td1\t-1\n", 1, "label must be an integer grade >= 0"),
        ("q\td1\t1\tNaN\n", 1, "weight must be a finite number"),
        ("q\td1\t1\t-2\n", 1, "weight must be a finite number"),
        ("q\t \t1\n", 1, "empty query or doc"),
        ('{"query": "q", "doc_id": "d1", "label": 1}\n{"query": "q", "doc_id": \n', 2, "invalid JSON"),
        ('{"query": "q", "doc_id": "d1", "text": "t", "label": 1}\n', 1, "exactly one of"),
        ('{"doc_id": "d1", "label": 1}\n', 1, "expected an object with 'query'"),
    ],
)
def test_bad_pair_lines_name_file_and_line(tmp_path: Path, content: str, line: int, message: str) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as caught:
        read_pairs(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")


# ---------------------------------------------------------------------- assembling the data
def test_load_training_data_splits_writes_and_caches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging

    from searchkit.config import TrainConfig
    from searchkit.formats import read_qrels
    from searchkit.training.data import load_training_data

    cfg = TrainConfig(
        output=str(tmp_path / "out"),
        corpus=str(TINY),
        split="test",
        index=str(tmp_path / "index"),  # missing: a BM25 index is built from the corpus
        mine_depth=6,
        random_negatives=2,
        dev_queries=1,
        dev_depth=6,
        seed=7,
    )
    out = Path(cfg.output)
    data = load_training_data(cfg, out, show_progress=False)
    assert (tmp_path / "index" / "manifest.json").is_file()
    dev_ids = [query.query_id for query in data.dev.queries]
    train_ids = [query.query_id for query in data.train]
    assert len(dev_ids) == 1 and not set(dev_ids) & set(train_ids)
    assert set(dev_ids) | set(train_ids) <= {"q1", "q2", "q3", "q4"}  # q5 is unjudged
    qrels = read_qrels(TINY, "test")
    for query in data.train:
        assert {doc for doc, _, _ in query.positives} == {d for d, g in qrels[query.query_id].items() if g > 0}
        assert not {doc for doc, _ in query.negatives} & set(qrels[query.query_id])
    assert data.dev.has_first_stage and data.dev.qrels == {q: qrels[q] for q in dev_ids}
    assert all(hit.doc_id in data.texts for hits in data.dev.candidates for hit in hits)
    written = (out / "data" / "train_pairs.jsonl").read_bytes()
    assert data.sha256 == hashlib.sha256(written).hexdigest()
    assert (out / "data" / "dev_queries.txt").read_text().split() == dev_ids
    assert json.loads((out / "cache" / "mine.json").read_text())["k"] == 6
    # a second call reads the first stage from the cache and gives the same data
    with caplog.at_level(logging.INFO, logger="searchkit.training.data"):
        again = load_training_data(cfg, out, show_progress=False)
    assert sum("read from" in record.getMessage() for record in caplog.records) == 2  # mine and dev
    assert again.sha256 == data.sha256 and [q.query_id for q in again.dev.queries] == dev_ids


def _split(seed: int, queries: list[Query], **changes: object) -> dict[str, object]:
    cfg = TrainConfig("out", corpus="beir", index="idx", dev_queries=3, seed=seed, **changes)  # type: ignore[arg-type]
    return dev_split_record(queries, split_dev(queries, 3, seed)[1], cfg)


def test_continual_fine_tuning_must_hold_out_the_parents_dev_queries(caplog: pytest.LogCaptureFixture) -> None:
    queries = [Query(f"q{i}", "text") for i in range(20)]
    parent = {"dev_split": _split(42, queries)}
    check_parent_split(_split(42, queries), parent, "parent")  # the same split: fine
    other = _split(43, queries)
    assert other["dev"] != parent["dev_split"]["dev"]  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"were training queries of the parent.*seed = 42"):
        check_parent_split(other, parent, "parent")
    # new judgments (other queries): the overlap cannot be known, so it warns
    newer = [*queries, Query("q20", "text")]
    with caplog.at_level("WARNING", logger="searchkit.training.data"):
        check_parent_split(_split(43, newer), parent, "parent")
    assert "trained on other judgments" in caplog.text


def test_cards_without_a_recorded_split_are_checked_by_their_settings() -> None:
    queries = [Query(f"q{i}", "text") for i in range(20)]
    ours = _split(43, queries)
    settings = {"seed": 42, "dev_queries": 3, "limit_queries": None, **ours["data"]}  # type: ignore[dict-item]
    legacy = {"training_config": settings}
    with pytest.raises(ConfigError, match=r"other settings.*seed = 42"):
        check_parent_split(ours, legacy, "parent")
    check_parent_split(_split(42, queries), legacy, "parent")
    elsewhere = {"training_config": {**settings, "corpus": "other-beir"}}
    check_parent_split(ours, elsewhere, "parent")  # other judgments: nothing to compare
