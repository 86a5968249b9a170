"""Tests for searchkit.formats: every reader and writer, on tiny files, with every error case."""

from __future__ import annotations

import doctest
import gzip
import hashlib
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from searchkit import formats
from searchkit.formats import (
    corpus_path,
    document_text,
    is_irds,
    iter_lines,
    read_corpus,
    read_qrels,
    read_queries,
    read_run,
    source_sha256,
    write_run,
)
from searchkit.types import ConfigError, DataError, Document, Hit, Query, sort_hits

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny"
DATA = REPO / "tests" / "data" / "formats"
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def error_of(call: Any, *args: Any, **kwargs: Any) -> DataError:
    """The DataError raised by call(*args), consuming it fully when it returns an iterator."""
    with pytest.raises(DataError) as caught:
        result = call(*args, **kwargs)
        if isinstance(result, Iterator):
            list(result)
    return caught.value


def assert_where(err: DataError, path: Path, line: int | None) -> None:
    """The message starts with the file name and, when given, the 1-based line."""
    assert path.name in str(err)
    if line is not None:
        assert str(err).startswith(f"{path}:{line}: "), str(err)
        assert err.line == line


# --- the shared tiny fixture (BEIR, CRLF) ---------------------------------------------------------------


def test_tiny_corpus() -> None:
    docs = list(read_corpus(TINY))
    assert [d.doc_id for d in docs] == ["d1", "d2", "d3", "d4", "d5", "d6", "007", "d8"]
    assert all(isinstance(d, Document) and isinstance(d.doc_id, str) for d in docs)
    by_id = {d.doc_id: d for d in docs}
    assert by_id["d1"] == Document("d1", "Cats chase mice. Dogs chase cats around the garden.", "Cats and dogs")
    assert by_id["d2"].title == ""
    assert by_id["d6"].text == ""
    assert by_id["007"].title == "Leading zeros"
    assert not any(d.text.endswith("\r") or d.title.endswith("\r") for d in docs)


def test_tiny_queries_and_qrels() -> None:
    queries = read_queries(TINY)
    assert queries[0] == Query("q1", "cats chasing mice")
    assert [q.query_id for q in queries] == ["q1", "q2", "q3", "q4", "q5"]
    assert queries[2].text == "the of and"
    qrels = read_qrels(TINY, "test")
    assert qrels == {
        "q1": {"d1": 2, "d5": 1},
        "q2": {"d3": 1, "d8": 1},
        "q4": {"007": 1},
        "q3": {"d2": 1},
    }
    assert "q5" not in qrels
    assert [q.query_id for q in read_queries(TINY, split="test")] == ["q1", "q2", "q3", "q4"]
    assert read_qrels(TINY / "qrels" / "test.tsv") == qrels


def test_read_corpus_streams_and_checks_source_at_once(tmp_path: Path) -> None:
    docs = read_corpus(TINY)
    assert iter(docs) is docs and not isinstance(docs, list)
    assert next(docs).doc_id == "d1"
    with pytest.raises(DataError, match="no such file or directory"):
        read_corpus(tmp_path / "missing.jsonl")  # no iteration needed


def test_paths_hashes_and_document_text(tmp_path: Path) -> None:
    assert corpus_path(TINY) == TINY / "corpus.jsonl"
    assert corpus_path(str(DATA / "run.trec")) == DATA / "run.trec"
    assert corpus_path("irds:beir/scifact/test") is None
    assert is_irds("irds:cranfield") and not is_irds(TINY) and not is_irds("tests/data/tiny")
    expected = hashlib.sha256((TINY / "corpus.jsonl").read_bytes()).hexdigest()
    assert source_sha256(TINY) == source_sha256(TINY / "corpus.jsonl") == expected
    assert source_sha256("irds:cranfield") is None
    assert document_text(Document("d", "body", "Title")) == "Title body"
    assert document_text(Document("d", "body")) == "body"
    assert document_text(Document("d", "", "Only title")) == "Only title"
    assert document_text(Document("d", "")) == ""


def test_iter_lines_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "lines.txt", "\ufeffa\r\n\r\n  \nb\n\n")
    assert list(iter_lines(path)) == [(1, "a"), (4, "b")]


def test_docstring_examples_run() -> None:
    import os

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        result = doctest.testmod(formats)
    finally:
        os.chdir(cwd)
    assert result.attempted > 0 and result.failed == 0


