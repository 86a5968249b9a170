"""Hostile values: ids that would corrupt whitespace- or line-separated files are refused where they are read
(file:line), every other id is kept verbatim through the doc store, TREC runs and qrels; nothing unpickles,
evals or runs remote code."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

import searchkit
from searchkit.formats import read_corpus, read_qrels, read_queries, read_run, write_run
from searchkit.index import Index
from searchkit.types import DataError, Document, Hit

REFUSED = {
    "tab": "a\tb",
    "newline": "a\nb",
    "carriage return": "a\rb",
    "space": "a b",
    "line separator": "a\u2028b",
    "vertical tab": "a\x0bb",
    "next line": "a\x85b",
    "no-break space": "a\u00a0b",
    "NUL": "a\x00b",
    "escape": "a\x1bb",
}
KEPT = {
    "parent path": "../../etc/passwd",
    "slashes": "a/b\\c",
    "10 KB": "x" * 10_240,
    "non-ASCII": "café-文档-🙂",
    "quotes": '"quoted"',
    "JSON": '{"_id":1}',
    "leading zeros": "007",
}


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", list(REFUSED))
def test_ids_that_would_corrupt_files_are_refused_with_file_and_line(kind: str, tmp_path: Path) -> None:
    bad = REFUSED[kind]
    corpus = _jsonl(tmp_path / "corpus.jsonl", [{"_id": "ok", "text": "fine"}, {"_id": bad, "text": "hostile"}])
    with pytest.raises(DataError, match=re.escape(f"{corpus}:2: ")) as caught:
        Index.build(corpus, tmp_path / "idx")
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]  # nothing half-built left
    queries = _jsonl(tmp_path / "queries.jsonl", [{"_id": bad, "text": "hostile"}])
    with pytest.raises(DataError, match=re.escape(f"{queries}:1: ")):
        read_queries(queries)
    with pytest.raises(DataError, match="row 1"):  # documents given as objects are checked the same way
        Index.build([Document(bad, "hostile")], tmp_path / "from-objects")


def test_other_ids_are_kept_verbatim_everywhere(tmp_path: Path) -> None:
    ids = list(KEPT.values())
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]
    rows = [
        {"_id": doc_id, "title": f"T{word}", "text": f"{word} text"} for doc_id, word in zip(ids, words, strict=True)
    ]
    corpus = _jsonl(tmp_path / "corpus.jsonl", rows)
    assert [doc.doc_id for doc in read_corpus(corpus)] == ids
    index = Index.build(corpus, tmp_path / "idx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "idx"]  # no id became a path
    reopened = Index.open(index.path, verify=True)
    assert reopened.docids == ids and reopened.num_docs == len(ids)
    assert reopened.bm25 is not None
    for doc_id, word in zip(ids, words, strict=True):
        assert reopened.document(doc_id).text == f"{word} text"
        assert [hit.doc_id for hit in reopened.bm25.search(word, 3)] == [doc_id]
    assert [doc.doc_id for doc in reopened.iter_documents()] == ids

    run = {query_id: [Hit(doc_id, 2.0), Hit(ids[0], 1.0)] for query_id, doc_id in itertools.pairwise(ids)}
    write_run(run, tmp_path / "run.trec")
    assert read_run(tmp_path / "run.trec") == run
    qrels_lines = [f"{query_id}\t0\t{doc_id}\t1" for query_id, doc_id in itertools.pairwise(ids)]
    (tmp_path / "qrels.txt").write_text("\n".join(qrels_lines) + "\n", encoding="utf-8")
    assert read_qrels(tmp_path / "qrels.txt") == {q: {d: 1} for q, d in itertools.pairwise(ids)}
    queries = _jsonl(tmp_path / "queries.jsonl", [{"_id": query_id, "text": "q"} for query_id in ids])
    assert [query.query_id for query in read_queries(queries)] == ids


def test_writing_a_run_refuses_ids_that_would_shift_columns(tmp_path: Path) -> None:
    for bad in ("a b", "a\tb", "a\u2028b", ""):
        with pytest.raises(DataError, match="TREC run cannot hold"):
            write_run({"q1": [Hit(bad, 1.0)]}, tmp_path / "run.trec")
    assert not (tmp_path / "run.trec").exists()


FORBIDDEN = {
    "pickle": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b|\bpickle\.loads?\(|allow_pickle\s*=\s*True"),
    "eval": re.compile(r"(?<![\w.])eval\("),
    "exec": re.compile(r"(?<![\w.])exec\("),
    "trust_remote_code": re.compile(r"trust_remote_code\s*=\s*True"),
    "torch.load": re.compile(r"\btorch\.load\("),
}


def test_the_package_never_unpickles_evals_or_trusts_remote_code() -> None:
    package = Path(searchkit.__file__).parent
    sources = sorted(package.rglob("*.py"))
    assert len(sources) > 10
    found = [
        f"{path.relative_to(package)}:{number}: {name}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        for name, pattern in FORBIDDEN.items()
        if pattern.search(line)
    ]
    assert found == []
    # the patterns do catch what they are for
    assert FORBIDDEN["eval"].search("x = eval(text)") and not FORBIDDEN["eval"].search("model.eval()")
    assert FORBIDDEN["pickle"].search("import pickle") and not FORBIDDEN["pickle"].search("allow_pickle=False")
