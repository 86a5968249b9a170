"""Fuzz every reader of user files with hypothesis: any bytes give a parse or a one-line SearchkitError naming the
file (and ``file:line`` where a line is known), never another exception type.

A few hundred inputs per reader here; ``-m slow`` runs 10,000 per reader.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from searchkit.config import BM25Config, DenseConfig, TrainConfig, load_index_recipe, load_train_recipe
from searchkit.experiments.suite_file import load_suite
from searchkit.formats import read_corpus, read_qrels, read_queries, read_run
from searchkit.training.data import read_pairs
from searchkit.types import DataError, SearchkitError

DEFAULT_EXAMPLES = 100
SLOW_EXAMPLES = 10_000

# ---------------------------------------------------------------------- inputs
FRAGMENTS = [
    *("{", "}", "[", "]", '"', ":", ",", "\t", " ", "\n", "\r\n", "\r", "\ufeff", "\\", "\\u0000", "\u2028", "\x85"),
    *("null", "true", "false", "0", "1", "-1", "2.5", "1e999", "NaN", "-inf", "07", "Q0", "\x00", "é", "文"),
    *('"_id"', '"text"', '"title"', '"query"', '"doc_id"', '"label"', '"weight"', "_id", "text", "title"),
    *("query-id", "corpus-id", "score", "label", "q1", "d1", "d 1", "../x", "a" * 300),
]
TOML_KEYS = sorted(
    {field.name for config in (BM25Config, DenseConfig, TrainConfig) for field in dataclasses.fields(config)}
    | {"corpus", "output", "bm25", "dense", "fields", "id_field", "title_field", "text_field"}
    | {"name", "dataset", "datasets", "condition", "conditions", "expected", "tolerance", "metrics", "queries"}
    | {"qrels", "index", "split", "retriever", "retrievers", "mode", "fusion", "rerank", "depth", "k", "model"}
)

_fragment_lines = st.lists(
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=10).map("".join), max_size=8
).map("\n".join)
_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=6), st.sampled_from(FRAGMENTS)
)
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
_json_keys = st.one_of(
    st.sampled_from(["_id", "text", "title", "query", "doc_id", "label", "weight"]), st.text(max_size=3)
)
_jsonl = st.lists(st.dictionaries(_json_keys, _json_values, max_size=5), max_size=5).map(
    lambda rows: "\n".join(json.dumps(row) for row in rows)
)
_tsv = st.lists(st.lists(st.sampled_from(FRAGMENTS[18:]), min_size=1, max_size=7).map("\t".join), max_size=6).map(
    "\n".join
)
LINES = st.one_of(
    st.binary(max_size=120),
    _fragment_lines.map(lambda text: text.encode("utf-8", "surrogatepass")),
    _jsonl.map(str.encode),
    _tsv.map(str.encode),
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


_toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["", ".", "..", "../nowhere", "all-MiniLM-L6-v2", "bm25", "hybrid", "rrf", "nDCG@10", "test"]),
)
_toml_values = st.recursive(
    _toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(TOML_KEYS), inner, max_size=4)
    ),
    max_leaves=8,
)
_toml_docs = st.dictionaries(st.one_of(st.sampled_from(TOML_KEYS), st.text(max_size=4)), _toml_values, max_size=6)
TOML = st.one_of(
    st.binary(max_size=100),
    _fragment_lines.map(lambda text: text.encode("utf-8", "surrogatepass")),
    _toml_docs.map(lambda doc: "\n".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items()).encode()),
)


# ---------------------------------------------------------------------- readers
def _consume(result: Any) -> Any:
    return list(result) if isinstance(result, Iterable) and not isinstance(result, dict | str) else result


READERS: dict[str, tuple[Callable[[Path], Any], str, Any]] = {
    "corpus.jsonl": (read_corpus, ".jsonl", LINES),
    "corpus.tsv": (read_corpus, ".tsv", LINES),
    "corpus (sniffed)": (read_corpus, ".data", LINES),
    "queries.jsonl": (read_queries, ".jsonl", LINES),
    "queries.tsv": (read_queries, ".tsv", LINES),
    "qrels": (read_qrels, ".tsv", LINES),
    "TREC run": (read_run, ".trec", LINES),
    "pairs.tsv": (read_pairs, ".tsv", LINES),
    "pairs.jsonl": (read_pairs, ".jsonl", LINES),
    "index recipe": (load_index_recipe, ".toml", TOML),
    "train recipe": (load_train_recipe, ".toml", TOML),
    "suite": (load_suite, ".toml", TOML),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check(name: str, payload: bytes, workdir: Path) -> None:
    reader, suffix, _ = READERS[name]
    path = workdir / f"input{suffix}"
    path.write_bytes(payload)
    try:
        _consume(reader(path))
    except SearchkitError as err:
        message = str(err)
        assert "\n" not in message and "\r" not in message, f"{name}: multi-line message {message!r}"
        assert str(path) in message, f"{name}: the message does not name the file: {message!r}"
        if isinstance(err, DataError) and err.line is not None:
            assert f"{path}:{err.line}: " in message


@pytest.mark.parametrize("name", list(READERS))
@settings(max_examples=DEFAULT_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_readers_never_crash(name: str, data: st.DataObject, workdir: Path) -> None:
    _check(name, data.draw(READERS[name][2]), workdir)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(READERS))
@settings(max_examples=SLOW_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_readers_never_crash_10k(name: str, data: st.DataObject, workdir: Path) -> None:
    _check(name, data.draw(READERS[name][2]), workdir)


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("corpus.jsonl", b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n'),
        ("corpus.tsv", b"a\tone\tcolumn\ttoo\tmany\n"),
        ("queries.jsonl", b'{"_id": 1.5, "text": "x"}\n'),
        ("qrels", b"q1 0 d1 1\nq1 d1 1\n"),
        ("TREC run", b"q1 Q0 d1 1 abc run\n"),
        ("pairs.tsv", b"query\tdoc\tnot-a-label\n"),
        ("index recipe", b'corpus = "x"\noutput = 3\n'),
        ("train recipe", b"epochs = 'two'\noutput = 'o'\n"),
        ("suite", b"[[[broken\n"),
    ],
)
def test_known_bad_inputs_fail_with_one_line_naming_the_file(name: str, payload: bytes, workdir: Path) -> None:
    """Fixed examples (so the checks above are seen to bite): each is refused with a SearchkitError."""
    reader, suffix, _ = READERS[name]
    path = workdir / f"known{suffix}"
    path.write_bytes(payload)
    with pytest.raises(SearchkitError) as caught:
        _consume(reader(path))
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_atheris_readers(tmp_path: Path) -> None:
    """The libFuzzer harness (tests/faults/atheris_readers.py) runs ~10,000 inputs per reader without a crash."""
    import subprocess
    import sys

    pytest.importorskip("atheris")
    runs = 10_000 * len(READERS) + 10_000
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("atheris_readers.py")), f"-atheris_runs={runs}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=3600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Done {runs} " in done.stderr, done.stderr[-1000:]