# --- encodings, line ends, gzip -----------------------------------------------------------------------


def test_bom_crlf_and_trailing_blank_lines() -> None:
    docs = list(read_corpus(DATA / "bom_crlf.jsonl"))
    assert docs == [
        Document("b1", "First line starts with a byte order mark.", "BOM"),
        Document("b2", "No title.", ""),
    ]


def test_trailing_blank_lines_in_qrels_and_queries(tmp_path: Path) -> None:
    qrels = write(tmp_path / "q.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n\n\n")
    assert read_qrels(qrels) == {"q1": {"d1": 1}}
    queries = write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "x"}\n\n')
    assert read_queries(queries) == [Query("q1", "x")]


def test_gzip_corpus(tmp_path: Path) -> None:
    raw = (TINY / "corpus.jsonl").read_bytes()
    gz = write(tmp_path / "corpus.jsonl.gz", gzip.compress(raw))
    assert list(read_corpus(gz)) == list(read_corpus(TINY))
    odd_name = write(tmp_path / "corpus.data", gzip.compress(raw))  # sniffed: gzip, then JSON
    assert len(list(read_corpus(odd_name))) == 8
    beir = tmp_path / "beir"
    beir.mkdir()
    write(beir / "corpus.jsonl.gz", gzip.compress(raw))
    assert corpus_path(beir) == beir / "corpus.jsonl.gz"
    assert len(list(read_corpus(beir))) == 8


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = write(tmp_path / "corpus.jsonl.gz", gzip.compress(b'{"_id": "a", "text": "b"}\n' * 50)[:30])
    err = error_of(read_corpus, path)
    assert_where(err, path, None)
    assert "gzip" in str(err)


# --- TSV, TREC and configurable fields ----------------------------------------------------------------


def test_tsv_corpus_variants(tmp_path: Path) -> None:
    by_name = list(read_corpus(DATA / "corpus_header.tsv", id_field="docid", title_field="headline", text_field="body"))
    assert by_name == [
        Document("A1", "First body text.", "First title"),
        Document("A2", "Second body, no title."),
    ]
    assert list(read_corpus(DATA / "corpus_header.tsv")) == by_name  # "docid" header skipped, by position
    assert list(read_corpus(DATA / "corpus_two_columns.tsv")) == [
        Document("A1", "Plain text one."),
        Document("A2", "Plain text two."),
    ]
    bad = write(tmp_path / "bad.tsv", "a\tb\nc\td\te\tf\n")
    err = error_of(read_corpus, bad)
    assert_where(err, bad, 2)
    assert "found 4" in str(err)


def test_tsv_queries() -> None:
    assert read_queries(DATA / "queries.tsv") == [Query("Q1", "first query"), Query("Q2", "second query")]


def test_trec_qrels() -> None:
    assert read_qrels(DATA / "qrels.trec") == {"Q1": {"A1": 2, "A2": 0}, "Q2": {"A2": 1}}


def test_configurable_fields_and_id_types() -> None:
    docs = list(read_corpus(DATA / "fields.jsonl", id_field="docno", title_field="headline", text_field="body"))
    assert docs == [
        Document("7", "Number seven as an integer id.", "Seven"),
        Document("007", "A string id with leading zeros.", ""),
        Document("8", "", ""),
    ]
    no_title = list(read_corpus(DATA / "fields.jsonl", id_field="docno", title_field=None, text_field="body"))
    assert [d.title for d in no_title] == ["", "", ""]


@pytest.mark.parametrize("value", ["null", "7.5", '""', "true", "[1]"])
def test_bad_id_values(tmp_path: Path, value: str) -> None:
    path = write(tmp_path / "c.jsonl", f'{{"_id": "ok", "text": "x"}}\n{{"_id": {value}, "text": "y"}}\n')
    err = error_of(read_corpus, path)
    assert_where(err, path, 2)
    assert "'_id'" in str(err)


# --- runs ---------------------------------------------------------------------------------------------


def test_read_run_orders_by_sort_hits() -> None:
    run = read_run(DATA / "run.trec")
    assert run == {"Q1": [Hit("A2", 3.5), Hit("A1", 1.25)], "Q2": [Hit("A1", -0.5)]}


def test_run_round_trip(tmp_path: Path) -> None:
    run = {
        "q1": sort_hits([Hit("d1", 0.1 + 0.2), Hit("d2", 1 / 3), Hit("d3", 1 / 3), Hit("d4", -1e-12)]),
        # float32 neighbours that print alike with 8 significant digits: scores are written exactly
        "007": [Hit("y", float(np.nextafter(np.float32(1000), np.float32(2000)))), Hit("x", 1000.0)],
        "q3": [Hit("d9", 1e300), Hit("d8", -5.0)],
    }
    path = tmp_path / "sub" / "run.trec"
    write_run(run, path, tag="mine")
    assert read_run(path) == run
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["q1", "Q0", "d3", "1", repr(1 / 3), "mine"]  # tie: larger doc_id first
    assert [p.name for p in path.parent.iterdir()] == ["run.trec"]  # no temp file left
    gz = tmp_path / "run.trec.gz"
    write_run(run, gz)
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    assert read_run(gz) == run


def test_write_run_sorts_and_accepts_numpy_scores(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    write_run({"q": [Hit("a", np.float32(0.5)), Hit("b", np.float64(2.0))]}, path)  # type: ignore[arg-type]
    assert path.read_text() == "q Q0 b 1 2.0 searchkit\nq Q0 a 2 0.5 searchkit\n"


def test_write_run_refuses_what_trec_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tag"):
        write_run({"q": [Hit("a", 1.0)]}, tmp_path / "r.trec", tag="two words")
    with pytest.raises(DataError, match="whitespace"):
        write_run({"q 1": [Hit("a", 1.0)]}, tmp_path / "r.trec")
    with pytest.raises(DataError, match="NaN"):
        write_run({"q": [Hit("a", float("nan"))]}, tmp_path / "r.trec")
    assert not list(tmp_path.iterdir())


ids = st.text(alphabet="abcdefghij0123456789_-.", min_size=1, max_size=6)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(ids, st.dictionaries(ids, st.floats(allow_nan=False), min_size=1), max_size=4))
def test_run_round_trip_property(tmp_path_factory: pytest.TempPathFactory, raw: dict) -> None:
    run = {q: sort_hits(Hit(d, s) for d, s in hits.items()) for q, hits in raw.items()}
    path = tmp_path_factory.mktemp("runs") / "run.trec"
    write_run(run, path)
    assert read_run(path) == run


# --- errors: each names the file and the 1-based line -------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', 2, "invalid JSON"),
        ('{"_id": "a", "text": "x"}\n\n["b", "y"]\n', 3, "expected a JSON object"),
        (
            '{"_id": "a", "text": "x"}\n{"id": "b", "title": "t", "text": "y"}\n',
            2,
            "missing document id field '_id'",
        ),
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "body": "y"}\n', 2, "missing text field 'text'"),
        ('{"_id": "a", "text": {"nested": 1}}\n', 1, "must be a string"),
    ],
)
def test_corpus_errors(tmp_path: Path, content: str, line: int, needle: str) -> None:
    path = write(tmp_path / "corpus.jsonl", content)
    err = error_of(read_corpus, path)
    assert_where(err, path, line)
    assert needle in str(err)


def test_missing_field_lists_the_fields_the_line_has(tmp_path: Path) -> None:
    path = write(tmp_path / "corpus.jsonl", '{"id": "b", "title": "t", "text": "y"}\n')
    assert "this line has fields: id, title, text" in str(error_of(read_corpus, path))
    path = write(tmp_path / "queries.jsonl", '{"_id": "q", "query": "y"}\n')
    err = error_of(read_queries, path)
    assert_where(err, path, 1)
    assert "missing text field 'text'; this line has fields: _id, query" in str(err)


def test_non_utf8_line(tmp_path: Path) -> None:
    path = write(tmp_path / "corpus.jsonl", b'{"_id": "a", "text": "x"}\n\n{"_id": "b", "text": "caf\xe9"}\n')
    err = error_of(read_corpus, path)
    assert_where(err, path, 3)
    assert "UTF-8" in str(err) and "0xe9" in str(err)


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n", 3, "found 2"),
        ("q1 0 d1 1\nq1 d2 1\n", 2, "like the lines before"),
        ("q1\td1\t1\nq1\td2\t1\textra\tcol\n", 2, "found 5"),
        ("q1\td1\t1\nq1\td2\thigh\n", 2, "relevance must be an integer, found 'high'"),
        ("q1\td1\t1\nq1\td2\t1.5\n", 2, "relevance must be an integer, found '1.5'"),
        ("q1\td1\t1\nq1\td1\t2\n", 2, "judged twice"),
    ],
)
def test_qrels_errors(tmp_path: Path, content: str, line: int, needle: str) -> None:
    path = write(tmp_path / "test.tsv", content)
    err = error_of(read_qrels, path)
    assert_where(err, path, line)
    assert needle in str(err)


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0\n", 2, "expected 6 columns"),
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 high t\n", 2, "score must be a number, found 'high'"),
        ("q1 Q0 d1 1 nan t\n", 1, "score must be a number"),
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n", 2, "appears twice"),
    ],
)
def test_run_errors(tmp_path: Path, content: str, line: int, needle: str) -> None:
    path = write(tmp_path / "run.trec", content)
    err = error_of(read_run, path)
    assert_where(err, path, line)
    assert needle in str(err)


def test_empty_files(tmp_path: Path) -> None:
    corpus = write(tmp_path / "corpus.jsonl", "\n\n")
    err = error_of(read_corpus, corpus)
    assert f"no documents found in {corpus}" in str(err)
    queries = write(tmp_path / "queries.jsonl", "")
    assert "no queries found in" in str(error_of(read_queries, queries))
    qrels = write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\n")
    assert "no judgments found in" in str(error_of(read_qrels, qrels))
    assert read_run(write(tmp_path / "run.trec", "")) == {}


def test_missing_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for call in (read_corpus, read_queries, read_qrels, corpus_path, source_sha256):
        err = error_of(call, missing)
        assert str(err).startswith(f"{missing}: no such file or directory; expected a BEIR folder")
    assert "expected a BEIR folder, a .jsonl/.tsv file or irds:<id>" in str(error_of(read_corpus, missing))
    assert "no such file" in str(error_of(read_run, missing))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert "not a BEIR folder: no corpus.jsonl" in str(error_of(read_corpus, empty_dir))


def test_missing_split_lists_splits(tmp_path: Path) -> None:
    err = error_of(read_qrels, TINY, "dev")
    assert "no qrels for split 'dev'; splits available: test" in str(err)
    assert str(TINY) in str(err)
    assert "splits available: test" in str(error_of(read_queries, TINY, split="dev"))
    with pytest.raises(ConfigError, match="BEIR folders only"):
        read_queries(TINY / "queries.jsonl", split="test")


# --- ir-datasets, through a local stand-in --------------------------------------------------------------


class GenericDoc(NamedTuple):
    doc_id: str
    text: str

    def default_text(self) -> str:
        return self.text


class TitleDoc(NamedTuple):
    doc_id: str
    text: str
    title: str


class GenericQuery(NamedTuple):
    query_id: str
    text: str


class TrecQrel(NamedTuple):
    query_id: str
    doc_id: str
    relevance: int
    iteration: str


class FakeDataset:
    def __init__(self, docs: list[Any]) -> None:
        self.docs = docs

    def docs_iter(self) -> Iterator[Any]:
        return iter(self.docs)

    def queries_iter(self) -> Iterator[GenericQuery]:
        return iter([GenericQuery("1", "what is a cat"), GenericQuery("2", "solar")])

    def qrels_iter(self) -> Iterator[TrecQrel]:
        return iter([TrecQrel("1", "d1", 2, "0"), TrecQrel("1", "d2", 0, "0"), TrecQrel("2", "007", 1, "0")])


@pytest.fixture
def fake_irds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    loaded: list[str] = []
    datasets = {
        "beir/fake/test": FakeDataset([TitleDoc("d1", "Cats purr.", "Cats"), TitleDoc("007", "Sun.", "")]),
        "plain": FakeDataset([GenericDoc("d1", "No title field at all.")]),
        "empty": FakeDataset([]),
    }

    def load(name: str) -> FakeDataset:
        loaded.append(name)
        if name not in datasets:
            raise KeyError(f"{name} not found")
        return datasets[name]

    module = types.ModuleType("ir_datasets")
    module.load = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ir_datasets", module)
    return loaded


def test_irds_adapter(fake_irds: list[str]) -> None:
    source = "irds:beir/fake/test"
    assert list(read_corpus(source)) == [Document("d1", "Cats purr.", "Cats"), Document("007", "Sun.", "")]
    assert fake_irds == ["beir/fake/test"]
    assert list(read_corpus("irds:plain")) == [Document("d1", "No title field at all.", "")]
    assert read_queries(source) == [Query("1", "what is a cat"), Query("2", "solar")]
    assert read_queries(source, split="ignored") == read_queries(source)
    assert read_qrels(source) == {"1": {"d1": 2, "d2": 0}, "2": {"007": 1}}


def test_irds_errors(fake_irds: list[str]) -> None:
    with pytest.raises(DataError, match="irds:nope: unknown ir-datasets id"):
        read_corpus("irds:nope")
    assert "no documents found in irds:empty" in str(error_of(read_corpus, "irds:empty"))


def test_irds_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ir_datasets", None)  # makes `import ir_datasets` fail
    for call in (read_corpus, read_queries, read_qrels):
        with pytest.raises(ConfigError, match="pip install ir-datasets"):
            call("irds:beir/scifact/test")


def test_an_unknown_irds_id_is_one_line_with_the_fix() -> None:
    pytest.importorskip("ir_datasets")
    for call in (read_corpus, read_queries, read_qrels):
        with pytest.raises(DataError) as err:
            call("irds:beir/scifact/tset")
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith("irds:beir/scifact/tset: unknown ir-datasets id 'beir/scifact/tset'")
        assert "https://ir-datasets.com" in message


OFFLINE_SCRIPT = """
import sys
import requests

def no_network(*args, **kwargs):  # what requests raises when DNS fails, at ir-datasets' download layer
    raise requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='public.ukp.informatik.tu-darmstadt.de', port=443): Max retries exceeded "
        "(Caused by NameResolutionError(\\"Failed to resolve 'public.ukp.informatik.tu-darmstadt.de' ([Errno -2] "
        "Name or service not known)\\"))"
    )

requests.get = no_network
requests.Session.get = no_network
from searchkit.cli.main import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_irds_offline_is_one_line_naming_the_id_and_the_fix(tmp_path: Path, verbose: bool) -> None:
    """A subprocess over an empty IR_DATASETS_HOME (ir-datasets fixes its paths at import), the network cut where
    ir-datasets downloads: one error line, and ir-datasets' own log lines only with -v."""
    import subprocess

    pytest.importorskip("ir_datasets")
    script = tmp_path / "offline.py"
    script.write_text(OFFLINE_SCRIPT)
    home = tmp_path / "irds-home"
    env = {**os.environ, "IR_DATASETS_HOME": str(home), "PYTHONPATH": str(REPO)}
    args = [sys.executable, str(script), *(["-v"] if verbose else []), "index", "build"]
    done = subprocess.run(
        [*args, "--corpus", "irds:beir/scifact/test", "-o", str(tmp_path / "index")],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=300,
    )
    stderr = done.stderr.decode()  # bytes: text mode would turn a progress bar's \r into line ends
    assert done.returncode == 1, stderr
    lines = [line for line in stderr.split("\n") if line.strip() and "\r" not in line]  # \r: ir-datasets' bar
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert errors[0].startswith("error: irds:beir/scifact/test: ir-datasets could not download the docs")
    assert "cannot resolve public.ukp.informatik.tu-darmstadt.de" in errors[0]
    assert f"IR_DATASETS_HOME ({home})" in errors[0] and "where there is network" in errors[0]
    irds_logs = [line for line in lines if line.startswith(("[INFO]", "[WARNING]"))]
    assert bool(irds_logs) == verbose, stderr
    if not verbose:
        assert lines == errors
    assert not (tmp_path / "index").exists()


# --- the real SciFact files -------------------------------------------------------------------------------


@pytest.mark.slow
def test_scifact() -> None:
    scifact = DATASETS / "scifact"
    if not scifact.is_dir():
        pytest.skip(f"{scifact} not found")
    count = 0
    ids = set()
    for doc in read_corpus(scifact):
        count += 1
        ids.add(doc.doc_id)
    assert count == len(ids) == 5183
    qrels = read_qrels(scifact, "test")
    assert len(qrels) == 300
    assert sum(len(judged) for judged in qrels.values()) == 339
    assert all(grade > 0 for judged in qrels.values() for grade in judged.values())
    assert {doc_id for judged in qrels.values() for doc_id in judged} <= ids
    assert len(read_queries(scifact, split="test")) == 300
    train = read_qrels(scifact, "train")
    assert sum(len(judged) for judged in train.values()) == 919
    assert len(read_queries(scifact, split="train")) == 809
